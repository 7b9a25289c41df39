"""``python -m agent`` is the same as the ``runner-agent`` console script."""

from agent import cli

raise SystemExit(cli.main())
