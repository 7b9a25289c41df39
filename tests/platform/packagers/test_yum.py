"""yum's module against yum(8) and yum.conf(5)."""

from __future__ import annotations

from pathlib import PurePosixPath

from agent.platform.packagers import base, yum

YUM = yum.PACKAGER
CACHE = PurePosixPath("/volume/packages")


def test_install_assumes_yes() -> None:
    # yum(8): install; -y/--assumeyes. yum has no weak dependencies to skip and no
    # lock-timeout option.
    assert YUM.install_commands(("git", "curl"), 45) == [
        base.InstallCommand(argv=("yum", "install", "-y", "git", "curl"))
    ]
    # yum.conf(5) metadata_expire: yum refreshes expired metadata itself.
    assert YUM.refresh_command(45) is None


def test_downloads_are_kept_in_the_shared_cache() -> None:
    # yum.conf(5) keepcache and cachedir, set per run with yum(8) --setopt.
    cached = YUM.with_cache(["yum", "install", "-y", "jq"], CACHE)
    assert cached.argv == (
        "yum",
        "--setopt=keepcache=True",
        "--setopt=cachedir=/volume/packages/yum",
        "install",
        "-y",
        "jq",
    )
    assert cached.folders == (CACHE / "yum",)


def test_the_installed_query_is_rpm_q() -> None:
    # rpm(8) QUERY OPTIONS, as for dnf: yum installs into the same rpm database.
    [query] = YUM.installed_queries(("git",))
    assert query.argv == ("rpm", "--query", "--queryformat", "%{NAME}\\n", "git")
    assert YUM.says_installed(query, 0, "git\n")
    assert not YUM.says_installed(query, 1, "package git is not installed\n")


def test_yum3_and_dnf_based_messages_are_explained() -> None:
    def explain(output: str) -> str | None:
        return YUM.explain(base.Failure(output, 1, ("nosuch",)))

    assert "yum has no package 'nosuch'" in (
        explain("No package nosuch available.\nError: Nothing to do\n") or ""
    )
    # EL8+: yum is dnf and says what dnf says.
    assert "yum has no package 'nosuch'" in (explain("No match for argument: nosuch\n") or "")
    assert "yum excludes 'nosuch'" in (
        explain("All matches were filtered out by exclude filtering for argument: nosuch\n") or ""
    )
