"""Credentials in URLs, hidden from what people read.

Policy: a URL's userinfo (``user:password@``) never reaches a log, an error message, a
receipt, an install log or ``config show`` as it was written; only the URL actually sent
keeps it. ``user:password@`` becomes ``user:***@``: the user name says which account,
the password goes. A userinfo without a colon is kept for other schemes (``ssh://git@``,
``ftp://anonymous@``) but hidden whole for http(s) (``https://***@host/``): there a bare
user name is almost always a token (GitHub's ``https://ghp_...@``, a registry's).

The userinfo runs to the *last* ``@`` before the path: a password may hold an unencoded
``@`` (``user:p@ss@host``), and it then belongs to the password, as it does for urllib.
Whitespace, ``"``, ``<``, ``>`` and a backslash, which a URL cannot hold unencoded, end a
URL in free text (a repr, a quoted message); ``'`` does not, as a password may hold it.
A password holding an unencoded ``/`` (``user:ab/cd@host``) is hidden too, up to the
first ``@`` after the ``/``. Where that reading and RFC 3986 disagree (an
unencoded ``?`` or ``#`` in a password), more is hidden, never less. Text that is no URL,
or a URL without userinfo, comes back unchanged; hiding twice gives what hiding once did.
"""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"

# A scheme, "//", then everything up to the last "@" before the path, whitespace, a
# quote or the end: the userinfo. A scheme starts only where a word does, so a long run
# of letters is scanned once, not once from each of its letters.
_USERINFO = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)"
    r"(?:(?P<userinfo>[^/\s\"<>\\]*)"
    # A password with an unencoded "/" (base64 keys have them): urlsplit then reads the
    # user as the host and the password's start as a port that is no number. So after
    # "user:" something other than a port, up to the first "@" past a "/".
    # Bounded: scanning on to a far "@" from each of many "x://u:p/" would be quadratic.
    r"|(?P<slashed>[^/:@\s\"<>\\]{0,256}:(?!\d*(?:[/?#\s\"<>\\@]|$))"
    r"[^/@\s\"<>\\]{0,256}/[^@\s\"<>\\]{0,512}))@"
)


def _hidden(scheme: str, userinfo: str, mask: str) -> str:
    user, colon, _ = userinfo.partition(":")
    if colon:
        return f"{user}:{mask}"
    # git+https:// and the like are http(s) underneath: a bare name there is a token too.
    if userinfo and scheme.lower().rpartition("+")[2] in ("http", "https"):
        return mask
    return userinfo


def hide_url(url: str, *, mask: str = MASK) -> str:
    """``url`` with the credentials in its userinfo replaced by ``mask``, for people to
    read, never to use: ``https://user:***@host/``, ``https://***@host/`` for a token.

    ``url`` unchanged when it is no URL or has no userinfo; a text that only holds URLs
    has theirs hidden as by :func:`hide_urls`.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # a bracketed host that is no IPv6 address: still a URL's shape
        return hide_urls(url, mask=mask)
    if "@" not in url:
        return url
    userinfo, at, host = parts.netloc.rpartition("@")
    start = url.find(parts.netloc)
    if parts.scheme and at and start >= 0:
        # Spliced into the text as written: geturl() would lowercase the scheme and drop
        # an empty query or fragment, and urlsplit strips tabs and newlines.
        netloc = f"{_hidden(parts.scheme, userinfo, mask)}@{host}"
        url = url[:start] + netloc + url[start + len(parts.netloc) :]
    # urlsplit ends the userinfo at an unencoded "?" or "#" in a password, leaving the
    # rest of the password in what it calls the query: the free-text reading catches it.
    return hide_urls(url, mask=mask)


def hide_urls(text: str, *, mask: str = MASK) -> str:
    """``text`` with the credentials of every URL in it replaced by ``mask`` (see
    :func:`hide_url`): for error messages and log lines that quote URLs."""
    if "://" not in text:
        return text
    return _USERINFO.sub(
        lambda m: f"{m['head']}{_hidden(m['scheme'], m['slashed'] or m['userinfo'] or '', mask)}@",
        text,
    )


def authority_problem(url: str) -> str | None:
    """Why ``url``'s host part is unusable (a port that is no number: often a password
    holding an unencoded ``/``), or None. The reason never quotes the URL."""
    try:
        urllib.parse.urlsplit(url).port  # noqa: B018 - raises on a port that is no number
    except ValueError:
        return (
            "its host part does not parse (a port that is no number); a password or "
            "token holding '/', '?', '#' or '@' must be percent-encoded (%2F, %3F, %23, %40)"
        )
    return None
