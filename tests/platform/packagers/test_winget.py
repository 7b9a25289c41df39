"""winget's module against learn.microsoft.com/windows/package-manager/winget (install,
list, returnCodes)."""

from __future__ import annotations

from pathlib import PureWindowsPath

import pytest

from agent.platform.packagers import base, winget

WINGET = winget.PACKAGER


def test_install_is_one_exact_id_per_run_silent_and_agreeing() -> None:
    commands = WINGET.install_commands(("Git.Git", "Notepad++.Notepad++"), 45)
    # .../winget/install: --id with -e/--exact (the exact, case-sensitive id), -h/--silent
    # (no installer UI), --accept-package-agreements, --accept-source-agreements (no
    # license prompt), --disable-interactivity (no prompts at all). One id per run.
    assert [c.argv for c in commands] == [
        (
            "winget",
            "install",
            "--exact",
            "--id",
            package,
            "--silent",
            "--accept-package-agreements",
            "--accept-source-agreements",
            "--disable-interactivity",
        )
        for package in ("Git.Git", "Notepad++.Notepad++")
    ]
    assert all(c.env == () and c.refresh is None for c in commands)
    # winget keeps its own source index and download cache.
    assert WINGET.refresh_command(45) is None
    argv = ["winget", "install", "--id", "Git.Git"]
    assert WINGET.with_cache(argv, PureWindowsPath("C:/cache")) == base.Cached(argv=tuple(argv))


def test_the_installed_query_is_winget_list_exact_id() -> None:
    [query] = WINGET.installed_queries(("Git.Git",))
    # .../winget/list: "displays a list of the applications currently installed"; --id
    # with -e/--exact. returnCodes: 0x8A150014 NO_APPLICATIONS_FOUND when none matches.
    assert query.argv == (
        "winget",
        "list",
        "--exact",
        "--id",
        "Git.Git",
        "--accept-source-agreements",
        "--disable-interactivity",
    )
    assert WINGET.says_installed(query, 0, "Name  Id       Version\nGit   Git.Git  2.45.2\n")
    assert not WINGET.says_installed(query, 0x8A150014, "No installed package found.\n")
    assert not WINGET.says_installed(query, 0, "")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # returnCodes: 0x8A150014 APPINSTALLER_CLI_ERROR_NO_APPLICATIONS_FOUND.
        (0x8A150014, "no package with id 'Git.Gti'"),
        # 0x8A150068 APPINSTALLER_CLI_ERROR_PACKAGE_IS_PINNED.
        (0x8A150068, "winget pin remove"),
        # 0x8A150102 APPINSTALLER_CLI_ERROR_INSTALL_INSTALL_IN_PROGRESS.
        (0x8A150102, "another installation is in progress"),
        # The same codes as a signed status (-1978335212 is 0x8A150014).
        (-1978335212, "no package with id 'Git.Gti'"),
    ],
)
def test_documented_return_codes_are_explained(code: int, expected: str) -> None:
    message = WINGET.explain(base.Failure("", code, ("Git.Gti",)))
    assert message is not None
    assert expected in message


def test_other_codes_are_left_to_the_output() -> None:
    assert WINGET.explain(base.Failure("", 0x8A150011, ("Git.Git",))) is None
    assert WINGET.succeeded(0)
    assert not WINGET.succeeded(0x8A150014)
