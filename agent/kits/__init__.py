"""Ground-level kits: asyncio task guards and logging setup.

Nothing here knows about runner-agent's concerns; everything above may use it.
"""
