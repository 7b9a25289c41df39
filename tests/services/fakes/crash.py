"""Exits at once with code 3: a crash loop."""

import sys

print(f"crashing on purpose in {sys.argv[1]}", flush=True)
sys.exit(3)
