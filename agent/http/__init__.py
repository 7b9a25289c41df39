"""The HTTP face of the agent: the probe/metrics listener and the API listeners.

Policy:
- the probe listener (/healthz, /readyz, /metrics) is read-only and unauthenticated, as
  the kubelet and Prometheus expect;
- the API (/v1/..., /openapi.json) listens on a unix socket (mode 0660) and optionally
  on TCP; each endpoint has a scope, ``job`` or ``admin``, each scope its own token;
- every body in and out is a pydantic model, and /openapi.json is generated from them;
- every error is JSON ``{"error": {"code", "message", "details"}}`` with the right
  status, and never carries a stack trace.
"""
