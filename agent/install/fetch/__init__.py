"""Fetching what installs need: the content-addressed download cache with its retries
(:mod:`~agent.install.fetch.downloads`), one HTTP exchange with its policy
(:mod:`~agent.install.fetch.transport`), proxies, trust and package indexes
(:mod:`~agent.install.fetch.network`), and safe archive extraction
(:mod:`~agent.install.fetch.extracting`). Blocking: callers run it off the loop.
"""
