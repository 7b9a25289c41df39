"""apk's module against apk(8) and apk-info(8) (apk-tools)."""

from __future__ import annotations

from pathlib import PurePosixPath

from agent.platform.packagers import apk, base

APK = apk.PACKAGER
CACHE = PurePosixPath("/volume/packages")


def test_install_fetches_a_current_index_and_waits_for_the_lock() -> None:
    # apk(8) GLOBAL OPTIONS (before the applet): --no-cache "do not use any local cache
    # path", --wait TIME "wait for TIME seconds to get an exclusive repository lock
    # before failing". apk-add(8): add. apk is non-interactive by default.
    assert APK.install_commands(("git", "py3-pip"), 45) == [
        base.InstallCommand(argv=("apk", "--no-cache", "--wait", "45", "add", "git", "py3-pip"))
    ]
    # --no-cache reads a fresh index each run, so nothing to refresh separately.
    assert APK.refresh_command(45) is None


def test_the_shared_cache_replaces_no_cache() -> None:
    cached = APK.with_cache(["apk", "--no-cache", "--wait", "300", "add", "jq"], CACHE)
    # apk(8): --cache-dir CACHEDIR; -U/--update-cache "alias for --cache-max-age 0",
    # i.e. still refresh the index now.
    assert cached.argv == (
        "apk",
        "--cache-dir",
        "/volume/packages/apk",
        "--update-cache",
        "--wait",
        "300",
        "add",
        "jq",
    )
    assert cached.folders == (CACHE / "apk",)
    # A plan's argv without --no-cache is left as it is.
    plain = APK.with_cache(["apk", "add", "jq"], CACHE)
    assert plain == base.Cached(argv=("apk", "add", "jq"))


def test_the_installed_query_is_apk_info_e() -> None:
    [query] = APK.installed_queries(("git", "curl"))
    # apk-info(8): -e/--exists: "the exit status is the number of given packages not
    # installed. Thus, zero (or success) is returned if all named packages are installed".
    assert query.argv == ("apk", "info", "-e", "git", "curl")
    assert APK.says_installed(query, 0, "git\ncurl\n")
    assert not APK.says_installed(query, 1, "git\n")


def test_missing_locked_and_unsatisfiable_are_explained() -> None:
    def explain(output: str) -> str | None:
        return APK.explain(base.Failure(output, 1, ("nosuch",)))

    missing = explain(
        "ERROR: unable to select packages:\n  nosuch (no such package):\n"
        "    required by: world[nosuch]\n"
    )
    assert missing is not None
    assert "apk has no package 'nosuch'" in missing
    # apk(8) FILES: /lib/apk/db/lock; --wait bounds the wait for it.
    locked = explain("ERROR: Unable to lock database: temporary error (try again later)\n")
    assert locked is not None
    assert "/lib/apk/db/lock" in locked
    # apk-world(5): the world's constraints.
    conflict = explain("ERROR: unable to select packages:\n  a-1.0:\n    breaks: world[a<1]\n")
    assert conflict is not None
    assert "/etc/apk/world" in conflict
    assert explain("ERROR: nosuch: IO ERROR\n") is None
