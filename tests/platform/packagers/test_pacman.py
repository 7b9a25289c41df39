"""pacman's module against pacman(8)."""

from __future__ import annotations

from pathlib import PurePosixPath

from agent.platform.packagers import base, pacman

PACMAN = pacman.PACKAGER


def test_install_syncs_without_prompts_and_skips_what_is_up_to_date() -> None:
    # pacman(8): -S/--sync; --noconfirm "bypass any and all 'Are you sure?' messages";
    # --needed "do not reinstall the targets that are already up-to-date".
    assert PACMAN.install_commands(("git", "extra/curl"), 45) == [
        base.InstallCommand(argv=("pacman", "-S", "--noconfirm", "--needed", "git", "extra/curl"))
    ]


def test_there_is_no_refresh_since_sy_alone_is_a_partial_upgrade() -> None:
    # pacman(8) -y/--refresh: refreshing without -u then installing is a partial upgrade,
    # which Arch does not support; -Syu upgrades the whole system.
    assert PACMAN.refresh_command(45) is None
    assert PACMAN.install_commands(("git",), 45)[0].refresh is None


def test_the_cache_is_left_where_pacman_conf_puts_it() -> None:
    argv = ["pacman", "-S", "--noconfirm", "jq"]
    assert PACMAN.with_cache(argv, PurePosixPath("/volume")) == base.Cached(argv=tuple(argv))


def test_the_installed_query_is_pacman_q() -> None:
    [query] = PACMAN.installed_queries(("git", "curl"))
    # pacman(8): -Q/--query "query the package database" for the named packages;
    # "error: package 'curl' was not found" and a non-zero exit when one is not there.
    assert query.argv == ("pacman", "-Q", "git", "curl")
    assert PACMAN.says_installed(query, 0, "git 2.45.2-1\ncurl 8.8.0-1\n")
    assert not PACMAN.says_installed(
        query, 1, "git 2.45.2-1\nerror: package 'curl' was not found\n"
    )


def test_missing_and_locked_are_explained() -> None:
    def explain(output: str) -> str | None:
        return PACMAN.explain(base.Failure(output, 1, ("nosuch",)))

    assert "pacman has no package 'nosuch'" in (explain("error: target not found: nosuch\n") or "")
    # pacman(8) cannot wait for its database lock, db.lck in the database path.
    locked = explain(
        "error: failed to init transaction (unable to lock database)\n"
        "error: could not lock database: File exists\n"
    )
    assert locked is not None
    assert "/var/lib/pacman/db.lck" in locked
    assert explain("error: failed to commit transaction (conflicting files)\n") is None
