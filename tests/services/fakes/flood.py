"""Writes numbered lines to stdout as fast as it can, forever."""

import sys

out = sys.stdout
n = 0
while True:
    out.write("".join(f"flood line {n + i} from {sys.argv[1]}\n" for i in range(1000)))
    n += 1000
