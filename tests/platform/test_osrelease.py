"""os-release parsing, families and the package manager each family gets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.platform import model, osrelease, packagers
from tests.platform import osrelease_samples as samples

# sample, ID, ID_LIKE, VERSION_ID, family, manager_for
CASES = [
    (samples.UBUNTU_22_04, "ubuntu", ("debian",), "22.04", "debian", "apt"),
    (samples.UBUNTU_24_04, "ubuntu", ("debian",), "24.04", "debian", "apt"),
    (samples.DEBIAN_12, "debian", (), "12", "debian", "apt"),
    (samples.RHEL_9, "rhel", ("fedora",), "9.4", "rhel", "dnf"),
    (samples.CENTOS_7, "centos", ("rhel", "fedora"), "7", "rhel", "yum"),
    (samples.ROCKY_9, "rocky", ("rhel", "centos", "fedora"), "9.3", "rhel", "dnf"),
    (samples.ALMALINUX_9, "almalinux", ("rhel", "centos", "fedora"), "9.4", "rhel", "dnf"),
    (samples.FEDORA_40, "fedora", (), "40", "fedora", "dnf"),
    (samples.AMAZON_LINUX_2, "amzn", ("centos", "rhel", "fedora"), "2", "amazon", "yum"),
    (samples.AMAZON_LINUX_2023, "amzn", ("fedora",), "2023", "amazon", "dnf"),
    (samples.ALPINE_3_20, "alpine", (), "3.20.3", "alpine", "apk"),
    (samples.OPENSUSE_LEAP_15_6, "opensuse-leap", ("suse", "opensuse"), "15.6", "suse", "zypper"),
    (
        samples.OPENSUSE_TUMBLEWEED,
        "opensuse-tumbleweed",
        ("opensuse", "suse"),
        "20240801",
        "suse",
        "zypper",
    ),
    (samples.SLES_15, "sles", ("suse",), "15.6", "suse", "zypper"),
    (samples.ARCH, "arch", (), None, "arch", "pacman"),
    (samples.LINUX_MINT_21, "linuxmint", ("ubuntu", "debian"), "21.3", "debian", "apt"),
]
IDS = [case[1] + "-" + (case[3] or "rolling") for case in CASES]


@pytest.mark.parametrize(
    ("text", "id_", "id_like", "version_id", "family", "manager"), CASES, ids=IDS
)
def test_each_distribution_sample_parses_to_its_id_family_and_manager(
    text: str,
    id_: str,
    id_like: tuple[str, ...],
    version_id: str | None,
    family: str,
    manager: str,
) -> None:
    osr = osrelease.parse_os_release(text)
    assert (osr.id, osr.id_like, osr.version_id) == (id_, id_like, version_id)
    assert osrelease.family(osr) == family
    assert packagers.manager_for(family, os="linux", version_id=osr.version_id) == manager


def test_names_and_codenames_are_parsed_with_their_spaces() -> None:
    osr = osrelease.parse_os_release(samples.UBUNTU_24_04)
    assert osr.name == "Ubuntu"
    assert osr.pretty_name == "Ubuntu 24.04.1 LTS"
    assert osr.version_codename == "noble"
    assert osr.values["UBUNTU_CODENAME"] == "noble"


def test_an_empty_value_counts_as_absent_for_the_named_fields() -> None:
    osr = osrelease.parse_os_release(samples.FEDORA_40)
    assert osr.version_codename is None
    assert osr.values["VERSION_CODENAME"] == ""


def test_comment_lines_are_skipped_even_when_they_look_like_assignments() -> None:
    osr = osrelease.parse_os_release(samples.OPENSUSE_TUMBLEWEED)
    assert "VERSION" not in osr.values
    assert osr.values["CPE_NAME"] == "cpe:2.3:o:opensuse:tumbleweed:20240801:*:*:*:*:*:*:*"


def test_an_empty_file_gets_the_defaults_the_manual_page_gives() -> None:
    osr = osrelease.parse_os_release("")
    assert osr == osrelease.OsRelease()
    assert (osr.id, osr.name, osr.pretty_name, osr.version_id) == ("linux", "Linux", "Linux", None)
    assert osrelease.family(osr) == "unknown"


def test_double_quotes_honour_the_shell_escapes_and_keep_other_backslashes() -> None:
    text = r'''PRETTY_NAME="a \"quoted\" \\ \$HOME \`cmd\` \n end"'''
    osr = osrelease.parse_os_release(text)
    assert osr.pretty_name == r'a "quoted" \ $HOME `cmd` \n end'


def test_single_quotes_are_literal() -> None:
    osr = osrelease.parse_os_release(r"""NAME='Tux \"Linux\" $x'""")
    assert osr.name == r"Tux \"Linux\" $x"


def test_an_unquoted_value_takes_backslash_escapes() -> None:
    assert osrelease.parse_os_release(r"NAME=Tux\ Linux").name == "Tux Linux"


@pytest.mark.parametrize(
    "line",
    [
        "NAME=Tux Linux",
        'NAME="unterminated',
        "NAME='unterminated",
        'NAME="closed"trailing',
        "NAME=$(reboot)",
        "NAME=`reboot`",
        "NAME=a;b",
        "no assignment here",
        "1NAME=digit first",
        "NAME =spaced key",
        "export NAME=exported",
    ],
)
def test_a_line_that_is_not_a_plain_assignment_is_skipped(line: str) -> None:
    osr = osrelease.parse_os_release(f"ID=debian\n{line}\nVERSION_ID=12\n")
    assert (osr.id, osr.version_id, osr.name) == ("debian", "12", "Linux")


def test_windows_line_endings_and_blank_lines_are_tolerated() -> None:
    osr = osrelease.parse_os_release('ID=alpine\r\n\r\n   \r\nVERSION_ID="3.20.3"\r\n')
    assert (osr.id, osr.version_id) == ("alpine", "3.20.3")


def test_a_later_assignment_wins() -> None:
    assert osrelease.parse_os_release("ID=debian\nID=ubuntu\n").id == "ubuntu"


def test_the_raw_values_cannot_be_changed() -> None:
    osr = osrelease.parse_os_release(samples.DEBIAN_12)
    with pytest.raises(TypeError):
        osr.values["ID"] = "ubuntu"  # type: ignore[index]
    assert hash(osr) == hash(osrelease.parse_os_release(samples.DEBIAN_12))


# Every character but the line end survives double quoting with the shell's escapes.
@given(st.text(alphabet=st.characters(exclude_characters="\n")))
def test_any_double_quoted_value_round_trips(value: str) -> None:
    escaped = "".join("\\" + c if c in '"\\$`' else c for c in value)
    assert osrelease.parse_os_release(f'PRETTY_NAME="{escaped}"').values["PRETTY_NAME"] == value


@pytest.mark.parametrize(
    ("text", "family"),
    [
        ("ID=manjaro\nID_LIKE=arch", "arch"),
        ("ID=endeavouros\nID_LIKE=arch", "arch"),
        ("ID=cachyos\nID_LIKE=arch", "arch"),
        ('ID=pop\nID_LIKE="ubuntu debian"', "debian"),
        ('ID="ol"\nID_LIKE="fedora"', "rhel"),
        ('ID=nobara\nID_LIKE="fedora"', "rhel"),
        ("ID=postmarketos\nID_LIKE=alpine", "alpine"),
        ("ID=sled\nID_LIKE=suse", "suse"),
        ("ID=Ubuntu", "debian"),
        ('ID=somedistro\nID_LIKE="haiku debian"', "debian"),
        ('ID=nixos\nVERSION_ID="24.05"', "unknown"),
        ('ID=serenity\nID_LIKE="haiku plan9"', "unknown"),
    ],
)
def test_the_family_comes_from_the_id_then_the_closest_known_relative(
    text: str, family: str
) -> None:
    assert osrelease.family(osrelease.parse_os_release(text)) == family


def test_the_first_existing_file_is_read(tmp_path: Path) -> None:
    etc = tmp_path / "etc-os-release"
    usr = tmp_path / "usr-os-release"
    usr.write_text(samples.DEBIAN_12)
    assert osrelease.read_os_release(paths=(etc, usr)) == osrelease.parse_os_release(
        samples.DEBIAN_12
    )
    etc.write_text(samples.ALPINE_3_20)
    osr = osrelease.read_os_release(paths=(etc, usr))
    assert osr is not None
    assert osr.id == "alpine"


def test_no_file_at_all_reads_as_none(tmp_path: Path) -> None:
    assert osrelease.read_os_release(paths=(tmp_path / "a", tmp_path / "b" / "c")) is None


def test_a_stray_byte_does_not_hide_the_id(tmp_path: Path) -> None:
    path = tmp_path / "os-release"
    path.write_bytes(b'PRETTY_NAME="Caf\xe9 Linux"\nID=debian\n')
    osr = osrelease.read_os_release(paths=(path,))
    assert osr is not None
    assert osr.id == "debian"
    assert osr.pretty_name == "Caf\ufffd Linux"


def test_families_and_platforms_share_their_spellings() -> None:
    # The families listed here are exactly the ones manager_for knows.
    for family in ("debian", "rhel", "fedora", "amazon", "alpine", "suse", "arch"):
        assert packagers.manager_for(family, os="linux") in model.PACKAGE_MANAGERS
    assert packagers.manager_for("unknown", os="linux") is None
