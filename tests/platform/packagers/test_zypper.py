"""zypper's module against zypper(8) and zypp.conf(5)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from agent.platform.packagers import base, zypper

ZYPPER = zypper.PACKAGER


def test_install_is_noninteractive_without_recommends_and_waits_for_the_zypp_lock() -> None:
    [command] = ZYPPER.install_commands(("git", "pattern:devel_basis"), 45)
    # zypper(8): the global --non-interactive goes before the command; install
    # --no-recommends. zypp.conf(5): ZYPP_LOCK_TIMEOUT, seconds to wait for the zypp lock.
    assert command.argv == (
        "zypper",
        "--non-interactive",
        "install",
        "--no-recommends",
        "git",
        "pattern:devel_basis",
    )
    assert command.env == (("ZYPP_LOCK_TIMEOUT", "45"),)


def test_the_refresh_is_zypper_refresh() -> None:
    # zypper(8): refresh (ref) refreshes the repositories' metadata.
    assert ZYPPER.refresh_command(45) == ("zypper", "--non-interactive", "refresh")
    assert ZYPPER.install_commands(("git",), 45)[0].refresh == ZYPPER.refresh_command(45)


def test_its_cache_is_per_repository_so_argv_is_unchanged() -> None:
    # zypper(8) FILES, /var/cache/zypp/packages: kept only for repositories with
    # keeppackages set, so a per-run cache folder would not keep anything.
    argv = ["zypper", "--non-interactive", "install", "jq"]
    assert ZYPPER.with_cache(argv, PurePosixPath("/volume")) == base.Cached(argv=tuple(argv))


def test_the_installed_query_is_rpm_q() -> None:
    # rpm(8) QUERY OPTIONS: zypper installs into the rpm database.
    [query] = ZYPPER.installed_queries(("git",))
    assert query.argv == ("rpm", "--query", "--queryformat", "%{NAME}\\n", "git")
    assert ZYPPER.says_installed(query, 0, "git\n")
    assert not ZYPPER.says_installed(query, 1, "package git is not installed\n")


def test_exit_codes_follow_zypper8() -> None:
    # zypper(8) EXIT CODES: 0 ok; 102 ZYPPER_EXIT_INF_REBOOT_NEEDED "returned after a
    # successful installation"; below 100 an error; 104 nothing matched.
    assert ZYPPER.succeeded(0)
    assert ZYPPER.succeeded(102)
    assert not ZYPPER.succeeded(104)
    assert not ZYPPER.succeeded(7)


@pytest.mark.parametrize(
    ("code", "output", "expected"),
    [
        # 7 ZYPPER_EXIT_ZYPP_LOCKED: "The ZYPP library is locked, e.g. packagekit is running".
        (
            7,
            "System management is locked by the application with pid 42 (zypper).",
            "locked by another program",
        ),
        # 104 ZYPPER_EXIT_INF_CAP_NOT_FOUND: an argument matches no package name.
        (
            104,
            "'nosuch' not found in package names. Trying capabilities.",
            "no package matching nosuch",
        ),
        # locks(5), /etc/zypp/locks; zypper(8) removelock.
        (4, "Problem: the to be installed nosuch-1.0 is locked", "zypper removelock"),
        # 106 ZYPPER_EXIT_INF_REPOS_SKIPPED, 107 ..._RPM_SCRIPT_FAILED, 8 ..._ERR_COMMIT.
        (106, "", "skipped a repository"),
        (107, "", "%post script failed"),
        (8, "", "zypper verify"),
    ],
)
def test_documented_failures_are_explained(code: int, output: str, expected: str) -> None:
    message = ZYPPER.explain(base.Failure(output, code, ("nosuch",)))
    assert message is not None
    assert expected in message


def test_an_unrecognised_failure_is_left_to_the_output() -> None:
    assert ZYPPER.explain(base.Failure("", 1, ("git",))) is None
