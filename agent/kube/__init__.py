"""The Kubernetes engine: the agent's own pod, as the Kubernetes API sees it.

Today: the pod annotator (:mod:`~agent.kube.annotator`), which keeps the running job's
identity on the pod, through a minimal client of the API (:mod:`~agent.kube.client`)
that reaches the pod's own API server with its ServiceAccount
(:mod:`~agent.kube.incluster`). It sits beside the other engines: config, kits and
aiohttp's client, never HTTP's server side, the daemon, the jobs engine (it watches jobs
through the jobs engine's own protocol), installs, the catalog or the store.
"""
