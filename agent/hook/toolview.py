"""The job's view of the store: links in the runner's pod-local tool cache, so
``actions/setup-*`` and the job's steps find the agent's entries without writing the store.

Policy:
- the tool cache is the runner's: ``RUNNER_TOOL_CACHE``, else ``RUNNER_TOOLSDIRECTORY``,
  else ``AGENT_TOOLSDIRECTORY``, else ``_tool`` beside the runner's workspaces (the
  parent of ``RUNNER_WORKSPACE``); it is created when missing;
- the store as the runner sees it: ``RUNNER_AGENT_STORE``; else, when the agent's own
  store path exists here (host mode), that path, or ``<tool cache>/.runner-agent-store``
  when that is the same folder mounted there; else ``<tool cache>/.runner-agent-store``
  when it is a READ-ONLY mount point with no link on its path and not FUSE (the store
  volume mounted inside the tool cache, so job containers see it below ``/__t``). Job
  code can write the tool cache, so nothing it could plant there counts; else no entry
  can be used, which is an error;
- each entry ``<name>/<version>/<arch>`` is linked from ``<tool cache>/<name>/<version>/
  <arch>`` to the store, with a RELATIVE link when the store lies inside the tool cache
  (it then resolves at ``/__t`` in job containers too) and an absolute one otherwise;
  the EMPTY ``<arch>.complete`` marker is written after the link, never before it, as
  ``find()`` counts an entry only once its marker exists;
- nothing below the tool cache is followed that the hook did not make: folders are
  entered with ``O_NOFOLLOW`` relative to their parent's descriptor, names are looked at
  with ``lstat``, and links and markers are put in place by ``rename`` over a temporary
  name, which replaces a name and never writes through it. A link owned by someone else,
  a real folder or any other file where the link belongs (an image that preinstalled
  that version) is left alone: the job then gets the store's path directly, with a
  warning;
- every path and variable of the ensure that starts with an agent entry path is
  translated to that entry's view path (anything else in the agent's store to the
  runner's view of the store); PATH entries inside the tool cache are given in their
  container form (``/__t/...``) as well, since the runner does not translate PATH for
  container steps;
- a feature's writable homes (``NPM_CONFIG_PREFIX``...) are pod-local folders
  ``<tool cache>/.runner-agent-homes/<feature>/<variable, lower-cased>`` (0755), made
  by the same no-follow rules.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agent.hook import errors

CONTAINER_TOOL_CACHE = "/__t"
STORE_IN_TOOL_CACHE = ".runner-agent-store"
HOMES = ".runner-agent-homes"
_PART = re.compile(r"[A-Za-z0-9_.+-]{1,200}")
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class ToolViewError(errors.HookError):
    """The view cannot be built: no tool cache, no store, or an entry the store lacks."""


def _clean(path: str) -> str:
    return posixpath.normpath(path)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def tool_cache_dir(environ: Mapping[str, str]) -> str:
    """The runner's tool cache folder (see the module for the order)."""
    for name in ("RUNNER_TOOL_CACHE", "RUNNER_TOOLSDIRECTORY", "AGENT_TOOLSDIRECTORY"):
        value = environ.get(name)
        if value:
            if not value.startswith("/"):
                raise ToolViewError(f"{name}={value!r} is not an absolute path")
            return _clean(value)
    workspace = environ.get("RUNNER_WORKSPACE")
    if workspace and workspace.startswith("/"):
        return posixpath.join(posixpath.dirname(_clean(workspace)), "_tool")
    raise ToolViewError(
        "cannot find the runner's tool cache: RUNNER_TOOL_CACHE, RUNNER_TOOLSDIRECTORY, "
        "AGENT_TOOLSDIRECTORY and RUNNER_WORKSPACE are all unset; set RUNNER_TOOL_CACHE"
    )


def runner_store(environ: Mapping[str, str], tool_cache: str, agent_store: str) -> str:
    """Where the runner sees the agent's store (see the module for the order)."""
    named = environ.get("RUNNER_AGENT_STORE")
    if named:
        if not named.startswith("/"):
            raise ToolViewError(f"RUNNER_AGENT_STORE={named!r} is not an absolute path")
        return _clean(named)
    mounted = posixpath.join(tool_cache, STORE_IN_TOOL_CACHE)
    planted = False
    if os.path.isdir(agent_store):
        # Host mode: the agent's own store is here. The one in the tool cache is used only
        # when it is that same folder mounted there (relative links, for container jobs).
        if _same_folder(mounted, agent_store) and _trusted_mount(mounted):
            return mounted
        return _clean(agent_store)
    if os.path.lexists(mounted):
        if _trusted_mount(mounted):
            return mounted
        planted = True  # job code can write the tool cache: only a read-only mount counts
    if planted:
        raise ToolViewError(
            f"{mounted} is not a read-only mount, so it is not the agent's store (job code "
            "can write the tool cache, and the hook trusts no folder it could have made); "
            "mount the store there read-only, or set RUNNER_AGENT_STORE"
        )
    raise ToolViewError(
        f"the agent's store is not visible here: neither {mounted} nor {agent_store} is a "
        "folder; mount the store read-only at the first (or set RUNNER_AGENT_STORE)"
    )


def _same_folder(one: str, other: str) -> bool:
    try:
        return os.path.samestat(os.stat(one), os.stat(other))
    except OSError:
        return False


def _trusted_mount(path: str) -> bool:
    """Whether ``path`` is a store volume mounted read-only, which nothing the runner's
    user does can fake: no link anywhere on the path (job code may turn the tool cache
    itself into a link, say into /proc/<pid>/root of a namespace of its own), a folder
    on a read-only mount, and on Linux a mount point of this mount namespace that is not
    FUSE (which a user can mount without privileges)."""
    try:
        if os.path.realpath(path) != path:
            return False
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or not os.statvfs(path).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return False
    return _mount_type(path) not in (None, "fuse")


def _mount_type(path: str) -> str | None:
    # The file system type of the mount at exactly ``path`` ("fuse" for any FUSE one),
    # from /proc/self/mountinfo; None when ``path`` is not a mount point. Without
    # mountinfo (not Linux) the read-only check above is all there is: "unknown".
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            lines = handle.read(4 << 20).splitlines()
    except OSError:
        return "unknown"
    found: str | None = None
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields:
            continue
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        if point == path:
            kind = fields[fields.index("-") + 1]
            found = "fuse" if kind.startswith("fuse") else kind  # the last mount wins
    return found


@dataclass
class Linked:
    """One entry in the view: where the job finds it, and whether that is a tool cache link."""

    feature: str
    agent_path: str
    view_path: str
    linked: bool


@dataclass
class ToolView:
    """The view being built for one job."""

    tool_cache: str
    agent_store: str
    store: str
    warn: Callable[[str], None]
    entries: list[Linked] = field(default_factory=list)

    def link(self, feature: str, entry: str) -> Linked:
        """Put the agent ``entry`` (an absolute path in the agent's store) in the view."""
        agent_path = _clean(entry)
        if not _inside(agent_path, self.agent_store) or agent_path == self.agent_store:
            raise ToolViewError(
                f"{feature}: its entry {entry!r} is not inside the agent's store "
                f"{self.agent_store}; see the agent's log"
            )
        rel = agent_path[len(self.agent_store.rstrip("/")) + 1 :]
        parts = rel.split("/")
        if len(parts) != 3 or not all(_PART.fullmatch(p) and p not in (".", "..") for p in parts):
            raise ToolViewError(
                f"{feature}: its entry {entry!r} is not <name>/<version>/<arch> in the store"
            )
        source = posixpath.join(self.store, rel)
        if not os.path.isdir(source):
            raise ToolViewError(
                f"{feature}: its entry is not at {source}: the store seen here "
                f"({self.store}) is not the agent's ({self.agent_store}); mount it read-only "
                f"at {posixpath.join(self.tool_cache, STORE_IN_TOOL_CACHE)}"
            )
        name, version, arch = parts
        target = posixpath.join(self.tool_cache, rel)
        if _inside(self.store, self.tool_cache):
            value = posixpath.relpath(source, posixpath.dirname(target))
        else:
            value = source
        made = self._place(name, version, arch, value)
        linked = Linked(feature, agent_path, target if made else source, made)
        if not made:
            self.warn(
                f"{feature}: {target} is already there (not a link of the hook's); the job "
                f"uses the store's {source} directly and setup-* actions will not find it"
            )
        self.entries.append(linked)
        return linked

    def _place(self, name: str, version: str, arch: str, value: str) -> bool:
        fd = _open_dirs(self.tool_cache, (name, version), self.warn)
        if fd is None:
            return False
        try:
            try:
                info = os.stat(arch, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                info = None
            if info is not None:
                if not stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
                    return False  # someone else's: never followed, never replaced
                if os.readlink(arch, dir_fd=fd) == value:
                    _marker(fd, arch)
                    return True
            _replace(fd, arch, lambda tmp: os.symlink(value, tmp, dir_fd=fd))
            _marker(fd, arch)
            return True
        except OSError as exc:
            self.warn(f"cannot link {name}/{version}/{arch} in the tool cache: {exc.strerror}")
            return False
        finally:
            os.close(fd)

    def translate(self, value: str) -> str:
        """``value`` with each ``:``-separated part that is in the agent's store turned
        into where the job sees it."""
        return ":".join(self._translate_one(part) for part in value.split(":"))

    def _translate_one(self, part: str) -> str:
        if not part.startswith("/"):
            return part
        clean = _clean(part)
        for item in sorted(self.entries, key=lambda e: -len(e.agent_path)):
            if _inside(clean, item.agent_path):
                return item.view_path + clean[len(item.agent_path) :]
        if _inside(clean, self.agent_store):
            return self.store + clean[len(self.agent_store.rstrip("/")) :]
        return part

    def container_form(self, path: str) -> str | None:
        """``path`` as a job container sees it (``/__t/...``), if it lies in the tool
        cache; ``None`` otherwise."""
        clean = _clean(path)
        if not _inside(clean, self.tool_cache):
            return None
        return CONTAINER_TOOL_CACHE + clean[len(self.tool_cache.rstrip("/")) :]

    def path_lines(self, paths: list[str]) -> list[str]:
        """Translated PATH entries, each followed by its container form when it has one."""
        out: list[str] = []
        for entry in paths:
            host = self.translate(entry)
            out.append(host)
            inner = self.container_form(host)
            if inner is not None and inner != host:
                out.append(inner)
        return out

    def home(self, feature: str, variable: str, subdirs: list[str]) -> tuple[str, list[str]]:
        """Make the pod-local home for ``variable`` of ``feature``; its path and the
        folders below it for PATH."""
        if not _PART.fullmatch(feature) or feature in (".", ".."):
            raise ToolViewError(f"the agent sent a home for a feature named {feature!r}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,100}", variable):
            raise ToolViewError(f"{feature}: the agent sent a home variable {variable!r}")
        folders = (HOMES, feature, variable.lower())
        fd = _open_dirs(self.tool_cache, folders, self.warn)
        if fd is None:
            raise ToolViewError(
                f"{feature}: cannot make its home for {variable} under "
                f"{posixpath.join(self.tool_cache, HOMES)}"
            )
        os.close(fd)
        home = posixpath.join(self.tool_cache, *folders)
        below: list[str] = []
        for sub in subdirs:
            rel = posixpath.normpath(sub)
            if rel.startswith("/") or rel == ".." or rel.startswith("../"):
                raise ToolViewError(f"{feature}: {variable}'s PATH folder {sub!r} is not below it")
            below.append(home if rel == "." else posixpath.join(home, rel))
        return home, below


def _open_dirs(top: str, names: tuple[str, ...], warn: Callable[[str], None]) -> int | None:
    """A descriptor of ``top/names...``, each made (0755) when missing and none of them
    followed if it is a link; ``None`` (after a warning) where one cannot be used."""
    try:
        os.makedirs(top, mode=0o755, exist_ok=True)
        fd = os.open(top, _DIR_FLAGS)
    except OSError as exc:
        raise ToolViewError(f"cannot use the tool cache {top}: {exc.strerror}") from None
    path = top
    for name in names:
        path = posixpath.join(path, name)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
            child = os.open(name, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            # A link where a folder belongs, planted by whoever (ELOOP, or ENOTDIR as
            # O_DIRECTORY is checked first): never followed.
            link = exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(fd, name)
            reason = "a link, not followed" if link else exc.strerror
            os.close(fd)
            warn(f"cannot use {path} in the tool cache: {reason}")
            return None
        os.close(fd)
        fd = child
    return fd


def _is_link(fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _replace(fd: int, name: str, make: Callable[[str], None]) -> None:
    """Make ``name`` in ``fd`` with ``make(tmp)`` under a fresh name, then rename it over."""
    tmp = f".{name}.runner-agent-{errors.random_token(6)}"
    make(tmp)
    try:
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError:
        os.unlink(tmp, dir_fd=fd)
        raise


def _marker(fd: int, arch: str) -> None:
    """The empty ``<arch>.complete`` beside the link (a regular file of ours stays)."""
    name = f"{arch}.complete"
    try:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_size == 0:
            return
    except FileNotFoundError:
        pass

    def make(tmp: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        os.close(os.open(tmp, flags, 0o644, dir_fd=fd))

    _replace(fd, name, make)
