"""Chocolatey's module against docs.chocolatey.org (choco install, choco list)."""

from __future__ import annotations

from pathlib import PureWindowsPath

from agent.platform.packagers import base, choco

CHOCO = choco.PACKAGER


def test_install_confirms_all_prompts_without_progress() -> None:
    # https://docs.chocolatey.org/en-us/choco/commands/install: -y/--yes/--confirm
    # "confirm all prompts", --no-progress "do not show download progress percentages".
    assert CHOCO.install_commands(("git", "nodejs-lts"), 45) == [
        base.InstallCommand(argv=("choco", "install", "-y", "--no-progress", "git", "nodejs-lts"))
    ]
    # choco queries its sources on every install: no refresh, and its own cache.
    assert CHOCO.refresh_command(45) is None
    argv = ["choco", "install", "-y", "git"]
    assert CHOCO.with_cache(argv, PureWindowsPath("C:/cache")) == base.Cached(argv=tuple(argv))


def test_reboot_codes_of_a_successful_install_count_as_success() -> None:
    # choco install, Exit Codes: 0 success, 1641 "success, reboot initiated", 3010
    # "success, reboot required"; -1 or 1 an error.
    assert all(CHOCO.succeeded(code) for code in (0, 1641, 3010))
    assert not any(CHOCO.succeeded(code) for code in (1, -1, 350, 1604))


def test_choco_has_no_installed_query_it_can_trust() -> None:
    # https://docs.chocolatey.org/en-us/choco/commands/list: before 2.0, `choco list`
    # searches the remote sources (installed packages need --local-only, which 2.0
    # removed), so its answer cannot say "installed" on every version: the install runs.
    assert CHOCO.installed_queries(("git", "nodejs-lts")) == []


def test_missing_pending_reboot_and_suspended_are_explained() -> None:
    def explain(output: str, code: int = 1) -> str | None:
        return CHOCO.explain(base.Failure(output, code, ("nosuch",)))

    assert "choco has no package 'nosuch'" in (
        explain("nosuch not installed. The package was not found with the source(s) listed.\n")
        or ""
    )
    # choco install, Reboot Exit Codes: 350 "pending reboot detected, no action has
    # occurred"; 1604 "install suspended, incomplete".
    assert "reboot pending" in (explain("", 350) or "")
    assert "suspended" in (explain("", 1604) or "")
    assert explain("ERROR: something else\n") is None
