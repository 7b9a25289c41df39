"""Where the pod's own API server, namespace, name and credentials are: from the
``kubernetes`` settings first, else from what Kubernetes gives every pod.

Policy:
- the API server is ``kubernetes.api_url``, else
  ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` (an IPv6 host
  bracketed), as client-go's in-cluster configuration finds it;
- the namespace is ``kubernetes.namespace``, else the ServiceAccount's namespace file,
  else ``$POD_NAMESPACE``; the pod's name ``kubernetes.pod_name``, else ``$POD_NAME``,
  else ``$HOSTNAME``; names found there are checked as the settings' are;
- the token and the CA are read at every request (blocking: callers run
  :func:`resolve` in a thread), so a rotated projected token applies at once; the token
  is read non-blocking, regular files only, at most :data:`MAX_TOKEN_BYTES`;
- every failure is :class:`~agent.kube.errors.NotConfigured`, naming the setting or
  variable to set; the token's content never reaches a message.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import kubernetes as kube_config
from agent.kits import secretfiles, tls
from agent.kube import errors

MAX_TOKEN_BYTES = 16 * 1024
"""A projected token is a JWT of 1-2 KB; a bound so a wrong file costs nothing."""
NAMESPACE_FILE = kube_config.SERVICE_ACCOUNT / "namespace"


@dataclass(frozen=True)
class Place:
    """Which pod, on which API server."""

    api_url: str
    namespace: str
    pod: str

    @property
    def path(self) -> str:
        """The pod's path on the API."""
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}"

    def describe(self) -> str:
        """The pod for a message: ``namespace/name on URL``."""
        return f"pod {self.namespace}/{self.pod} on {self.api_url}"


@dataclass(frozen=True)
class Target:
    """A :class:`Place` and what a request there needs: the token, the trust."""

    place: Place
    token: str = field(repr=False)
    ssl: ssl.SSLContext = field(repr=False)


def api_url(settings: kube_config.KubernetesSettings, environ: Mapping[str, str]) -> str:
    """The API server's base URL (see the module)."""
    if settings.api_url is not None:
        return settings.api_url
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = environ.get("KUBERNETES_SERVICE_PORT", "").strip()
    if not host or not port:
        pairs = (("KUBERNETES_SERVICE_HOST", host), ("KUBERNETES_SERVICE_PORT", port))
        missing = " and ".join(name for name, value in pairs if not value)
        raise errors.NotConfigured(
            f"kubernetes.annotate_pod is on, but kubernetes.api_url is unset and {missing} "
            "is not in the environment: the agent does not run in a pod. Set "
            "kubernetes.api_url, or kubernetes.annotate_pod: false"
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    try:
        return kube_config.check_api_url(f"https://{host}:{port}")
    except ValueError as exc:
        raise errors.NotConfigured(
            f"KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT do not form an API URL: {exc}"
        ) from None


def _namespace(
    settings: kube_config.KubernetesSettings, environ: Mapping[str, str], namespace_file: Path
) -> str:
    if settings.namespace is not None:
        return settings.namespace
    try:
        found = namespace_file.read_text(errors="replace").strip()[: kube_config.LABEL_MAX + 1]
        source = str(namespace_file)
    except OSError:
        found, source = environ.get("POD_NAMESPACE", "").strip(), "POD_NAMESPACE"
    if not found:
        raise errors.NotConfigured(
            f"kubernetes.annotate_pod is on, but the pod's namespace is unknown: "
            f"kubernetes.namespace is unset, {namespace_file} cannot be read (is the "
            "ServiceAccount token mounted?) and POD_NAMESPACE is not in the environment. "
            "Set kubernetes.namespace, or POD_NAMESPACE from the downward API "
            "(fieldRef metadata.namespace)"
        )
    try:
        return kube_config.check_label(found, f"a namespace (from {source})")
    except ValueError as exc:
        raise errors.NotConfigured(f"{exc}; set kubernetes.namespace") from None


def _pod(settings: kube_config.KubernetesSettings, environ: Mapping[str, str]) -> str:
    if settings.pod_name is not None:
        return settings.pod_name
    for source in ("POD_NAME", "HOSTNAME"):
        found = environ.get(source, "").strip()
        if found:
            try:
                return kube_config.check_subdomain(found, f"a pod name (from {source})")
            except ValueError as exc:
                raise errors.NotConfigured(
                    f"{exc}; set POD_NAME from the downward API (fieldRef metadata.name), "
                    "or kubernetes.pod_name"
                ) from None
    raise errors.NotConfigured(
        "kubernetes.annotate_pod is on, but the pod's name is unknown: kubernetes.pod_name "
        "is unset and neither POD_NAME nor HOSTNAME is in the environment. Set POD_NAME "
        "from the downward API (fieldRef metadata.name)"
    )


def place(
    settings: kube_config.KubernetesSettings,
    environ: Mapping[str, str],
    *,
    namespace_file: Path = NAMESPACE_FILE,
) -> Place:
    """Which pod on which API server (blocking: it may read the namespace file)."""
    url = api_url(settings, environ)
    return Place(url, _namespace(settings, environ, namespace_file), _pod(settings, environ))


def resolve(
    settings: kube_config.KubernetesSettings,
    environ: Mapping[str, str],
    *,
    namespace_file: Path = NAMESPACE_FILE,
) -> Target:
    """The :class:`Place`, the token read now and the trust (blocking: run it in a
    thread); :class:`~agent.kube.errors.NotConfigured` naming what to set."""
    where = place(settings, environ, namespace_file=namespace_file)
    try:
        token = secretfiles.read(
            settings.token_file, "kubernetes.token_file", limit=MAX_TOKEN_BYTES, single_line=True
        )
    except secretfiles.SecretFileError as exc:
        raise errors.NotConfigured(
            f"{exc} (the pod's ServiceAccount token: is automountServiceAccountToken off?)"
        ) from None
    try:
        trust = tls.context(str(settings.ca_file))
    except tls.TrustError as exc:
        raise errors.NotConfigured(
            f"kubernetes.ca_file {settings.ca_file} cannot be loaded ({exc}); it is the "
            "CA the API server's certificate chains to"
        ) from None
    return Target(where, token.decode(), trust)
