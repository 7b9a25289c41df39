"""The ``kubernetes`` settings: whether the agent annotates its own pod with the running
job, and how it reaches the Kubernetes API to do so.

Policy:
- off by default: an agent outside Kubernetes (or a pod whose ServiceAccount may not
  patch pods) makes no Kubernetes request;
- everything else defaults to what a pod has anyway: the API server from
  ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``, the ServiceAccount's token,
  CA and namespace files, the pod's name from ``POD_NAME`` (the downward API) or its
  hostname. Unset here means "found there when a patch is sent", so a reload or a
  rotated token applies without a restart;
- ``api_url`` is https only (the ServiceAccount token must not cross the network in the
  clear), except a loopback address, for tests and local stubs;
- names are checked as Kubernetes checks them (a namespace is a DNS-1123 label, a pod's
  name a DNS-1123 subdomain, the annotation prefix a subdomain and a slash), so a typo is
  refused at load rather than answered 404 or 422 at the first job.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from agent.config.fields import RESTART, AbsolutePath, Seconds, Section

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where the kubelet mounts a pod's ServiceAccount token, CA and namespace."""

LABEL_MAX = 63
SUBDOMAIN_MAX = 253
_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def check_label(value: str, what: str = "a namespace") -> str:
    """``value`` if it is a DNS-1123 label (a namespace's form), else ``ValueError``."""
    if len(value) > LABEL_MAX or not _LABEL_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not {what}: expected a DNS-1123 label, at most {LABEL_MAX} "
            "lower-case letters, digits and '-', starting and ending with a letter or "
            "digit (e.g. arc-runners)"
        )
    return value


def check_subdomain(
    value: str, what: str = "a pod name", example: str = "runner-set-abc12-runner-x7k2p"
) -> str:
    """``value`` if it is a DNS-1123 subdomain (a pod name's form), else ``ValueError``."""
    if len(value) > SUBDOMAIN_MAX or not all(
        _LABEL_RE.fullmatch(part) for part in value.split(".")
    ):
        raise ValueError(
            f"{value!r} is not {what}: expected a DNS-1123 subdomain, at most "
            f"{SUBDOMAIN_MAX} characters of dot-separated lower-case labels (letters, "
            f"digits, '-'), e.g. {example}"
        )
    return value


def _check_prefix(value: str) -> str:
    domain, slash, rest = value.rpartition("/")
    if slash != "/" or rest or not domain:
        raise ValueError(
            f"{value!r} is not an annotation key prefix: expected a DNS subdomain and a "
            "slash, e.g. runner-agent/ or runner-agent.example.com/"
        )
    check_subdomain(domain, "an annotation key prefix's domain", "runner-agent.example.com")
    return value


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_api_url(value: str) -> str:
    """``value`` without its trailing slash if it is an API server's URL (https, or http
    on a loopback address), else ``ValueError``."""
    parsed = urllib.parse.urlsplit(value)
    expected = "expected https://HOST[:PORT], the API server (unset: the pod's own)"
    if not parsed.hostname or parsed.query or parsed.fragment or " " in value:
        raise ValueError(f"{value!r} is not an API server URL; {expected}")
    if parsed.scheme != "https" and not (parsed.scheme == "http" and _loopback(parsed.hostname)):
        raise ValueError(
            f"{value!r}: the ServiceAccount token would cross the network in the clear; "
            f"{expected} (http:// only for a loopback address)"
        )
    return value.rstrip("/")


ApiURL = Annotated[str, AfterValidator(check_api_url)]
Namespace = Annotated[str, AfterValidator(check_label)]
PodName = Annotated[str, AfterValidator(check_subdomain)]
Prefix = Annotated[str, AfterValidator(_check_prefix)]


class KubernetesSettings(Section):
    """The Kubernetes API, for the agent's annotations on its own pod."""

    annotate_pod: bool = Field(
        default=False,
        description=(
            "While a job runs, annotate this agent's own pod with it (repository, "
            "workflow, run id and attempt, job, runner, under annotation_prefix), and "
            "remove them when it ends, so kubectl and cluster tooling show which job a "
            "pod serves. Needs patch on pods for the pod's ServiceAccount. A failing API "
            "never fails or delays a job. Ignored with server.role services (the sidecar "
            "agent annotates the pod). Default false."
        ),
        json_schema_extra=RESTART,
    )
    api_url: ApiURL | None = Field(
        default=None,
        description=(
            "The API server's base URL, https only (http:// for a loopback address). "
            "Default none: the pod's own, https://$KUBERNETES_SERVICE_HOST:"
            "$KUBERNETES_SERVICE_PORT."
        ),
    )
    token_file: AbsolutePath = Field(
        default=SERVICE_ACCOUNT / "token",
        description=(
            "File holding the bearer token, re-read at every request (projected "
            "ServiceAccount tokens rotate). Default "
            "/var/run/secrets/kubernetes.io/serviceaccount/token."
        ),
    )
    ca_file: AbsolutePath = Field(
        default=SERVICE_ACCOUNT / "ca.crt",
        description=(
            "CA bundle (PEM) the API server's certificate must chain to, in addition to "
            "the system's CAs. Default /var/run/secrets/kubernetes.io/serviceaccount/ca.crt."
        ),
    )
    namespace: Namespace | None = Field(
        default=None,
        description=(
            "The pod's namespace. Default none: read from "
            "/var/run/secrets/kubernetes.io/serviceaccount/namespace, else $POD_NAMESPACE."
        ),
    )
    pod_name: PodName | None = Field(
        default=None,
        description=(
            "The pod's name. Default none: $POD_NAME (set it from the downward API, "
            "metadata.name), else $HOSTNAME (a pod's hostname is its name unless "
            "spec.hostname is set)."
        ),
    )
    annotation_prefix: Prefix = Field(
        default="runner-agent/",
        description=(
            "Prefix of every annotation key the agent writes, a DNS subdomain and a slash "
            "(keys such as runner-agent/repository). A changed prefix removes the old "
            "keys at the next update. Default runner-agent/."
        ),
    )
    request_timeout_seconds: Seconds = Field(
        default=10.0,
        ge=1,
        le=120,
        description=(
            "Longest wait for one request to the API server, in seconds. Default 10 s. "
            "Range 1-120 s: a job never waits on it; past it the request is retried."
        ),
    )
    max_attempts: int = Field(
        default=6,
        ge=1,
        le=20,
        description=(
            "Attempts to apply one change through 5xx answers, 429, timeouts and "
            "connection failures, with random exponential backoff (at most 30 s apart). "
            "A newer change replaces it at once. Range 1-20. Default 6 (waits of about 30 s "
            "in all at most)."
        ),
    )
