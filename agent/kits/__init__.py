"""Ground-level kits: asyncio task guards, logging setup, signals, the step executor
(:mod:`~agent.kits.procs`) and the one clean environment of the commands the agent runs
(:mod:`~agent.kits.environ`), install progress (:mod:`~agent.kits.progress`), backoff,
and the collector's pause at startup (:mod:`~agent.kits.gcpause`).

Nothing here knows about runner-agent's concerns; everything above may use it. Standard
library only (an import-linter contract), so the job hook, which runs on the runner's
own Python, may reuse it.
"""
