"""Fetching a plan's artifacts, verified: for an install and for the lock file.

Policy: one way to verify a download, whoever asks. A ``download`` action is checked
against the sha256 the plan carries (the catalog's) or the upstream's checksum file; a
locked one against the lock file's sha256 and size as well, the checksum file still
read where the catalog names one (the lock narrows what is accepted, never widens it),
and any disagreement is a :class:`transport.LockViolation` naming both values. ``runner-agent
features lock`` records what :func:`observe` sees (trusted on first use): the sha256
and size of the bytes an install would use, fetched into the same download cache, so
the install after it downloads nothing. A components' manifest is recorded by its own
hash: it pins each component's, which the install verifies.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path

from agent.install import components
from agent.install.fetch import downloads, transport
from agent.platform import plans as wire
from agent.store import receipts


def fetch(
    action: wire.DownloadAction,
    cache: downloads.DownloadCache,
    policy: downloads.Policy,
    *,
    on_checksum: Callable[[str], None] | None = None,
) -> downloads.Artifact:
    """The verified artifact of a ``download`` action (see the module's policy);
    ``on_checksum`` hears a digest read from a checksum file."""
    sha = action.get("sha256")
    locked = action.get("locked", False)
    if locked and "size" in action:
        # The lock knows the size: a body that outgrows it stops there, not at 16 GiB.
        policy = dataclasses.replace(policy, max_bytes=min(policy.max_bytes, action["size"]))
    sha512 = None
    if "checksum_url" in action:
        listed = downloads.fetch_checksum(action["checksum_url"], action["file"], policy=policy)
        if on_checksum is not None:
            on_checksum(listed)
        if len(listed) == 128:  # the upstream publishes sha512 alone (.NET)
            sha512 = listed
        elif sha is not None and listed != sha:
            # A locked step keeps the upstream's checksum file: both must agree.
            raise transport.LockViolation(
                action["checksum_url"],
                what=f"the sha256 its checksum file lists for {action['file']}",
                locked=sha,
                actual=listed,
            )
        else:
            sha = listed
    hit = cache.get(sha) if sha512 is not None and sha is not None else None
    try:
        if hit is not None and _sha512(hit) == sha512 and sha is not None:
            # Locked, and the upstream publishes sha512 alone: the cached copy of the
            # locked bytes serves once its sha512 matches too (no download each time).
            shown = transport.shown(downloads.rewrite(action["url"], policy))
            artifact = downloads.Artifact(hit, sha, hit.stat().st_size, shown)
        elif sha512 is not None:
            artifact = downloads.fetch(
                action["url"], cache, sha256=None, policy=policy, sha512=sha512
            )
            if sha is not None and artifact.sha256 != sha:
                raise transport.ChecksumMismatch(
                    artifact.url, expected=sha, actual=artifact.sha256, size=artifact.size
                )
        else:
            artifact = downloads.fetch(action["url"], cache, sha256=sha, policy=policy)
    except transport.ChecksumMismatch as exc:
        if not locked:
            raise
        raise transport.LockViolation(
            exc.url, what="its sha256", locked=exc.expected, actual=exc.actual
        ) from exc
    except transport.TooBig as exc:
        if not locked or "size" not in action or exc.limit != action["size"]:
            raise
        raise transport.LockViolation(
            exc.url, what="its size", locked=str(action["size"]), actual=f"over {exc.limit}"
        ) from exc
    if locked and "size" in action and artifact.size != action["size"]:
        raise transport.LockViolation(
            artifact.url, what="its size", locked=str(action["size"]), actual=str(artifact.size)
        )
    return artifact


def _sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def observe(
    step: wire.ToolStep, cache: downloads.DownloadCache, policy: downloads.Policy
) -> list[receipts.Source]:
    """What ``step`` installs from, verified, by the URL the plan names (the upstream's,
    not a mirror's): the lock file's artifacts for it. Raises
    :class:`transport.DownloadError` or :class:`components.ComponentError`."""
    found: list[receipts.Source] = []
    for action in step["actions"]:
        if action["action"] == "download":
            artifact = fetch(action, cache, policy)
            found.append(receipts.Source(action["url"], artifact.sha256, artifact.size))
        elif action["action"] == "components":
            body = downloads.fetch_document(action["manifest_url"], policy=policy)
            components.check_manifest(action, body)
            components.parse(body, action)  # it lists what the step needs
            digest = hashlib.sha256(body).hexdigest()
            found.append(receipts.Source(action["manifest_url"], digest, len(body)))
    return found
