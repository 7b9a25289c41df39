"""A minimal client of the Kubernetes API: a JSON merge patch of the agent's own pod.

Policy:
- one ``aiohttp`` session for the client's life (its owner closes it), no proxy (the API
  server is the cluster's own; ``trust_env`` stays off, so neither the environment's
  proxies nor ~/.netrc apply); every request has ``kubernetes.request_timeout_seconds``
  unless the caller gives a shorter bound;
- where to go, as whom, and whom to trust are resolved at every request, in a thread
  (:mod:`~agent.kube.incluster`): a rotated token or a reload applies at once;
- one attempt per call: the caller decides what to retry (:attr:`KubeError.transient
  <agent.kube.errors.KubeError.transient>`); redirects are never followed (the token
  stays with the API server), answers are read up to :data:`MAX_ANSWER_BYTES`;
- each status maps to an error class of :mod:`~agent.kube.errors` whose message says
  what to fix, with the API server's own ``Status.message`` (clipped); no message holds
  the token.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from agent.config import kubernetes as kube_config
from agent.kube import errors, incluster

MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""A pod object is tens of KB; its annotations may hold 256 KiB at most."""
MERGE_PATCH = "application/merge-patch+json"
RETRY_AFTER_MAX = 30.0
"""The longest Retry-After honoured, in seconds (a newer change replaces it anyway)."""
_SAID_MAX = 300


def _said(raw: bytes) -> str:
    """The ``message`` of a Kubernetes ``Status`` answer, clipped; empty if none."""
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return ""
    said = data.get("message") if isinstance(data, dict) else None
    return f": {said[:_SAID_MAX]}" if isinstance(said, str) and said else ""


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "").strip()
    return min(float(value), RETRY_AFTER_MAX) if value.isdigit() else None


class Client:
    """The pod's own API server; build one per owner, close it when done."""

    def __init__(
        self,
        settings: Callable[[], kube_config.KubernetesSettings],
        *,
        environ: Mapping[str, str] | None = None,
        namespace_file: Path = incluster.NAMESPACE_FILE,
    ) -> None:
        self._settings = settings
        self._environ = os.environ if environ is None else environ
        self._namespace_file = namespace_file
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.requests = 0
        """Requests sent (tests count them)."""

    async def target(self) -> incluster.Target:
        """Where, as whom, trusting what (read now, in a thread: files and the CA)."""
        return await asyncio.to_thread(
            incluster.resolve,
            self._settings(),
            self._environ,
            namespace_file=self._namespace_file,
        )

    def _session_for_use(self) -> aiohttp.ClientSession:
        if self._closed:
            raise errors.Unavailable("the agent is stopping: no more Kubernetes requests")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        """Close the session for good."""
        self._closed = True
        if self._session is not None:
            await self._session.close()

    async def patch_pod(
        self,
        patch: Mapping[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Apply ``patch`` (a JSON merge patch, RFC 7386) to the agent's own pod, once;
        the updated pod. ``timeout`` bounds the request below the configured one."""
        target = await self.target()
        where = target.place
        limit = self._settings().request_timeout_seconds
        if timeout is not None:
            limit = min(limit, timeout)
        headers = {
            "Authorization": f"Bearer {target.token}",
            "Content-Type": MERGE_PATCH,
            "Accept": "application/json",
            "User-Agent": "runner-agent",
        }
        shown = f"PATCH {where.path}"
        self.requests += 1
        try:
            async with self._session_for_use().patch(
                where.api_url + where.path,
                data=json.dumps(patch).encode(),
                headers=headers,
                ssl=target.ssl,
                timeout=aiohttp.ClientTimeout(total=limit),
                allow_redirects=False,
            ) as resp:
                raw = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise errors.BadAnswer(
                            f"{shown} answered more than {MAX_ANSWER_BYTES} bytes; is "
                            "kubernetes.api_url the API server?"
                        )
                status, answer_headers = resp.status, resp.headers
        except TimeoutError:
            raise errors.Unavailable(
                f"{shown}: no answer from {where.api_url} within {limit:.0f} s"
            ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            reason = getattr(exc.certificate_error, "verify_message", "") or "not trusted"
            raise errors.Untrusted(
                f"{shown}: the certificate of {where.api_url} does not chain to "
                f"kubernetes.ca_file {self._settings().ca_file} ({reason}); point it at "
                "the cluster's CA (the ServiceAccount's ca.crt)"
            ) from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise errors.Untrusted(
                f"{shown}: TLS with {where.api_url} failed ({type(exc).__name__}); check "
                "kubernetes.api_url and kubernetes.ca_file"
            ) from None
        except aiohttp.ClientError as exc:
            # Not str(exc) alone: keep the message to what names the failure.
            raise errors.Unavailable(
                f"{shown}: cannot reach {where.api_url} ({type(exc).__name__})"
            ) from None
        if 200 <= status < 300:
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError):
                data = None
            if not isinstance(data, dict):
                raise errors.BadAnswer(
                    f"{shown} answered {status} without a pod object; is kubernetes.api_url "
                    "the API server?"
                )
            return data
        raise _failure(shown, where, status, bytes(raw), answer_headers)


def _failure(
    shown: str,
    where: incluster.Place,
    status: int,
    raw: bytes,
    headers: Mapping[str, str],
) -> errors.KubeError:
    said = _said(raw)
    if 300 <= status < 400:
        return errors.BadAnswer(
            f"{shown} answered a redirect ({status}), which is not followed (the token "
            "stays with the API server); is kubernetes.api_url the API server?"
        )
    if status == 401:
        return errors.Unauthorized(
            f"{shown}: the API server refused the token (401){said}; check "
            "kubernetes.token_file (the pod's ServiceAccount token) and kubernetes.api_url"
        )
    if status == 403:
        return errors.Forbidden(
            f"{shown} is forbidden (403){said}; grant the pod's ServiceAccount the verb "
            f"patch on pods in namespace {where.namespace} (a Role and RoleBinding; with "
            "the chart, annotatePod.enabled and its Role <release>-annotate-pod), or set "
            "kubernetes.annotate_pod: false"
        )
    if status == 404:
        return errors.NotFound(
            f"{shown}: no {where.describe()} (404){said}; set POD_NAME (downward API "
            "fieldRef metadata.name) or kubernetes.pod_name, and the namespace, to this "
            "pod's own"
        )
    if status in (409, 429) or status >= 500:
        return errors.Unavailable(
            f"{shown} answered {status}{said}", retry_after=_retry_after(headers)
        )
    if status == 422:
        return errors.Invalid(
            f"{shown} was refused as invalid (422){said}; check kubernetes.annotation_prefix"
        )
    return errors.Invalid(f"{shown} answered {status}{said}")
