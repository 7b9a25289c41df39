"""Several component archives laid into one entry, as a JSON manifest lists them.

The manifest has the form of NVIDIA's ``redistrib_<release>.json`` (the CUDA toolkit's
redistributable components): ``{"<component>": {"name", "version", "<platform>":
{"relative_path", "sha256", "md5", "size"}, ...}, "release_date": ..., ...}``.

Policy:
- the manifest is the checksum source: it is fetched through the mirror and proxy
  settings like a checksum file, at most 1 MiB, and every value taken from it is
  checked before use: a relative path of plain segments (no ``..``, no leading ``/``)
  ending in an archive suffix, a 64-hex sha256, a size in bytes;
- every required component must be listed for the platform; an optional one missing
  is logged and skipped; an archive that does not hash and size as listed is refused;
- each archive is extracted into a fresh folder of its own (:mod:`extracting`'s
  safeties hold, its byte cap shared by all the components), then laid into the
  entry: directories merge; the component's own top-level regular files (each ships a
  LICENSE) go to ``licenses/<component>/``; a path that two components both ship must
  hold the same bytes, else the install fails naming both.
  Nothing is followed: links are moved as links, and a link never stands where a
  directory merges or where ``licenses/`` is made;
- then the action's ``links`` are made (the layout tools expect, such as nvcc's
  ``targets/<arch>/include``): every folder on a link's way is a real folder (made if
  missing), its target exists inside the entry with no link on its way, and a path a
  component already ships is refused unless it is that very link.
"""

from __future__ import annotations

import dataclasses
import filecmp
import hashlib
import itertools
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from agent.install.fetch import downloads, extracting, transport
from agent.kits import progress
from agent.platform import plans as wire
from agent.store import installlog, receipts

_SEGMENT = re.compile(r"(?a:[A-Za-z0-9][A-Za-z0-9._+-]{0,199})")
_NAME = re.compile(r"(?a:[A-Za-z0-9][A-Za-z0-9._+-]{0,63})")
_HEX64 = re.compile(r"(?a:[0-9a-f]{64})")
_FORMATS = {".tar.xz": "tar.xz", ".tar.gz": "tar.gz", ".tgz": "tar.gz", ".zip": "zip"}
_MAX_SHOWN = 12


class ComponentError(Exception):
    """The components' manifest is unusable, or the components do not fit together."""


@dataclass(frozen=True)
class Component:
    """One archive the manifest lists for the platform."""

    name: str
    url: str
    relative_path: str
    sha256: str
    size: int

    @property
    def format(self) -> str:
        """The archive format, from the relative path's suffix."""
        return next(f for s, f in _FORMATS.items() if self.relative_path.endswith(s))


def parse(body: bytes, action: wire.ComponentsAction) -> tuple[list[Component], list[str]]:
    """The components ``action`` asks for, as the manifest ``body`` lists them for its
    platform, and the optional ones it does not list. Raises :class:`ComponentError`."""
    where = action["manifest_url"]
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ComponentError(f"the components' manifest {where} is not JSON: {exc}") from exc
    except RecursionError as exc:  # [[[[...: a MiB of brackets nests deeper than Python
        raise ComponentError(
            f"the components' manifest {where} nests too deeply; expected NVIDIA's "
            "redistrib_<release>.json form (components, then platforms)"
        ) from exc
    if not isinstance(data, dict):
        raise ComponentError(
            f"the components' manifest {where} is a JSON {type(data).__name__}; expected an "
            "object of components (NVIDIA's redistrib_<release>.json form)"
        )
    platform = action["platform"]
    found: list[Component] = []
    absent: list[str] = []
    for name in [*action["names"], *action["optional"]]:
        if not _NAME.fullmatch(name):  # it names a folder: licenses/<name>/
            raise ComponentError(f"the component name {name[:80]!a} is not a plain name")
        entry = data.get(name)
        listed = entry.get(platform) if isinstance(entry, dict) else None
        if listed is None:
            if name in action["optional"]:
                absent.append(name)
                continue
            have = sorted(k for k, v in data.items() if isinstance(v, dict) and platform in v)
            shown = ", ".join(have[:_MAX_SHOWN]) + (" ..." if len(have) > _MAX_SHOWN else "")
            raise ComponentError(
                f"the components' manifest {where} lists no {name!r} for {platform!r}; it "
                f"lists {shown or 'nothing for that platform'}: check the feature's "
                "component names for this release"
            )
        found.append(_component(name, listed, action, where))
    return found, absent


def _component(name: str, listed: object, action: wire.ComponentsAction, where: str) -> Component:
    what = f"the components' manifest {where}: {name}.{action['platform']}"
    if not isinstance(listed, dict):
        raise ComponentError(f"{what} is not an object with relative_path, sha256 and size")
    path, sha, size = listed.get("relative_path"), listed.get("sha256"), listed.get("size")
    segments = path.split("/") if isinstance(path, str) else []
    if (
        not isinstance(path, str)
        or len(path) > 1000
        or not all(_SEGMENT.fullmatch(s) for s in segments)
        or not any(path.endswith(s) for s in _FORMATS)
    ):
        raise ComponentError(
            f"{what}.relative_path is {str(path)[:200]!a}; expected a relative path of plain "
            f"names ending in {', '.join(_FORMATS)}"
        )
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        raise ComponentError(f"{what}.sha256 is {str(sha)[:80]!a}; expected 64 lowercase hex")
    if isinstance(size, str) and size.isascii() and size.isdigit() and len(size) < 16:
        size = int(size)  # NVIDIA writes sizes as strings
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ComponentError(f"{what}.size is {str(size)[:40]!a}; expected a byte count")
    return Component(name, action["base_url"] + path, path, sha, size)


def check_manifest(action: wire.ComponentsAction, body: bytes) -> None:
    """A :class:`transport.LockViolation` if a locked components' manifest changed."""
    locked = action.get("manifest_sha256")
    if locked is not None and (actual := hashlib.sha256(body).hexdigest()) != locked:
        raise transport.LockViolation(
            action["manifest_url"],
            what="the components' manifest's sha256",
            locked=locked,
            actual=actual,
        )


def install(
    action: wire.ComponentsAction,
    *,
    staging: Path,
    tree: Path,
    cache: downloads.DownloadCache,
    policy: downloads.Policy,
    limits: extracting.Limits,
    log: installlog.InstallLog,
) -> list[receipts.Source]:
    """Fetch the manifest, then download, verify and lay in each component; the sources
    for the receipt."""
    body = downloads.fetch_document(action["manifest_url"], policy=policy)
    check_manifest(action, body)
    wanted, absent = parse(body, action)
    log.step("components", f"{action['manifest_url']}: {', '.join(c.name for c in wanted)}")
    if absent:
        log.step("components", f"not in this release: {', '.join(absent)}")
    # The manifest first: a lock file pins it (and, through it, every component).
    fetched = transport.shown(downloads.rewrite(action["manifest_url"], policy))
    sources = [receipts.Source(fetched, hashlib.sha256(body).hexdigest(), len(body))]
    owners: dict[str, str] = {}
    left = limits.max_total_bytes  # one entry's cap, shared by all its components
    for index, component in enumerate(wanted):
        artifact = downloads.fetch(component.url, cache, sha256=component.sha256, policy=policy)
        if artifact.size != component.size:
            raise ComponentError(
                f"{component.url} is {artifact.size} bytes; the components' manifest lists "
                f"{component.size} for its sha256: report it upstream"
            )
        log.step("download", f"{artifact.url} {artifact.size} bytes sha256 {artifact.sha256}")
        sources.append(receipts.Source(artifact.url, artifact.sha256, artifact.size))
        progress.report("extracting")
        unpacked = staging / "components" / f"{index:02d}"
        unpacked.mkdir(parents=True)
        done = extracting.extract(
            artifact.path,
            unpacked,
            fmt=component.format,
            strip_components=action["strip_components"],
            limits=dataclasses.replace(limits, max_total_bytes=left),
        )
        left -= done.bytes
        log.step("extract", f"{component.name}: {done.members} members, {done.bytes} bytes")
        lay_in(unpacked, tree, component.name, owners)
    links = action.get("links", {})
    make_links(tree, links)
    if links:
        log.step("links", ", ".join(f"{k} -> {v}" for k, v in sorted(links.items())))
    return sources


def lay_in(source: Path, tree: Path, name: str, owners: dict[str, str]) -> None:
    """Move the extracted component at ``source`` into ``tree`` (see the module's
    policy); ``owners`` maps each path laid in so far to its component."""
    with os.scandir(source) as found:
        for item in sorted(found, key=lambda e: e.name):
            if item.is_dir(follow_symlinks=False):
                _merge(Path(item.path), tree / item.name, item.name, name, owners)
            elif item.is_symlink():  # e.g. lib64 -> lib: a path of the tree, like any other
                _place(Path(item.path), tree / item.name, item.name, name, owners)
            else:
                shelf = _folder(tree / "licenses", "licenses")
                licenses = _folder(shelf / name, f"licenses/{name}")
                _place(Path(item.path), licenses / item.name, f"licenses/{name}/{item.name}",
                       name, owners)  # fmt: skip


def make_links(tree: Path, links: dict[str, str]) -> None:
    """Make each of ``links`` (path -> target relative to the link's folder) in
    ``tree``, as the module's policy says. Raises :class:`ComponentError`."""
    for link, target in sorted(links.items()):
        parts = [p for p in link.split("/") if p not in ("", ".")]
        steps = target.split("/")
        ups = len(steps) - len(list(itertools.dropwhile(lambda s: s == "..", steps)))
        resolved = os.path.normpath("/".join([*parts[:-1], target]))
        if (
            not parts
            or ".." in parts
            or ".." in steps[ups:]  # after a name: the kernel would resolve that name first
            or target.startswith("/")
            or resolved == "."
            or resolved.startswith("../")
            or resolved in ("..", "/")
        ):
            raise ComponentError(
                f"the link {link!a} -> {target!a} does not stay inside the entry: a link "
                "and its target are relative paths below the prefix"
            )
        _no_link_on(tree, resolved, f"the link {link} -> {target}")
        folder = tree
        for at, part in enumerate(parts[:-1], 1):
            folder = _folder(folder / part, "/".join(parts[:at]))
        path = folder / parts[-1]
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            os.symlink(target, path)
            continue
        if not (stat.S_ISLNK(info.st_mode) and os.readlink(path) == target):
            raise ComponentError(
                f"a component already ships {'/'.join(parts)}, where the feature makes the "
                f"link -> {target}: drop the link from the feature for this release"
            )


def _no_link_on(tree: Path, resolved: str, what: str) -> None:
    at = tree
    for part in resolved.split("/"):
        at = at / part
        try:
            info = os.lstat(at)
        except (FileNotFoundError, NotADirectoryError):
            raise ComponentError(
                f"{what}: no component ships {resolved}; check the feature's links and "
                "components for this release"
            ) from None
        if stat.S_ISLNK(info.st_mode):
            raise ComponentError(
                f"{what}: {resolved} passes through a link a component ships; a link must "
                "point at a real path"
            )


def _folder(path: Path, rel: str) -> Path:
    """``path``, a real folder (made if missing): never a link, never followed."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        os.mkdir(path, 0o755)
        return path
    if not stat.S_ISDIR(info.st_mode):
        raise ComponentError(
            f"a component ships {rel} as a file or link, where a folder is needed: the "
            "components do not fit together"
        )
    return path


def _merge(source: Path, dest: Path, rel: str, name: str, owners: dict[str, str]) -> None:
    try:
        info = os.lstat(dest)
    except FileNotFoundError:
        os.rename(source, dest)
        _own(dest, rel, name, owners)
        return
    if not stat.S_ISDIR(info.st_mode):
        raise ComponentError(
            f"{name} ships the folder {rel}, where {owners.get(rel, 'another component')} "
            "put a file or link: the components do not fit together"
        )
    with os.scandir(source) as found:
        for item in sorted(found, key=lambda e: e.name):
            path, inner = Path(item.path), f"{rel}/{item.name}"
            if item.is_dir(follow_symlinks=False):
                _merge(path, dest / item.name, inner, name, owners)
            else:
                _place(path, dest / item.name, inner, name, owners)


def _place(source: Path, dest: Path, rel: str, name: str, owners: dict[str, str]) -> None:
    try:
        info = os.lstat(dest)
    except FileNotFoundError:
        os.rename(source, dest)
        owners[rel] = name
        return
    mine = os.lstat(source)
    same = (
        stat.S_ISREG(info.st_mode)
        and stat.S_ISREG(mine.st_mode)
        and filecmp.cmp(source, dest, shallow=False)
    ) or (
        stat.S_ISLNK(info.st_mode)
        and stat.S_ISLNK(mine.st_mode)
        and os.readlink(source) == os.readlink(dest)
    )
    if not same:
        raise ComponentError(
            f"{name} and {owners.get(rel, 'another component')} both ship {rel} with "
            "different contents: the components do not fit together"
        )


def _own(top: Path, rel: str, name: str, owners: dict[str, str]) -> None:
    """Record every path under a folder moved in whole as ``name``'s."""
    owners[rel] = name
    for folder, dirs, files in os.walk(top):
        base = rel + folder[len(str(top)) :]
        for item in (*dirs, *files):
            owners[f"{base}/{item}"] = name
