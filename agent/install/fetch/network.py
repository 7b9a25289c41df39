"""How installs reach the network: proxies and an extra CA bundle, for every method.

Policy:
- unset settings mean the standard environment variables (``https_proxy``,
  ``http_proxy``, ``no_proxy`` in either case) apply, as they do for curl, pip and npm;
  a setting replaces the variable, for the agent's own downloads and for the pip and
  npm commands it runs alike;
- an extra CA bundle (a corporate TLS-inspecting proxy's root) is *added* to the
  system's trust, never swapped for it: the agent's downloads load it on top of the
  default context; pip, which only takes a whole bundle, gets the system bundle and the
  extra one concatenated; npm gets it through ``NODE_EXTRA_CA_CERTS``, which adds;
- a CA bundle that is missing or holds no certificate is a configuration error named
  at the first install, never a silent fallback to the default trust.
"""

from __future__ import annotations

import base64
import ssl
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.kits import tls
from agent.store import layout


class NetworkError(layout.StoreError):
    """A network setting cannot be used."""


@dataclass(frozen=True)
class Network:
    """Proxy, trust and index settings; ``None`` means: what the environment (or the
    client's own configuration) says."""

    http_proxy: str | None = None
    https_proxy: str | None = None
    no_proxy: str | None = None
    ca_bundle: str | None = None
    pip_index_url: str | None = None
    npm_registry: str | None = None
    pip_indexes: tuple[tuple[str, str], ...] = ()
    """Named indexes (installer.pip_indexes) that a pip step may ask for."""

    def pip_index(self, name: str, path: str) -> str:
        """The URL of the named index, with the step's ``path``."""
        for known, base in self.pip_indexes:
            if known == name:
                return base.rstrip("/") + ("/" + path.strip("/") if path else "")
        raise NetworkError(
            f"this feature installs from the package index named {name!r}, which is not "
            f"configured: set installer.pip_indexes.{name} to that index's base URL (or a "
            "mirror of it)"
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The default trust, plus the extra bundle when one is set (built once per value:
        loading the system bundle costs milliseconds)."""
        return _context(self.ca_bundle)

    def proxy_handler(self) -> urllib.request.ProxyHandler:
        """A handler that sends requests through the configured (or environment) proxies."""
        if self.http_proxy is None and self.https_proxy is None and self.no_proxy is None:
            return urllib.request.ProxyHandler()  # the environment's, no_proxy included
        env = urllib.request.getproxies_environment()
        proxies = {k: v for k, v in env.items() if k in ("http", "https")}
        if self.http_proxy is not None:
            proxies["http"] = self.http_proxy
        if self.https_proxy is not None:
            proxies["https"] = self.https_proxy
        proxies = {k: v for k, v in proxies.items() if v}
        bypass = self.no_proxy if self.no_proxy is not None else env.get("no", "")
        return _Proxies(proxies, bypass)

    def environment(self, folder: Path) -> dict[str, str]:
        """Variables for a pip, npm or script command; may write a bundle into ``folder``."""
        env: dict[str, str] = {}
        for name, value in (
            ("http_proxy", self.http_proxy),
            ("https_proxy", self.https_proxy),
            ("no_proxy", self.no_proxy),
        ):
            if value is not None:
                env[name] = env[name.upper()] = value
        if self.pip_index_url:
            env["PIP_INDEX_URL"] = self.pip_index_url
        if self.npm_registry:
            env["npm_config_registry"] = self.npm_registry
        if self.ca_bundle:
            combined = self.combined_bundle(folder)
            env.update(
                {
                    "PIP_CERT": str(combined),
                    "REQUESTS_CA_BUNDLE": str(combined),
                    "SSL_CERT_FILE": str(combined),
                    "CURL_CA_BUNDLE": str(combined),
                    # A copy beside the combined one: the operator's file may not be
                    # readable to the sandboxed npm, or may sit under a covered /tmp.
                    "NODE_EXTRA_CA_CERTS": str(folder / "extra-ca.pem"),
                }
            )
        return env

    def combined_bundle(self, folder: Path) -> Path:
        """The system's CA bundle with the extra one appended, written into ``folder``."""
        try:
            extra = Path(self.ca_bundle or "").read_bytes()
        except OSError as exc:
            raise NetworkError(
                f"installer.ca_bundle {self.ca_bundle!r} cannot be read ({exc.strerror}); "
                "give a readable PEM file"
            ) from exc
        if b"-----BEGIN CERTIFICATE-----" not in extra:
            raise NetworkError(
                f"installer.ca_bundle {self.ca_bundle!r} holds no PEM certificate "
                "('-----BEGIN CERTIFICATE-----'); give the CA certificates in PEM form"
            )
        paths = ssl.get_default_verify_paths()
        system: bytes | None = None
        for candidate in (paths.cafile, paths.openssl_cafile):
            if candidate and Path(candidate).is_file():
                system = Path(candidate).read_bytes()
                break
        if system is None:
            # Writing the extra CA alone would swap the system's trust for it.
            raise NetworkError(
                "no system CA bundle file was found to add installer.ca_bundle to; set "
                "SSL_CERT_FILE to the system's bundle (e.g. /etc/ssl/certs/ca-certificates.crt)"
            )
        (folder / "extra-ca.pem").write_bytes(extra)
        out = folder / "ca-bundle.pem"
        out.write_bytes(system.rstrip(b"\n") + b"\n" + extra)
        return out


class _Proxies(urllib.request.ProxyHandler):
    """Explicit proxies with an explicit bypass list (urllib's own reads only the env)."""

    def __init__(self, proxies: dict[str, str], bypass: str) -> None:
        super().__init__(proxies)
        self._bypass = bypass

    def proxy_open(self, req: Any, proxy: str, type: str) -> Any:
        host = req.host
        # proxy_bypass_environment is urllib's own no_proxy matcher (undeclared in stubs).
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if host and self._bypass and bypass(host, {"no": self._bypass}):
            return None
        # urllib's own proxy_open, minus its second look at the environment's no_proxy:
        # the setting replaces that variable, it does not add to it.
        original = req.type
        scheme, user, password, hostport = urllib.request._parse_proxy(proxy)  # type: ignore[attr-defined]
        if user and password:
            credentials = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
            token = base64.b64encode(credentials.encode()).decode("ascii")
            req.add_header("Proxy-authorization", "Basic " + token)
        req.set_proxy(urllib.parse.unquote(hostport), scheme or original)
        if original == (scheme or original) or original == "https":
            return None
        return self.parent.open(req, timeout=req.timeout)


def _context(ca_bundle: str | None) -> ssl.SSLContext:
    try:
        return tls.context(ca_bundle)
    except tls.TrustError as exc:
        raise NetworkError(
            f"installer.ca_bundle {ca_bundle!r} cannot be loaded ({exc}); give a readable "
            "PEM file holding the extra CA certificates"
        ) from exc
