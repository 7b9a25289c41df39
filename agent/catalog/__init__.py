"""The feature catalog engine: manifests, requests, team configuration and resolution.

Policy: everything here is pure and deterministic. It reads manifest files when asked to
load a catalog, and otherwise touches no disk, network or process state; the target
platform is always an input. Executing a plan and caching its result are the install
and store engines' business.
"""
