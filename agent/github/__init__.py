"""The GitHub engine: credentials, the REST client, and what the agent reads from GitHub
(the team config at a job's commit; later the job's labels and webhooks).

It sits beside the other engines: it imports config, kits and aiohttp's client, never
HTTP's server side, the daemon, the catalog or the install engine.
"""
