"""Safe extraction of downloaded archives into an install staging folder.

Policy:
- ``dest`` is the caller's staging folder: it must exist and be empty. Members are
  streamed in archive order (a tar is never listed first), and nothing is ever written
  outside ``dest``. On any error, what was written inside ``dest`` is removed, leaving it
  empty, and the error is raised: :class:`UnsafeArchive` for a hostile or oversized
  archive, :class:`ArchiveError` for a corrupt, truncated or unsupported one;
- refused members: absolute names; ``..`` components (after ``strip_components``); NUL
  or backslashes in names; devices, FIFOs and other special types; setuid, setgid or
  sticky bits; symlinks whose target is absolute, resolves (lexically, from the link's
  own directory) outside ``dest``, or has ``..`` after a name (the kernel resolves
  ``link/..`` through the link, where lexical checks no longer hold); hard links to
  anything but a regular file already extracted; any member whose path runs through a
  symlink or a non-directory (each component is checked with ``lstat``; files are
  created with ``O_EXCL | O_NOFOLLOW``);
- caps (:class:`Limits`): members are counted as they stream and refused at one past
  the limit; declared sizes are summed; bytes are counted as they are written (headers
  are not trusted) and stop at the total cap, or for compressed formats at ``max_ratio``
  times the archive's size, whichever is lower (a compression bomb);
- a tar must end with its end-of-archive block: a missing or damaged header mid-archive
  is corruption, not the end (:mod:`tarfile` would stop there silently);
- modes are sanitised: files 0o755 when any execute bit is set, else 0o644; directories
  0o755; ownership is never changed; file mtimes are kept.

This is blocking code: callers run :func:`extract` in a thread.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, NoReturn, Self

FORMATS = ("tar.gz", "tar.xz", "tar.bz2", "tar", "zip", "binary")
_TarMode = Literal["r|gz", "r|xz", "r|bz2", "r|"]
_TAR_MODES: dict[str, _TarMode] = {"tar.gz": "r|gz", "tar.xz": "r|xz", "tar.bz2": "r|bz2"}
_COMPRESSED = frozenset({"tar.gz", "tar.xz", "tar.bz2", "zip"})
_CHUNK = 1024 * 1024
# Long names and pax records are read whole into memory by tarfile: bound them.
_MAX_EXTENDED_HEADER = 1024 * 1024
_MAX_LINK_TARGET = 4096
_EXTENDED = frozenset((tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE))
_EXTENDED |= {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
_SPECIAL = {tarfile.CHRTYPE: "a device file", tarfile.BLKTYPE: "a device file"}
_SPECIAL[tarfile.FIFOTYPE] = "a FIFO"
# A zero block: the proper end of a tar. (Missing from typeshed.)
_END_OF_ARCHIVE: type[tarfile.HeaderError] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
# What reading a damaged archive raises; writing raises only OSError, never these.
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)


class UnsafeArchive(Exception):
    """The archive was refused: :attr:`member` is hostile or past a limit; :attr:`reason`."""

    def __init__(self, archive: Path, member: str, reason: str) -> None:
        self.archive = archive
        self.member = member
        self.reason = reason
        super().__init__(f"refused {str(archive)!a}: member {member!a} {reason}")


class ArchiveError(Exception):
    """The archive is corrupt, truncated or in an unsupported format."""


@dataclass(frozen=True)
class Limits:
    """Caps on what one archive may put on disk."""

    max_members: int = 100_000
    # Both the sum of declared sizes and the bytes actually written, in bytes.
    max_total_bytes: int = 16 * 1024**3
    # Bytes written over the compressed archive's size; real tool archives are under 20.
    max_ratio: int = 200


@dataclass(frozen=True)
class Extracted:
    """Members extracted (those stripping emptied are not counted) and bytes written."""

    members: int
    bytes: int


def extract(
    archive: Path,
    dest: Path,
    *,
    fmt: str,
    strip_components: int = 0,
    limits: Limits = Limits(),
    merge: tuple[str, ...] = (),
) -> Extracted:
    """Extract ``archive`` in format ``fmt`` into the empty directory ``dest``.

    ``strip_components`` drops leading path components as GNU tar does; members left
    with no name are skipped. ``merge`` names folders (after stripping) whose contents
    are merged into ``dest`` itself, as an installer of components does (Rust's
    rust-installer: ``rustc/bin/rustc`` becomes ``bin/rustc``); members outside them and
    each folder's own ``manifest.in`` are skipped, a later member replaces an earlier one
    of the same path, and a folder the archive lacks is an error. Raises
    :class:`UnsafeArchive`, :class:`ArchiveError`, and :class:`ValueError` when ``dest``
    is not an existing empty directory.
    """
    if fmt not in FORMATS:
        raise ArchiveError(
            f"{str(archive)!a}: unsupported archive format {fmt!a}; "
            f"expected one of: {', '.join(FORMATS)}"
        )
    try:
        if os.listdir(dest):
            raise ValueError(f"{str(dest)!a} is not empty; extract into a fresh staging folder")
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ValueError(f"{str(dest)!a} is not an existing directory") from exc
    size = archive.stat().st_size
    cap, why = limits.max_total_bytes, f"max_total_bytes is {limits.max_total_bytes}"
    if fmt in _COMPRESSED and limits.max_ratio * size < cap:
        cap = limits.max_ratio * size
        why = f"{limits.max_ratio} times the {size}-byte archive: a compression bomb?"
    out = _Writer(archive, dest, strip_components, limits, cap, why, merge=frozenset(merge))
    try:
        if fmt == "binary":
            with archive.open("rb") as src:
                out.file(archive.name, [archive.name], src, 0o755, None)
        elif fmt == "zip":
            _extract_zip(out)
        else:
            _extract_tar(out, _TAR_MODES.get(fmt, "r|"))
    except _READ_ERRORS as exc:
        _empty(dest)
        raise ArchiveError(f"{str(archive)!a} is truncated or corrupt: {exc}") from exc
    except BaseException:
        _empty(dest)
        raise
    if missing := sorted(out.merge - out.merged):
        _empty(dest)
        raise ArchiveError(
            f"{str(archive)!a} has no folder {', '.join(map(ascii, missing))} to merge (after "
            f"stripping {strip_components}); check the manifest's merge list for this version"
        )
    return Extracted(members=out.created, bytes=out.written)


def _empty(dest: Path) -> None:
    # Best effort: the caller discards the staging folder anyway, and the error that
    # brought us here is the one worth raising.
    with contextlib.suppress(OSError):
        for entry in list(os.scandir(dest)):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


# --- tar ------------------------------------------------------------------------------


class _Corrupt(tarfile.ReadError):
    """A damaged header: tarfile would take it for the end of the archive."""


class _StrictTarInfo(tarfile.TarInfo):
    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _EXTENDED and info.size > _MAX_EXTENDED_HEADER:
            raise _Corrupt(f"an extended header of {info.size} bytes; the limit is 1 MiB")
        return info

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tar)
        except _END_OF_ARCHIVE:
            raise
        except tarfile.HeaderError as exc:
            raise _Corrupt(f"{exc} at offset {tar.offset}") from exc


def _extract_tar(out: _Writer, mode: _TarMode) -> None:
    with tarfile.open(out.archive, mode, tarinfo=_StrictTarInfo) as tar:
        while (member := tar.next()) is not None:
            name = member.name
            # tarfile keeps every header read (untyped); streaming has no use for them.
            tar.members.clear()  # type: ignore[attr-defined]
            out.tally(name, member.size if member.isreg() else 0)
            if member.type in _SPECIAL:
                out.refuse(name, f"is {_SPECIAL[member.type]}")
            if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                out.refuse(name, f"has the unsupported type {member.type!a}")
            if (parts := out.check(name, member.mode)) is None:
                continue
            if member.isdir():
                out.directory(name, parts)
            elif member.issym():
                out.symlink(name, parts, member.linkname)
            elif member.islnk():
                out.hardlink(name, parts, member.linkname)
            else:
                src = tar.extractfile(member)
                assert src is not None  # a regular file always has a reader
                out.file(name, parts, src, member.mode, member.mtime)


# --- zip ------------------------------------------------------------------------------


def _extract_zip(out: _Writer) -> None:
    with zipfile.ZipFile(out.archive) as archive:
        infos = archive.infolist()
        for info in infos:  # the central directory is read whole: check before writing
            out.tally(info.filename, info.file_size)
        for info in infos:
            name, mode = info.filename, info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
                out.refuse(name, f"is a special file (mode {oct(mode)})")
            if info.flag_bits & 0x1:
                raise ArchiveError(f"{str(out.archive)!a}: member {name!a} is encrypted")
            if (parts := out.check(name, mode)) is None:
                continue
            if info.is_dir() or kind == stat.S_IFDIR:
                out.directory(name, parts)
                continue
            try:
                src = archive.open(info)
            except NotImplementedError as exc:  # zipfile's word for an unknown compression
                raise ArchiveError(f"{str(out.archive)!a}: member {name!a}: {exc}") from exc
            with src:
                if kind == stat.S_IFLNK:
                    raw = out.read(src, _MAX_LINK_TARGET + 1)
                    if len(raw) > _MAX_LINK_TARGET:
                        out.refuse(name, f"is a symlink longer than {_MAX_LINK_TARGET} bytes")
                    out.symlink(name, parts, os.fsdecode(raw))
                else:
                    mtime = time.mktime((*info.date_time, 0, 0, -1))
                    out.file(name, parts, src, mode, mtime)


# --- writing --------------------------------------------------------------------------


@dataclass
class _Writer:
    """Places members inside ``dest``, checking each against the policy and the caps."""

    archive: Path
    dest: Path
    strip: int
    limits: Limits
    cap: int
    why: str
    seen: int = 0
    declared: int = 0
    written: int = 0
    created: int = 0
    dirs: set[str] = field(default_factory=set)  # relative paths known to be real directories
    files: set[str] = field(default_factory=set)  # regular files extracted: hard link targets
    merge: frozenset[str] = frozenset()  # component folders merged into dest
    merged: set[str] = field(default_factory=set)  # those the archive had

    def refuse(self, name: str, reason: str) -> NoReturn:
        raise UnsafeArchive(self.archive, name, reason)

    def read(self, src: IO[bytes], size: int) -> bytes:
        try:
            return src.read(size)
        except OSError as exc:  # bz2 reports bad data as OSError; this is a read, not a write
            raise ArchiveError(f"{str(self.archive)!a} is truncated or corrupt: {exc}") from exc

    def tally(self, name: str, size: int) -> None:
        """Count a member and its declared size against the limits."""
        self.seen, self.declared = self.seen + 1, self.declared + size
        if self.seen > self.limits.max_members:
            self.refuse(name, f"is past the limit of {self.limits.max_members} members")
        if self.declared > (limit := self.limits.max_total_bytes):
            self.refuse(
                name,
                f"declares {size} bytes, taking the total to {self.declared}; the limit is {limit}",
            )

    def check(self, name: str, mode: int) -> list[str] | None:
        """The member's checked path components; None when stripping leaves nothing."""
        if mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
            self.refuse(name, f"has the setuid, setgid or sticky bit (mode {oct(mode)})")
        if "\\" in name:
            self.refuse(name, "has a backslash in its name")
        return self.parts(name, name)

    def parts(self, name: str, path: str, *, link: bool = False) -> list[str] | None:
        """``path`` split, stripped and checked; None when stripping leaves nothing."""
        which = f"links to {path!a}, which " if link else ""
        if "\0" in path:
            self.refuse(name, f"{which}contains NUL")
        if path.startswith("/"):
            self.refuse(name, f"{which}is an absolute path")
        # "." counts as a component for stripping, as in GNU tar ("./node-v1/bin/node").
        parts = [p for p in path.split("/") if p][self.strip :]
        parts = [p for p in parts if p != "."]
        if ".." in parts:
            self.refuse(name, f"{which}has a '..' component")
        if self.merge and parts:
            if parts[0] not in self.merge:
                return None
            self.merged.add(parts[0])
            parts = parts[1:]
            if parts == ["manifest.in"]:  # the component's own file list
                return None
        return parts or None

    def _place(self, name: str, parts: list[str], *, directory: bool = False) -> Path:
        """Where ``parts`` goes, with its parents made; nothing is left in the way."""
        path = self.dest
        for index, part in enumerate(parts[:-1]):
            path = path / part
            rel = "/".join(parts[: index + 1])
            if rel in self.dirs:
                continue
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o700)
                os.chmod(path, 0o755)  # noqa: S103 - installed tools are read by every runner
            else:
                if stat.S_ISLNK(info.st_mode):
                    self.refuse(name, f"would be written through the symlink {rel!a}")
                if not stat.S_ISDIR(info.st_mode):
                    self.refuse(name, f"would be written inside {rel!a}, which is not a directory")
            self.dirs.add(rel)
        path = path / parts[-1]
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return path
        if stat.S_ISDIR(info.st_mode):
            if directory:
                return path
            self.refuse(name, "would replace a directory")
        os.unlink(path)  # a later member replaces an earlier one, as in tar; never through it
        self.files.discard("/".join(parts))
        return path

    def directory(self, name: str, parts: list[str]) -> None:
        self.created += 1
        if "/".join(parts) in self.dirs:
            return  # made already, and a directory is never replaced
        path = self._place(name, parts, directory=True)
        if not path.is_dir():
            os.mkdir(path, 0o700)
        os.chmod(path, 0o755)  # noqa: S103 - installed tools are read by every runner
        self.dirs.add("/".join(parts))

    def symlink(self, name: str, parts: list[str], target: str) -> None:
        if not target or "\0" in target:
            self.refuse(name, f"is a symlink to {target!a}, an empty or NUL-containing target")
        if target.startswith("/"):
            self.refuse(name, f"is a symlink to the absolute path {target!a}")
        steps = [p for p in target.split("/") if p not in ("", ".")]
        ups = next((i for i, p in enumerate(steps) if p != ".."), len(steps))
        if ".." in steps[ups:]:
            self.refuse(name, f"is a symlink to {target!a}, which has '..' after a name")
        resolved = posixpath.normpath(posixpath.join("/".join(parts[:-1]), target))
        if resolved == ".." or resolved.startswith("../"):
            self.refuse(name, f"is a symlink to {target!a}, which points outside the destination")
        os.symlink(target, self._place(name, parts))
        self.created += 1

    def hardlink(self, name: str, parts: list[str], target: str) -> None:
        rel = "/".join(self.parts(name, target, link=True) or [])
        if rel not in self.files:
            self.refuse(name, f"links to {target!a}, which is not a file extracted before it")
        os.link(self.dest / rel, self._place(name, parts), follow_symlinks=False)
        self.files.add("/".join(parts))
        self.created += 1

    def file(
        self, name: str, parts: list[str], src: IO[bytes], mode: int, mtime: float | None
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(os.open(self._place(name, parts), flags, 0o600), "wb") as dst:
            while chunk := self.read(src, _CHUNK):
                if self.written + len(chunk) > self.cap:
                    self.refuse(name, f"takes the bytes written past {self.cap} ({self.why})")
                self.written += len(chunk)
                dst.write(chunk)
            os.fchmod(dst.fileno(), 0o755 if mode & 0o111 else 0o644)
            if mtime is not None:
                dst.flush()  # a later write would set the mtime again
                with contextlib.suppress(OverflowError, ValueError):  # a nonsense date
                    os.utime(dst.fileno(), (mtime, mtime))
        self.files.add("/".join(parts))
        self.created += 1
