"""Forks a grandchild that sleeps forever and writes its pid to WORKDIR/grandchild.pid.

With ``exit`` as the second argument the parent exits right after the fork, leaving the
grandchild behind in its process group; otherwise the parent sleeps too.
"""

import os
import sys
import time

workdir = sys.argv[1]
pid = os.fork()
if pid == 0:
    while True:
        time.sleep(3600)
with open(os.path.join(workdir, "grandchild.pid.tmp"), "w") as f:
    f.write(str(pid))
os.rename(os.path.join(workdir, "grandchild.pid.tmp"), os.path.join(workdir, "grandchild.pid"))
print(f"forked grandchild {pid}", flush=True)
if sys.argv[2:] == ["exit"]:
    sys.exit(0)
while True:
    time.sleep(3600)
