"""The lock file, ``.github/runner-agent.lock``: the exact version of each feature and,
per platform, the artifacts it installs from, so that a repository's builds repeat.

The format (JSON, keys sorted, two-space indent, so a change is a small diff)::

    {
      "features": {
        "node": {
          "20.11.1": {
            "linux/x64/glibc": {
              "artifacts": [{"sha256": "…", "size": 44567890, "url": "https://…"}],
              "method": "archive"
            }
          }
        }
      },
      "lockVersion": 1
    }

A platform key is the target's triple, followed by ``;NAME=value`` for each option whose
value is not the feature's default (options can change what is downloaded; the value
percent-encoded). ``method`` is how the entry installs; pip, npm and script entries pin
the version only (their artifacts are the package manager's business), so their
``artifacts`` list is empty. ``vars``, where present, are the template vars a version
index gave the version (python-build-standalone's ``release``).

Policy:
- pure, like the rest of the catalog: parsing takes text, dumping returns text;
- trusted on first use: the hashes are what ``runner-agent features lock`` saw when it
  wrote the file, and every later install must see the same bytes;
- parsed strictly and bounded (:data:`MAX_BYTES`, and counts per level): a lock comes
  from a repository, which untrusted job code can write; a URL must be http(s) and hold
  no credentials (a lock is committed), a sha256 is 64 lowercase hex digits;
- every problem names its place in the file (``features.node.20.11.1…``) and what was
  expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from agent.catalog import versions
from agent.kits import urls

PATH = ".github/runner-agent.lock"
"""Where a repository keeps its lock, beside ``.github/runner-config.yml``."""
LOCK_VERSION = 1
MAX_BYTES = 256 * 1024
"""What the GitHub source reads of a file at a commit (as for the team file), and so
the limit everywhere: a lock of 100 features on 4 platforms is ~100 KiB."""
MAX_FEATURES = 512
MAX_VERSIONS = 32
"""Versions of one feature (a repository may lock several, e.g. for a matrix)."""
MAX_PLATFORMS = 32
MAX_ARTIFACTS = 64
MAX_URL = 2048
MAX_PROBLEMS = 50
MAX_SIZE = 1 << 40

_ID = re.compile(r"(?a:[a-z0-9][a-z0-9._-]{0,63})")
_VERSION = re.compile(r"(?a:[0-9A-Za-z][0-9A-Za-z.+_-]{0,63})")
_PLATFORM = re.compile(
    r"(?a:[a-z0-9]{1,16}(/[a-z0-9]{1,16}){1,2}(;[A-Z_][A-Z0-9_]{0,63}=[A-Za-z0-9._~%-]{0,600})*)"
)
_VAR_NAME = re.compile(r"(?a:[a-z][a-z0-9_]{0,31})")
_VAR_VALUE = re.compile(r"(?a:[0-9A-Za-z][0-9A-Za-z._+-]{0,63})")
MAX_VARS = 8
_HEX64 = re.compile(r"[0-9a-f]{64}")
_METHODS = ("archive", "pip", "npm", "script")


class LockError(ValueError):
    """A lock file that cannot be used: :attr:`problems` says why, one per item."""

    def __init__(self, problems: list[str], *, source: str = PATH) -> None:
        self.problems = problems
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class LockMismatch(ValueError):
    """The catalog pins another hash than the lock for the same artifact."""


@dataclass(frozen=True)
class Artifact:
    """One file an entry installs from, as the lock saw it."""

    url: str
    sha256: str
    size: int

    def to_json(self) -> dict[str, object]:
        return {"sha256": self.sha256, "size": self.size, "url": self.url}


@dataclass(frozen=True)
class Entry:
    """One feature, version and platform: how it installs and from what."""

    method: str
    artifacts: tuple[Artifact, ...] = ()
    vars: tuple[tuple[str, str], ...] = ()
    """The template vars a version index gave the version (python-build-standalone's
    ``release``): what renders its URLs once the index has moved on."""

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "artifacts": [a.to_json() for a in self.artifacts],
            "method": self.method,
        }
        if self.vars:
            data["vars"] = dict(self.vars)
        return data


@dataclass
class Lock:
    """A parsed lock: feature id -> version -> platform key -> :class:`Entry`."""

    features: dict[str, dict[str, dict[str, Entry]]] = field(default_factory=dict)

    def versions(self, ident: str) -> list[str]:
        """The versions locked for ``ident``, lowest first."""
        return versions.sort_versions(self.features.get(ident, {}))

    def entry(self, ident: str, version: str, platform: str) -> Entry | None:
        return self.features.get(ident, {}).get(version, {}).get(platform)

    def put(self, ident: str, version: str, platform: str, entry: Entry) -> None:
        self.features.setdefault(ident, {}).setdefault(version, {})[platform] = entry

    def vars(self, ident: str, version: str) -> dict[str, str]:
        """The vars the lock recorded for ``ident`` at ``version`` (any platform's)."""
        for entry in self.features.get(ident, {}).get(version, {}).values():
            if entry.vars:
                return dict(entry.vars)
        return {}

    def entries(self) -> Iterator[tuple[str, str, str, Entry]]:
        """Every (id, version, platform, entry), sorted."""
        for ident in sorted(self.features):
            for version in versions.sort_versions(self.features[ident]):
                for platform, entry in sorted(self.features[ident][version].items()):
                    yield ident, version, platform, entry

    def __len__(self) -> int:
        return sum(1 for _ in self.entries())

    def dump(self) -> str:
        """The file's text: canonical JSON, newline-terminated."""
        data = {
            "features": {
                ident: {
                    version: {p: e.to_json() for p, e in sorted(by_platform.items())}
                    for version, by_platform in by_version.items()
                }
                for ident, by_version in self.features.items()
                if by_version
            },
            "lockVersion": LOCK_VERSION,
        }
        return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=True) + "\n"


def platform_key(triple: str, options: Mapping[str, str]) -> str:
    """The key of a target's entries: its triple, then each option set off its default
    (the value percent-encoded: an option may hold spaces or ``;``)."""
    return triple + "".join(f";{k}={quote(v, safe='')}" for k, v in sorted(options.items()))


def parse(text: str | bytes, *, source: str = PATH) -> Lock:
    """The lock in ``text``; raises :class:`LockError` with every problem."""
    if len(text) > MAX_BYTES:
        raise LockError(
            [
                f"is {len(text)} bytes, over the limit of {MAX_BYTES}; a lock lists artifacts, "
                "not their contents: is this the right file?"
            ],
            source=source,
        )
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise LockError(["nests too deeply to be a lock file"], source=source) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise LockError(
            [f"is not JSON ({exc}); run runner-agent features lock to write it"], source=source
        ) from exc
    return from_data(data, source=source)


def from_data(data: object, *, source: str = PATH) -> Lock:
    """The lock that the parsed JSON ``data`` holds (an API body's ``lock``); raises
    :class:`LockError` with every problem."""
    problems: list[str] = []
    lock = Lock()
    if not isinstance(data, dict):
        raise LockError([f"is a JSON {type(data).__name__}; expected an object"], source=source)
    if type(data.get("lockVersion")) is not int or data.get("lockVersion") != LOCK_VERSION:
        problems.append(
            f"lockVersion is {str(data.get('lockVersion'))[:40]!a}; this agent reads version "
            f"{LOCK_VERSION}: run runner-agent features lock to write it again"
        )
    unknown = sorted(set(data) - {"features", "lockVersion"})
    if unknown:
        shown = [k[:80] for k in unknown[:5]]
        problems.append(f"unknown keys {shown!a}; expected features and lockVersion")
    features = data.get("features", {})
    if not isinstance(features, dict):
        problems.append(f"features is a JSON {type(features).__name__}; expected an object")
        features = {}
    if len(features) > MAX_FEATURES:
        problems.append(f"features lists {len(features)}, over the limit of {MAX_FEATURES}")
        features = {}
    for ident, by_version in features.items():
        where = f"features.{ident[:80]!a}"
        if not _ID.fullmatch(ident):
            problems.append(f"{where}: not a feature id (lowercase letters, digits, . _ -)")
            continue
        if not isinstance(by_version, dict) or not 0 < len(by_version) <= MAX_VERSIONS:
            problems.append(
                f"{where}: expected an object of 1 to {MAX_VERSIONS} versions, each an "
                "object of platforms"
            )
            continue
        for version, by_platform in by_version.items():
            at = f"{where}.{version[:80]!a}"
            if not _VERSION.fullmatch(version) or not _parses(version):
                problems.append(f"{at}: not a version; expected digits and dots such as 20.11.1")
                continue
            if not isinstance(by_platform, dict) or not 0 < len(by_platform) <= MAX_PLATFORMS:
                problems.append(
                    f"{at}: expected an object of 1 to {MAX_PLATFORMS} platforms "
                    "(os/arch[/libc] keys)"
                )
                continue
            for platform, raw in by_platform.items():
                spot = f"{at}.{platform[:120]!a}"
                if not _PLATFORM.fullmatch(platform):
                    problems.append(f"{spot}: not a platform key (os/arch[/libc][;OPTION=value])")
                    continue
                entry = _entry(raw, spot, problems)
                if entry is not None:
                    lock.put(ident, version, platform, entry)
    if problems:
        # Each problem is one line; a file of thousands of bad entries gets the first few.
        shown = problems[:MAX_PROBLEMS]
        if len(problems) > MAX_PROBLEMS:
            shown.append(f"... and {len(problems) - MAX_PROBLEMS} more")
        raise LockError(shown, source=source)
    return lock


def _parses(version: str) -> bool:
    try:
        versions.parse_version(version)
    except versions.VersionSpecError:
        return False
    return True


def _entry(raw: object, where: str, problems: list[str]) -> Entry | None:
    if not isinstance(raw, dict) or not {"artifacts", "method"} <= set(raw) <= _ENTRY_KEYS:
        problems.append(f"{where}: expected an object with artifacts, method and maybe vars")
        return None
    given = _vars(raw.get("vars", {}), f"{where}.vars", problems)
    if given is None:
        return None
    method, artifacts = raw["method"], raw["artifacts"]
    if method not in _METHODS:
        problems.append(f"{where}.method is {str(method)[:40]!a}; expected one of {_METHODS}")
        return None
    if not isinstance(artifacts, list) or len(artifacts) > MAX_ARTIFACTS:
        problems.append(f"{where}.artifacts: expected a list of at most {MAX_ARTIFACTS}")
        return None
    if method != "archive" and artifacts:
        problems.append(f"{where}.artifacts: a {method} entry pins its version only; expected []")
        return None
    found = []
    for n, item in enumerate(artifacts):
        artifact = _artifact(item, f"{where}.artifacts[{n}]", problems)
        if artifact is not None:
            found.append(artifact)
    if len(found) != len(artifacts):
        return None
    return Entry(method=method, artifacts=tuple(found), vars=given)


_ENTRY_KEYS = {"artifacts", "method", "vars"}


def _vars(raw: object, where: str, problems: list[str]) -> tuple[tuple[str, str], ...] | None:
    """A version's vars: a few plain names to values that can sit in a URL's path (no
    ``/``, ``?``, ``#``, ``%``, nor a leading ``.``)."""
    if not isinstance(raw, dict) or len(raw) > MAX_VARS:
        problems.append(f"{where}: expected an object of at most {MAX_VARS} name: value")
        return None
    for name, value in raw.items():
        if not _VAR_NAME.fullmatch(name) or not isinstance(value, str):
            problems.append(f"{where}: {name[:40]!a} is not a var name (lowercase, digits, _)")
            return None
        if not _VAR_VALUE.fullmatch(value):
            problems.append(
                f"{where}.{name}: {value[:80]!a} is not a plain value (letters, digits, . _ + -)"
            )
            return None
    return tuple(sorted(raw.items()))


def _artifact(item: object, where: str, problems: list[str]) -> Artifact | None:
    if not isinstance(item, dict) or set(item) != {"sha256", "size", "url"}:
        problems.append(f"{where}: expected an object with exactly sha256, size and url")
        return None
    url, sha, size = item["url"], item["sha256"], item["size"]
    problem = check_url(url)
    if problem:
        problems.append(f"{where}.url {problem}")
        return None
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        problems.append(f"{where}.sha256 is {str(sha)[:80]!a}; expected 64 lowercase hex digits")
        return None
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        problems.append(f"{where}.size is {str(size)[:40]!a}; expected a byte count")
        return None
    return Artifact(url=url, sha256=sha, size=size)


def check_url(url: object) -> str | None:
    """Why ``url`` cannot be in a lock, or ``None``: http(s), a host, no credentials
    (the file is committed), no control characters, at most :data:`MAX_URL` long."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        return f"must be a URL of at most {MAX_URL} characters"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url) or not url.isascii():
        return "holds a space, a control or a non-ASCII character; expected an encoded URL"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a URL"
    # A password with an unencoded "/" reads as host and port: hide_url catches it.
    if "@" in parts.netloc or urls.hide_url(url) != url or urls.authority_problem(url):
        return "holds credentials; a lock is committed: give them in installer.mirror_headers"
    if parts.scheme not in ("https", "http"):
        return f"has scheme {parts.scheme[:20]!a}; expected an http(s) URL"
    if not parts.hostname:
        return "has no host; expected an http(s) URL with a host"
    return None
