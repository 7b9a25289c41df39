"""Homebrew's module against the brew manpage (https://docs.brew.sh/Manpage)."""

from __future__ import annotations

from pathlib import PurePosixPath

from agent.platform.packagers import base, brew

BREW = brew.PACKAGER
ENV = (
    ("HOMEBREW_NO_AUTO_UPDATE", "1"),
    ("HOMEBREW_NO_INSTALL_CLEANUP", "1"),
    ("HOMEBREW_NO_ENV_HINTS", "1"),
)


def test_install_neither_updates_nor_cleans_up() -> None:
    [command] = BREW.install_commands(("git", "python@3.12"), 45)
    # Manpage: install formula; ENVIRONMENT: HOMEBREW_NO_AUTO_UPDATE (no `brew update`
    # before install), HOMEBREW_NO_INSTALL_CLEANUP (no `brew cleanup` after it),
    # HOMEBREW_NO_ENV_HINTS (no hints about these variables). brew never prompts.
    assert command.argv == ("brew", "install", "git", "python@3.12")
    assert command.env == ENV


def test_the_refresh_is_brew_update() -> None:
    # Manpage: update "fetch the newest version of Homebrew and all formulae".
    assert BREW.refresh_command(45) == ("brew", "update")
    assert BREW.install_commands(("git",), 45)[0].refresh == ("brew", "update")


def test_homebrew_keeps_its_own_download_cache() -> None:
    argv = ["brew", "install", "jq"]
    assert BREW.with_cache(argv, PurePosixPath("/volume")) == base.Cached(argv=tuple(argv))


def test_the_installed_query_is_brew_list_versions() -> None:
    [query] = BREW.installed_queries(("git", "hashicorp/tap/terraform"))
    # Manpage: list --versions "show the version number for installed formulae, or only
    # the specified formulae if formula are provided": one "name version" line each.
    assert query.argv == ("brew", "list", "--versions", "git", "hashicorp/tap/terraform")
    assert query.env == ENV
    assert BREW.says_installed(query, 0, "git 2.45.2\nterraform 1.5.7\n")
    assert not BREW.says_installed(query, 0, "git 2.45.2\n")
    assert not BREW.says_installed(query, 1, "git 2.45.2\nError: No such keg\n")


def test_missing_and_pinned_formulae_are_explained() -> None:
    def explain(output: str) -> str | None:
        return BREW.explain(base.Failure(output, 1, ("nosuch",)))

    assert "brew has no formula 'nosuch'" in (
        explain('Warning: No available formula with the name "nosuch".\n') or ""
    )
    # Manpage: pin "pin the specified formula, preventing them from being upgraded";
    # unpin releases it.
    pinned = explain("Error: nosuch is pinned. You must unpin it to reinstall.\n")
    assert pinned is not None
    assert "brew unpin nosuch" in pinned
    assert explain("Error: An exception occurred within a child process\n") is None
