"""Ignores SIGTERM and sleeps: only SIGKILL ends it."""

import signal
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"ignoring SIGTERM in {sys.argv[1]}", flush=True)
while True:
    time.sleep(3600)
