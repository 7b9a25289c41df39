"""``python -m agent.hook``: the hook's entry point (the zipapp runs the same)."""

from __future__ import annotations

import sys

from agent.hook import main

if __name__ == "__main__":
    sys.exit(main.main())
