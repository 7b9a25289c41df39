"""Reaching the store's files and folders without following links.

Policy: the store root is the operator's (``cache.root`` may itself be a link, to a
mount); everything below it may have been planted by untrusted code that can write some
store folder (the sandbox user, a job with the volume mounted). So below the root:

- folders are opened one component at a time, each with ``O_DIRECTORY | O_NOFOLLOW``
  relative to its parent's descriptor, and everything after is done relative to the
  last one (``dir_fd=``): a link swapped in after a check cannot redirect the operation,
  because no path string is resolved again;
- files the agent creates are created ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a temp name,
  then ``renameat``, which replaces a planted link itself, never its target); files it
  appends to or locks are opened ``O_NOFOLLOW | O_NONBLOCK`` and must be regular files
  (a fifo would block the opener for ever);
- files the agent reads are opened the same way, and read up to a bound;
- trees are walked and removed by descriptor here (:func:`walk`, :func:`remove_at`), not
  by ``os.fwalk`` or ``shutil.rmtree(dir_fd=)``, which open subfolders without
  ``O_DIRECTORY``: a folder swapped for a fifo would block them for ever.

A link (or a non-folder) where a folder must be raises :class:`LinkRefused`, an
``OSError`` with ``ELOOP``, so every caller that already reports I/O errors reports it,
naming the path. :func:`walk` is the descriptor-relative tree walk for
anything that must visit a tree that others could write (mode normalisation, hashing).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

META = ".runner-agent"  # layout.META; repeated here so layout can import this module

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class LinkRefused(OSError):
    """A link, or something that is not a folder, where the store must have a real folder
    (or a file where it must have a regular file). Nothing was done through it."""

    def __init__(self, path: str | Path, what: str) -> None:
        super().__init__(
            errno.ELOOP,
            f"{path} is {what}; the store holds only real folders and regular files below "
            "its root, so the agent refuses to go through it: remove it by hand (someone "
            "who can write the store planted it)",
        )


class TooBig(OSError):
    """A file larger than the agent will read (a damaged or hostile metadata file)."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    return "not a regular file" if not stat.S_ISREG(mode) else "a regular file"


def open_root(root: Path) -> int:
    """A descriptor of the store root itself (the operator's path, links allowed)."""
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_below(dirfd: int, parts: Sequence[str], *, create: bool = False, at: str = "") -> int:
    """Open ``parts`` below ``dirfd`` one component at a time, never following a link;
    with ``create``, missing folders are made (0755). ``at`` names ``dirfd`` in errors."""
    fd = os.dup(dirfd)
    where = at
    try:
        for part in parts:
            where = os.path.join(where, part)
            try:
                child = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                    with contextlib.suppress(OSError):
                        os.fsync(fd)
                child = _open_dir_child(fd, part, where)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise _refused(fd, part, where) from exc
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_dir_child(fd: int, part: str, where: str) -> int:
    try:
        return os.open(part, _DIR, dir_fd=fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise _refused(fd, part, where) from exc


def _refused(fd: int, name: str, where: str) -> LinkRefused:
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except OSError:
        return LinkRefused(where, "not a folder")
    return LinkRefused(where, _kind(mode))


def open_dir(root: Path, parts: Sequence[str], *, create: bool = False) -> int:
    """``root/parts...`` opened as above: the root followed, nothing below it."""
    top = open_root(root) if not create else _open_or_make_root(root)
    try:
        return open_below(top, parts, create=create, at=str(root))
    finally:
        os.close(top)


def _open_or_make_root(root: Path) -> int:
    try:
        return open_root(root)
    except FileNotFoundError:
        root.mkdir(parents=True, exist_ok=True)
        return open_root(root)


def split(path: Path) -> tuple[Path, tuple[str, ...]]:
    """The store root and the components below it of a path in the store's metadata
    (``<root>/.runner-agent/...``); a path outside any store's metadata is taken as its
    folder and name (only the last component is then guarded)."""
    parts = path.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == META:
            return Path(*parts[:i]), tuple(parts[i:])
    return path.parent, (path.name,)


def open_parent(path: Path, *, create: bool = False) -> tuple[int, str]:
    """A descriptor of ``path``'s folder, reached as :func:`split` says, and its name."""
    root, parts = split(path)
    return open_dir(root, parts[:-1], create=create), parts[-1]


def open_file(dirfd: int, name: str, flags: int, mode: int = 0o644, *, at: str = "") -> int:
    """Open a regular file below ``dirfd`` without following a link or blocking on a fifo."""
    try:
        fd = os.open(name, flags | _FILE, mode, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise LinkRefused(os.path.join(at, name), "a symlink") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise LinkRefused(os.path.join(at, name), _kind(st.st_mode))
    return fd


def read_at(dirfd: int, name: str, limit: int, *, at: str = "") -> bytes:
    """The bytes of a regular file below ``dirfd``; :class:`TooBig` past ``limit``."""
    fd = open_file(dirfd, name, os.O_RDONLY, at=at)
    try:
        if os.fstat(fd).st_size > limit:
            raise TooBig(errno.EFBIG, f"{os.path.join(at, name)} is over {limit} bytes")
        chunks = []
        got = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - got)):
            chunks.append(chunk)
            got += len(chunk)
            if got > limit:  # it grew after the fstat
                raise TooBig(errno.EFBIG, f"{os.path.join(at, name)} is over {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read(path: Path, limit: int) -> bytes:
    """:func:`read_at` for a path in the store's metadata (see :func:`split`)."""
    dirfd, name = open_parent(path)
    try:
        return read_at(dirfd, name, limit, at=str(path.parent))
    finally:
        os.close(dirfd)


def write_atomic_at(
    dirfd: int,
    name: str,
    data: bytes,
    *,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
) -> None:
    """Write ``name`` below ``dirfd``: a unique temp file created ``O_EXCL | O_NOFOLLOW``,
    fsync, then ``renameat`` over ``name`` (a link there is replaced, not followed). As
    root, ``owner`` (uid, gid) owns the new file before it takes the name."""
    for _ in range(100):
        tmp = f".{name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE, 0o600, dir_fd=dirfd)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(errno.EEXIST, f"no free temp name for {name}")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if owner is not None and os.geteuid() == 0:
                os.fchown(handle.fileno(), *owner)
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dirfd)
        raise
    os.fsync(dirfd)


def append_at(dirfd: int, name: str, data: bytes, *, at: str = "") -> int:
    """Append ``data`` to the regular file ``name`` below ``dirfd`` (created if missing);
    the file's size after."""
    fd = open_file(dirfd, name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, at=at)
    try:
        os.write(fd, data)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def remove_at(dirfd: int, name: str) -> bool:
    """Remove ``name`` below ``dirfd`` (a file, a link itself, or a whole tree walked by
    descriptor); False when it was not there."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        _remove_tree(dirfd, name)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dirfd)
    return True


def _remove_tree(dirfd: int, name: str) -> None:
    # shutil.rmtree(dir_fd=) opens subfolders without O_DIRECTORY (a folder swapped for a
    # fifo hangs it) and recurses (a tree 1,500 deep raises RecursionError). Here: one
    # descriptor per level, each folder listed once, and a folder deeper than MAX_DEPTH
    # is moved up beside ``name`` and removed after it, so any depth goes.
    pending = [name]
    while pending:
        _remove_one(dirfd, pending.pop(), pending)


def _remove_one(dirfd: int, name: str, pending: list[str]) -> None:
    try:
        top = os.open(name, _SUB, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        os.unlink(name, dir_fd=dirfd)  # swapped for a link or a file: only it goes
        return
    # (parent descriptor, name in it, descriptor, subfolders not yet removed)
    stack: list[tuple[int, str, int, list[str]]] = []
    try:
        stack.append((dirfd, name, top, _empty_files(top)))
        while stack:
            parent, here, fd, subs = stack[-1]
            if not subs:
                stack.pop()
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(here, dir_fd=parent)
                continue
            sub = subs.pop()
            if len(stack) >= MAX_DEPTH:
                moved = f".{name}.deep-{os.urandom(6).hex()}"
                os.rename(sub, moved, src_dir_fd=fd, dst_dir_fd=dirfd)
                pending.append(moved)
                continue
            try:
                child = os.open(sub, _SUB, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                os.unlink(sub, dir_fd=fd)
                continue
            try:
                stack.append((fd, sub, child, _empty_files(child)))
            except BaseException:
                os.close(child)
                raise
    finally:
        for _, _, fd, _ in stack:
            os.close(fd)


def _empty_files(fd: int) -> list[str]:
    """Unlink every non-folder directly in ``fd``; return its subfolders."""
    dirs, files = _list(fd)
    for file in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file, dir_fd=fd)
    return dirs


def remove_path(path: Path) -> None:
    """Remove the tree at ``path`` (its parent the agent's own, reached by path), as
    :func:`remove_at` does; what cannot be removed is left (callers clean up best-effort,
    the janitor later)."""
    try:
        parent = os.open(path.parent, _DIR)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            remove_at(parent, path.name)
    finally:
        os.close(parent)


def exists_at(dirfd: int, name: str) -> bool:
    """Whether ``name`` is there below ``dirfd`` (a link counts as itself)."""
    try:
        os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError:
        return False
    return True


def subdirs(dirfd: int) -> list[str]:
    """Names of the real folders (not links) directly below ``dirfd``, sorted."""
    with os.scandir(dirfd) as it:
        return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))


def names(dirfd: int) -> list[str]:
    """Every name directly below ``dirfd``, sorted."""
    return sorted(os.listdir(dirfd))


MAX_DEPTH = 256
"""Deepest folder nesting a walk or a removal goes to (one descriptor per level)."""

_SUB = _DIR | os.O_NONBLOCK
# A folder swapped for a fifo after it was listed: O_DIRECTORY refuses it before the open
# could wait for a writer (os.fwalk and shutil.rmtree open subfolders without it).


_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
"""Why a listed folder may fail to open without anything being wrong with the walk."""


class TooDeep(OSError):
    """A tree nested deeper than :data:`MAX_DEPTH`."""

    def __init__(self, where: str) -> None:
        shown = where if len(where) <= 120 else where[:60] + "/.../" + where[-50:]
        super().__init__(errno.ELOOP, f"nested deeper than {MAX_DEPTH} folders", shown)


def _list(fd: int) -> tuple[list[str], list[str]]:
    dirs: list[str] = []
    files: list[str] = []
    with os.scandir(fd) as it:
        for entry in it:
            (dirs if entry.is_dir(follow_symlinks=False) else files).append(entry.name)
    return sorted(dirs), sorted(files)


def walk(dirfd: int) -> Iterator[tuple[str, list[str], list[str], int]]:
    """Top-down below ``dirfd``, like ``os.fwalk`` (relative paths from ``.``; prune by
    editing the folder list), never following links: each folder is opened by descriptor
    with ``O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK`` relative to its parent, so one swapped
    for a link or a fifo after it was listed is skipped, not entered or waited on. Links
    to folders are listed among the files. One descriptor is held per level, at most
    :data:`MAX_DEPTH` (deeper raises :class:`TooDeep`); each yielded descriptor is valid
    until the walk moves on."""
    top = os.dup(dirfd)
    stack: list[tuple[str, int, Iterator[str]]] = [(".", top, iter(()))]
    try:
        dirs, files = _list(top)
        yield ".", dirs, files, top
        stack[-1] = (".", top, iter(list(dirs)))
        while stack:
            rel, fd, pending = stack[-1]
            name = next(pending, None)
            if name is None:
                stack.pop()
                os.close(fd)
                continue
            try:
                child = os.open(name, _SUB, dir_fd=fd)
            except OSError as exc:
                if exc.errno in _GONE:
                    continue  # gone, or no longer a folder: nothing of it is visited
                raise  # EMFILE, EIO: a subtree passed over in silence would go unchecked
            where = os.path.join(rel, name)
            if len(stack) >= MAX_DEPTH:
                os.close(child)
                raise TooDeep(where)
            try:
                dirs, files = _list(child)
            except OSError as exc:
                os.close(child)
                if exc.errno in _GONE:
                    continue
                raise
            stack.append((where, child, iter(())))
            yield where, dirs, files, child
            stack[-1] = (where, child, iter(list(dirs)))
    finally:
        for _, fd, _ in stack:
            os.close(fd)
