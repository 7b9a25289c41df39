"""Credentials for mirrors that demand them: a netrc file, or a header read from a file.

Enterprises reach upstreams through an Artifactory or Nexus remote that wants a login
or a token. The agent takes them three ways, most specific first:

- ``user:password@`` (or ``token@``) in the mirror's URL, sent as Basic auth
  (:func:`agent.install.fetch.transport.request`);
- a header file per URL prefix (``installer.mirror_headers``): the file holds one line
  ``Name: value`` (``Authorization: Bearer ...``, ``X-JFrog-Art-Api: ...``), sent with
  every request whose URL (after the mirror rewrite) starts with the prefix, the
  longest prefix winning;
- a netrc file (``installer.netrc``): ``machine <host> login <user> password <secret>``,
  sent as Basic auth to that host, as curl and pip do (a ``default`` entry too).

Policy: a file is read when a request needs it, so a rotated Kubernetes secret takes
effect without a restart, and is followed through links (secret volumes are links into
``..data/``): it is the operator's configuration, never the shared store. At most
64 KiB is read. Nothing read from a file reaches a log, an error or a receipt: an error
names the file and what is wrong with it, never its content. Credentials are sent as
unredirected headers, so a redirect to another origin never carries them.
"""

from __future__ import annotations

import base64
import netrc
import os
import re
import stat
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

_MAX_BYTES = 64 * 1024
_TOKEN = re.compile(r"(?a:[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64})")  # RFC 9110 field name
# Headers the transfer itself sets or depends on: a credentials file has no business with
# them (Accept-Encoding: gzip would fail every checksum).
_NOT_OURS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "keep-alive",
        "accept-encoding",
        "user-agent",
        "range",
        "expect",
        "proxy-authorization",
        "proxy-connection",
    }
)


class CredentialError(Exception):
    """A credentials file cannot be used; the message names the file, never its content."""


@dataclass(frozen=True)
class Credentials:
    """Where credentials come from: header files by URL prefix, and a netrc file."""

    headers: tuple[tuple[str, Path], ...] = ()
    netrc: Path | None = None

    def __bool__(self) -> bool:
        return bool(self.headers) or self.netrc is not None

    def for_url(self, url: str) -> dict[str, str]:
        """The headers to send with a request for ``url`` (which has no userinfo).
        Raises :class:`CredentialError`."""
        # A prefix ends at a "/" (the settings require it): "https://mirror.corp" must not
        # match "https://mirror.corp.evil.example/".
        matching = [(p, f) for p, f in self.headers if url.startswith(p) and p.endswith("/")]
        if matching:
            _, file = max(matching, key=lambda pf: len(pf[0]))
            name, value = header_from(file)
            return {name: value}
        if self.netrc is not None:
            host = urllib.parse.urlsplit(url).hostname
            found = basic_from_netrc(self.netrc, host) if host else None
            if found is not None:
                return {"Authorization": found}
        return {}


def _read(file: Path, what: str) -> str:
    try:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise CredentialError(
            f"the {what} {str(file)!a} cannot be read ({exc.strerror}): mount it, or fix "
            "the setting"
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO would block the reparse
            raise CredentialError(f"the {what} {str(file)!a} is not a regular file")
        data = os.read(fd, _MAX_BYTES + 1)
    except OSError as exc:  # a folder
        raise CredentialError(
            f"the {what} {str(file)!a} cannot be read ({exc.strerror}): give a regular file"
        ) from None
    finally:
        os.close(fd)
    if len(data) > _MAX_BYTES:
        raise CredentialError(f"the {what} {str(file)!a} is over {_MAX_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise CredentialError(f"the {what} {str(file)!a} is not UTF-8 text") from None


def header_from(file: Path) -> tuple[str, str]:
    """The one ``Name: value`` header line that ``file`` holds (a trailing newline is
    fine). Raises :class:`CredentialError`."""
    text = _read(file, "header file").removesuffix("\n").removesuffix("\r")
    name, colon, value = text.partition(":")
    value = value.strip(" \t")
    # A newline inside would add a header (or a body) of its own: request smuggling.
    if (
        not colon
        or not _TOKEN.fullmatch(name)
        or name.lower() in _NOT_OURS
        or not value
        or not all(c == "\t" or " " <= c <= "~" for c in value)  # visible ASCII
    ):
        raise CredentialError(
            f"the header file {str(file)!a} does not hold one header line: expected "
            "'Name: value' on one line (e.g. 'Authorization: Bearer <token>'); its "
            "content is not shown"
        )
    return name, value


def basic_from_netrc(file: Path, host: str) -> str | None:
    """The Basic ``Authorization`` value for ``host`` from the netrc ``file`` (its
    ``default`` entry where no machine matches); None where it has neither. Raises
    :class:`CredentialError`."""
    _read(file, "netrc file")  # bounded, and a clear error for a missing file
    try:
        parsed = netrc.netrc(str(file))
    except netrc.NetrcParseError as exc:
        # Its message quotes the token it choked on, which may be a password.
        raise CredentialError(
            f"the netrc file {str(file)!a} is not netrc syntax near line {exc.lineno}: "
            "expected 'machine <host> login <user> password <secret>' entries"
        ) from None
    except OSError as exc:
        raise CredentialError(f"the netrc file {str(file)!a} cannot be read") from exc
    entry = parsed.authenticators(host.lower())
    if entry is None:
        return None
    login, _, password = entry
    pair = f"{login}:{password or ''}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")
