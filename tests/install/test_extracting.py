"""Extraction of real archives built here: good ones land, hostile ones are refused clean."""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.install.fetch import extracting

# --- building archives ------------------------------------------------------------------


@dataclass(frozen=True)
class M:
    """One tar member to write."""

    name: str
    data: bytes = b""
    mode: int = 0o644
    type: bytes = tarfile.REGTYPE
    link: str = ""


def d(name: str, mode: int = 0o755) -> M:
    return M(name, mode=mode, type=tarfile.DIRTYPE)


def sym(name: str, target: str) -> M:
    return M(name, mode=0o777, type=tarfile.SYMTYPE, link=target)


def hard(name: str, target: str) -> M:
    return M(name, type=tarfile.LNKTYPE, link=target)


_TAR_WRITE_MODES = {"tar.gz": "w:gz", "tar.xz": "w:xz", "tar.bz2": "w:bz2", "tar": "w"}


def make_tar(path: Path, members: list[M], fmt: str = "tar.gz") -> Path:
    with tarfile.open(path, _TAR_WRITE_MODES[fmt]) as tar:  # type: ignore[call-overload]
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.linkname = m.type, m.mode, m.link
            info.size = len(m.data) if m.type == tarfile.REGTYPE else 0
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(m.data) if info.size else None)
    return path


def make_zip(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    """``(name, data, unix mode with file type)`` entries."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, (2024, 1, 2, 3, 4, 6))
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path


def gzip_bomb(path: Path, size: int) -> Path:
    """A valid tar.gz holding one file of ``size`` zero bytes, built in well under a second.

    After a full flush deflate forgets its window, so one compressed MiB of zeros can be
    repeated as is; only the CRC has to see every byte.
    """
    info = tarfile.TarInfo("zeros")
    info.size = size
    header, chunk, tail = info.tobuf(tarfile.GNU_FORMAT), bytes(1 << 20), bytes(1024)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    with path.open("wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        out.write(comp.compress(header) + comp.flush(zlib.Z_FULL_FLUSH))
        block = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
        crc = zlib.crc32(header)
        for _ in range(size // len(chunk)):
            out.write(block)
            crc = zlib.crc32(chunk, crc)
        out.write(comp.compress(tail) + comp.flush())
        crc = zlib.crc32(tail, crc)
        out.write(struct.pack("<II", crc, (len(header) + size + len(tail)) & 0xFFFFFFFF))
    return path


def many_members(path: Path, names: list[str], mode: int = 0o644) -> Path:
    """A tar.gz of empty members from one patched header (tarfile.addfile takes ~40 µs each).

    A name ending in "/" is a directory.
    """
    template = bytearray(tarfile.TarInfo("x").tobuf(tarfile.USTAR_FORMAT))
    template[0:100], template[148:156] = bytes(100), b" " * 8
    made: dict[str, bytes] = {}
    for text in set(names):
        header = template.copy()
        header[: len(text)] = text.encode()
        header[156] = ord(tarfile.DIRTYPE if text.endswith("/") else tarfile.REGTYPE)
        header[148:155] = b"%06o\0" % sum(header)
        made[text] = bytes(header)
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(b"".join(made[text] for text in names) + bytes(1024))
    return path


# --- the place: <tmp>/archives, <tmp>/scratch/dest, and a sentinel <tmp>/outside ----------


@dataclass
class Place:
    root: Path
    archives: Path
    dest: Path
    outside: Path

    def everything(self) -> set[Path]:
        return {p for p in self.root.rglob("*") if self.archives not in (p, *p.parents)}

    def assert_clean(self) -> None:
        """Nothing written anywhere: dest is empty, the sentinel untouched."""
        assert list(self.dest.iterdir()) == []
        assert self.everything() == {
            self.dest.parent,
            self.dest,
            self.outside,
            self.outside / "passwd",
        }
        assert (self.outside / "passwd").read_text() == "root:x:0:0\n"


@pytest.fixture
def place(tmp_path: Path) -> Place:
    p = Place(tmp_path, tmp_path / "archives", tmp_path / "scratch" / "dest", tmp_path / "outside")
    for folder in (p.archives, p.dest, p.outside):
        folder.mkdir(parents=True)
    (p.outside / "passwd").write_text("root:x:0:0\n")
    return p


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --- archives that extract --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.xz", "tar.bz2", "tar"])
def test_a_tool_tarball_lands_with_modes_and_a_relative_symlink(place: Place, fmt: str) -> None:
    archive = make_tar(
        place.archives / f"tool.{fmt}",
        [
            d("pkg/"),
            d("pkg/bin/", 0o775),
            M("pkg/bin/tool", b"#!/bin/sh\necho hi\n", 0o775),
            M("pkg/README", b"read me\n", 0o666),
            sym("pkg/bin/alias", "tool"),
            M("pkg/share/doc/x", b"x"),  # parents never listed are made
            sym("pkg/share/readme", "../README"),
        ],
        fmt,
    )
    done = extracting.extract(archive, place.dest, fmt=fmt)
    pkg = place.dest / "pkg"
    assert done == extracting.Extracted(members=7, bytes=18 + 8 + 1)
    assert (pkg / "bin" / "tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert mode_of(pkg / "bin" / "tool") == 0o755
    assert mode_of(pkg / "README") == 0o644
    assert mode_of(pkg / "bin") == mode_of(pkg / "share" / "doc") == 0o755
    assert os.readlink(pkg / "bin" / "alias") == "tool"
    assert (pkg / "share" / "readme").read_text() == "read me\n"
    assert (pkg / "bin" / "tool").stat().st_mtime == 1_700_000_000


def test_strip_components_drops_the_top_folder_like_gnu_tar(place: Place) -> None:
    archive = make_tar(
        place.archives / "node.tar.gz",
        [
            d("node-v20.11.1-linux-x64/"),  # empty once stripped: skipped
            d("node-v20.11.1-linux-x64/bin/"),
            M("node-v20.11.1-linux-x64/bin/node", b"\x7fELF", 0o755),
            sym("node-v20.11.1-linux-x64/bin/npm", "../lib/npm-cli.js"),
            M("node-v20.11.1-linux-x64/lib/npm-cli.js", b"js"),
        ],
    )
    done = extracting.extract(archive, place.dest, fmt="tar.gz", strip_components=1)
    assert sorted(p.name for p in place.dest.iterdir()) == ["bin", "lib"]
    assert mode_of(place.dest / "bin" / "node") == 0o755
    assert (place.dest / "bin" / "npm").read_text() == "js"
    assert done.members == 4


def test_a_leading_dot_counts_as_a_component_when_stripping(place: Place) -> None:
    archive = make_tar(place.archives / "dot.tar", [M("./tool-1.0/bin/tool", b"t", 0o755)], "tar")
    extracting.extract(archive, place.dest, fmt="tar", strip_components=2)
    assert (place.dest / "bin" / "tool").read_bytes() == b"t"


def test_a_hard_link_to_an_earlier_file_is_kept(place: Place) -> None:
    archive = make_tar(place.archives / "h.tar.gz", [M("a", b"same"), hard("b", "a")])
    extracting.extract(archive, place.dest, fmt="tar.gz")
    assert os.path.samefile(place.dest / "a", place.dest / "b")


def test_a_later_member_replaces_an_earlier_symlink_instead_of_writing_through_it(
    place: Place,
) -> None:
    archive = make_tar(
        place.archives / "dup.tar.gz", [M("real", b"original"), sym("f", "real"), M("f", b"new")]
    )
    extracting.extract(archive, place.dest, fmt="tar.gz")
    assert (place.dest / "real").read_bytes() == b"original"
    assert not (place.dest / "f").is_symlink()
    assert (place.dest / "f").read_bytes() == b"new"


def test_a_zip_lands_with_modes_and_a_symlink(place: Place) -> None:
    archive = make_zip(
        place.archives / "tool.zip",
        [
            ("tool/", b"", stat.S_IFDIR | 0o755),
            ("tool/run", b"#!/bin/sh\n", stat.S_IFREG | 0o755),
            ("tool/data.txt", b"data", stat.S_IFREG | 0o600),
            ("tool/plain", b"made on windows", 0),
            ("tool/alias", b"run", stat.S_IFLNK | 0o777),
        ],
    )
    done = extracting.extract(archive, place.dest, fmt="zip", strip_components=1)
    assert done.members == 4
    assert mode_of(place.dest / "run") == 0o755
    assert mode_of(place.dest / "data.txt") == mode_of(place.dest / "plain") == 0o644
    assert os.readlink(place.dest / "alias") == "run"


def test_a_binary_download_is_the_tool_itself(place: Place) -> None:
    archive = place.archives / "jq-linux-amd64"
    archive.write_bytes(b"\x7fELF" + bytes(100))
    done = extracting.extract(archive, place.dest, fmt="binary")
    assert done == extracting.Extracted(members=1, bytes=104)
    assert mode_of(place.dest / "jq-linux-amd64") == 0o755


# --- hostile archives: refused, named, nothing left anywhere -----------------------------

HOSTILE: dict[str, tuple[Callable[[Place], list[M]], str, str]] = {
    # case: (members after a harmless first file, the refused member, the reason)
    "path traversal": (lambda p: [M("../../evil", b"x")], "../../evil", "has a '..' component"),
    "absolute path": (
        lambda p: [M(f"{p.outside}/evil", b"x")],
        "{outside}/evil",
        "is an absolute path",
    ),
    "symlink escaping, then written through": (
        lambda p: [sym("link", "../../outside"), M("link/pwned", b"x")],
        "link",
        "is a symlink to '../../outside', which points outside the destination",
    ),
    "absolute symlink": (lambda p: [sym("link", "/etc")], "link", "absolute path '/etc'"),
    "write through an inner symlink": (
        lambda p: [d("sub/"), sym("link", "sub"), M("link/pwned", b"x")],
        "link/pwned",
        "would be written through the symlink 'link'",
    ),
    "'..' through a symlink": (
        lambda p: [sym("a", "."), sym("b", "a/../outside")],
        "b",
        "is a symlink to 'a/../outside', which has '..' after a name",
    ),
    "hard link to /etc/passwd": (
        lambda p: [hard("passwd", f"{p.outside}/passwd")],
        "passwd",
        "links to '{outside}/passwd', which is an absolute path",
    ),
    "hard link out by '..'": (
        lambda p: [hard("passwd", "../../outside/passwd")],
        "passwd",
        "links to '../../outside/passwd', which has a '..' component",
    ),
    "hard link to a later member": (
        lambda p: [hard("b", "later"), M("later", b"x")],
        "b",
        "links to 'later', which is not a file extracted before it",
    ),
    "character device": (
        lambda p: [M("null", type=tarfile.CHRTYPE)],
        "null",
        "is a device file",
    ),
    "block device": (lambda p: [M("sda", type=tarfile.BLKTYPE)], "sda", "is a device file"),
    "FIFO": (lambda p: [M("pipe", type=tarfile.FIFOTYPE)], "pipe", "is a FIFO"),
    "setuid file": (
        lambda p: [M("su", b"x", 0o4755)],
        "su",
        "has the setuid, setgid or sticky bit (mode 0o4755)",
    ),
    "setgid directory": (lambda p: [d("g/", 0o2755)], "g", "setgid"),
    "sticky directory": (lambda p: [d("t/", 0o1777)], "t", "sticky"),
    "backslash": (lambda p: [M("..\\evil", b"x")], "..\\evil", "has a backslash in its name"),
    "file over a directory": (
        lambda p: [d("dir/"), M("dir", b"x")],
        "dir",
        "would replace a directory",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_tar_is_refused_naming_the_member(place: Place, case: str) -> None:
    members, member, reason = HOSTILE[case]
    member, reason = (s.replace("{outside}", str(place.outside)) for s in (member, reason))
    archive = make_tar(place.archives / "hostile.tar.gz", [M("harmless", b"ok"), *members(place)])
    with pytest.raises(extracting.UnsafeArchive) as caught:
        extracting.extract(archive, place.dest, fmt="tar.gz")
    assert caught.value.member == member
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"refused {str(archive)!a}: member {member!a} ")
    place.assert_clean()


def test_the_refusal_message_escapes_the_member_name(place: Place) -> None:
    archive = make_tar(place.archives / "esc.tar.gz", [M("../\x1b[31mred\n", b"x")])
    with pytest.raises(extracting.UnsafeArchive) as caught:
        extracting.extract(archive, place.dest, fmt="tar.gz")
    assert str(caught.value) == (
        f"refused {str(archive)!a}: member '../\\x1b[31mred\\n' has a '..' component"
    )


def test_a_zip_with_traversal_or_an_escaping_symlink_is_refused(place: Place) -> None:
    for name, data, mode, reason in [
        ("../../evil", b"x", stat.S_IFREG | 0o644, "has a '..' component"),
        ("link", b"../../outside", stat.S_IFLNK | 0o777, "points outside the destination"),
        ("fifo", b"", stat.S_IFIFO | 0o644, "is a special file"),
        ("su", b"x", stat.S_IFREG | 0o4755, "setuid"),
    ]:
        archive = make_zip(place.archives / f"{name}.zip", [("ok", b"ok", 0), (name, data, mode)])
        with pytest.raises(extracting.UnsafeArchive, match=reason):
            extracting.extract(archive, place.dest, fmt="zip")
        place.assert_clean()


def test_a_gzip_bomb_is_refused_long_before_it_is_written(place: Place) -> None:
    archive = gzip_bomb(place.archives / "bomb.tar.gz", 1 << 30)
    assert archive.stat().st_size < 2 << 20
    with pytest.raises(extracting.UnsafeArchive, match="a compression bomb") as caught:
        extracting.extract(
            archive, place.dest, fmt="tar.gz", limits=extracting.Limits(max_ratio=50)
        )
    assert caught.value.member == "zeros"
    assert f"past {50 * archive.stat().st_size} " in caught.value.reason
    place.assert_clean()


def test_a_zip_bomb_is_refused_by_the_bytes_written(place: Place) -> None:
    archive = place.archives / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb:
        bomb.writestr("zeros", bytes(32 << 20))
    with pytest.raises(extracting.UnsafeArchive, match="a compression bomb"):
        extracting.extract(archive, place.dest, fmt="zip")
    place.assert_clean()


def test_declared_sizes_over_the_total_are_refused_before_writing(place: Place) -> None:
    archive = make_tar(place.archives / "big.tar", [M("a", bytes(600)), M("b", bytes(600))], "tar")
    limits = extracting.Limits(max_total_bytes=1000)
    with pytest.raises(
        extracting.UnsafeArchive, match="declares 600 bytes, taking the total to 1200"
    ):
        extracting.extract(archive, place.dest, fmt="tar", limits=limits)
    place.assert_clean()


def test_bytes_written_stop_at_the_total(place: Place) -> None:
    archive = place.archives / "tool"
    archive.write_bytes(bytes(5000))
    with pytest.raises(extracting.UnsafeArchive, match="past 1000 \\(max_total_bytes is 1000\\)"):
        extracting.extract(
            archive, place.dest, fmt="binary", limits=extracting.Limits(max_total_bytes=1000)
        )
    place.assert_clean()


def test_too_many_members_are_refused_at_one_past_the_limit(place: Place) -> None:
    # Every member counts, and the count stops the stream: the archive's last tenth is cut
    # off, which reading to the end would report as corruption instead. Most members are
    # one directory again and again: this test is about the count, and creating 100,000
    # files takes ~8 s on a slow disk (those limits are the caller's to tune).
    names = ["f0", "f1", *(["d/"] * 199_997), "f2"]
    archive = many_members(place.archives / "many.tar.gz", names)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 9 // 10])
    with pytest.raises(extracting.UnsafeArchive) as caught:
        extracting.extract(archive, place.dest, fmt="tar.gz")
    assert (caught.value.member, caught.value.reason) == (
        "d",
        "is past the limit of 100000 members",
    )
    place.assert_clean()


def test_many_small_files_extract_and_count(place: Place) -> None:
    archive = many_members(place.archives / "small.tar.gz", [f"f{i}" for i in range(500)])
    done = extracting.extract(archive, place.dest, fmt="tar.gz")
    assert done == extracting.Extracted(members=500, bytes=0)
    assert len(list(place.dest.iterdir())) == 500


# --- broken archives and bad calls ------------------------------------------------------


def test_a_truncated_tar_gz_is_an_archive_error(place: Place) -> None:
    archive = make_tar(
        place.archives / "cut.tar.gz", [M(f"f{i}", os.urandom(4096)) for i in range(20)]
    )
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(extracting.ArchiveError, match="is truncated or corrupt"):
        extracting.extract(archive, place.dest, fmt="tar.gz")
    place.assert_clean()


def test_a_tar_cut_at_a_member_boundary_is_not_taken_for_its_end(place: Place) -> None:
    archive = make_tar(place.archives / "cut.tar", [M("a", b"a"), M("b", b"b")], "tar")
    archive.write_bytes(archive.read_bytes()[:1024])  # "a" whole, then nothing
    with pytest.raises(extracting.ArchiveError, match="is truncated or corrupt"):
        extracting.extract(archive, place.dest, fmt="tar")
    place.assert_clean()


def test_a_damaged_header_mid_archive_is_not_taken_for_its_end(place: Place) -> None:
    archive = make_tar(place.archives / "bad.tar", [M("a", b"a"), M("b", b"b")], "tar")
    raw = bytearray(archive.read_bytes())
    raw[1024 + 10] ^= 0xFF  # a byte of b's name: its checksum no longer matches
    archive.write_bytes(bytes(raw))
    with pytest.raises(extracting.ArchiveError, match="bad checksum"):
        extracting.extract(archive, place.dest, fmt="tar")
    place.assert_clean()


def test_a_huge_pax_header_is_refused_unread(place: Place) -> None:
    archive = place.archives / "pax.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a")
        info.pax_headers = {"comment": "x" * (2 << 20)}
        tar.addfile(info)
    with pytest.raises(extracting.ArchiveError, match="an extended header of"):
        extracting.extract(archive, place.dest, fmt="tar")


def test_a_truncated_zip_is_an_archive_error(place: Place) -> None:
    archive = make_zip(place.archives / "cut.zip", [("a", os.urandom(8192), 0)])
    archive.write_bytes(archive.read_bytes()[:4000])
    with pytest.raises(extracting.ArchiveError, match="is truncated or corrupt"):
        extracting.extract(archive, place.dest, fmt="zip")


def test_the_wrong_format_is_an_archive_error(place: Place) -> None:
    archive = make_zip(place.archives / "tool.zip", [("a", b"a", 0)])
    with pytest.raises(extracting.ArchiveError, match="is truncated or corrupt: not a gzip file"):
        extracting.extract(archive, place.dest, fmt="tar.gz")


def test_an_unknown_format_is_an_archive_error_listing_the_known(place: Place) -> None:
    archive = place.archives / "tool.rar"
    archive.write_bytes(b"Rar!")
    with pytest.raises(extracting.ArchiveError) as caught:
        extracting.extract(archive, place.dest, fmt="rar")
    assert "unsupported archive format 'rar'" in str(caught.value)
    assert "tar.gz, tar.xz, tar.bz2, tar, zip, binary" in str(caught.value)


def test_dest_must_be_an_existing_empty_directory(place: Place) -> None:
    archive = make_tar(place.archives / "a.tar.gz", [M("a", b"a")])
    with pytest.raises(ValueError, match="is not an existing directory"):
        extracting.extract(archive, place.root / "missing", fmt="tar.gz")
    (place.dest / "left-over").write_text("x")
    with pytest.raises(ValueError, match="is not empty"):
        extracting.extract(archive, place.dest, fmt="tar.gz")
    assert (place.dest / "left-over").read_text() == "x"


def test_the_default_limits() -> None:
    limits = extracting.Limits()
    assert (limits.max_members, limits.max_total_bytes, limits.max_ratio) == (
        100_000,
        16 * 1024**3,
        200,
    )


# --- merging component folders (Rust's rust-installer layout) ----------------------------

RUST = [
    d("rust-1.92.0-x86_64-unknown-linux-gnu"),
    M("rust-1.92.0-x86_64-unknown-linux-gnu/install.sh", b"#!/bin/sh\n", 0o755),
    M("rust-1.92.0-x86_64-unknown-linux-gnu/components", b"rustc\ncargo\nrust-docs\n"),
    M("rust-1.92.0-x86_64-unknown-linux-gnu/rustc/manifest.in", b"file:bin/rustc\n"),
    M("rust-1.92.0-x86_64-unknown-linux-gnu/rustc/bin/rustc", b"rustc", 0o755),
    M("rust-1.92.0-x86_64-unknown-linux-gnu/rustc/lib/librustc_driver.so", b"so"),
    M("rust-1.92.0-x86_64-unknown-linux-gnu/cargo/manifest.in", b"file:bin/cargo\n"),
    M("rust-1.92.0-x86_64-unknown-linux-gnu/cargo/bin/cargo", b"cargo", 0o755),
    M("rust-1.92.0-x86_64-unknown-linux-gnu/rust-docs/share/doc/index.html", b"docs"),
]


def tree_of(dest: Path) -> dict[str, bytes]:
    return {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


def test_merge_lays_the_named_component_folders_into_the_root(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "rust.tar.gz", RUST)
    dest = tmp_path / "out"
    dest.mkdir()
    extracting.extract(archive, dest, fmt="tar.gz", strip_components=1, merge=("rustc", "cargo"))
    assert tree_of(dest) == {
        "bin/rustc": b"rustc",
        "lib/librustc_driver.so": b"so",
        "bin/cargo": b"cargo",
    }
    assert os.access(dest / "bin" / "cargo", os.X_OK)


def test_a_folder_to_merge_that_the_archive_lacks_is_an_error_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    archive = make_tar(tmp_path / "rust.tar.gz", RUST)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(extracting.ArchiveError, match="has no folder 'clippy-preview' to merge"):
        extracting.extract(
            archive, dest, fmt="tar.gz", strip_components=1, merge=("rustc", "clippy-preview")
        )
    assert list(dest.iterdir()) == []


def test_merge_keeps_the_member_checks(tmp_path: Path) -> None:
    hostile = [*RUST[:5], M("rust-1.92.0-x86_64-unknown-linux-gnu/rustc/../../etc/x", b"x")]
    archive = make_tar(tmp_path / "rust.tar.gz", hostile)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(extracting.UnsafeArchive, match=r"'\.\.' component"):
        extracting.extract(archive, dest, fmt="tar.gz", strip_components=1, merge=("rustc",))
    assert list(dest.iterdir()) == []
