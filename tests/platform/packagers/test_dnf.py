"""dnf's module against dnf(8), dnf.conf(5) and rpm(8)."""

from __future__ import annotations

from pathlib import PurePosixPath

from agent.platform.packagers import base, dnf

DNF = dnf.PACKAGER
CACHE = PurePosixPath("/volume/packages")


def test_install_assumes_yes_and_skips_weak_dependencies() -> None:
    [command] = DNF.install_commands(("git", "gcc-c++"), 45)
    # dnf(8): install; -y/--assumeyes "automatically answer yes for all questions";
    # --setopt=<option>=<value> overrides a configuration option. dnf.conf(5) [main]
    # install_weak_deps: when False, weak dependencies (dnf's recommends) are not
    # installed. dnf has no lock-timeout option: the argv and env carry none.
    assert command == base.InstallCommand(
        argv=("dnf", "install", "-y", "--setopt=install_weak_deps=False", "git", "gcc-c++")
    )


def test_there_is_no_separate_refresh() -> None:
    # dnf.conf(5) metadata_expire: dnf refreshes expired metadata itself before it
    # resolves an install, so a separate `dnf makecache` would add nothing.
    assert DNF.refresh_command(45) is None
    assert DNF.install_commands(("git",), 45)[0].refresh is None


def test_downloads_are_kept_in_the_shared_cache() -> None:
    cached = DNF.with_cache(["dnf", "install", "-y", "jq"], CACHE)
    # dnf.conf(5) [main]: keepcache (keep downloaded packages after a successful
    # install) and cachedir (where metadata and packages are stored), set per run with
    # dnf(8) --setopt, which goes before the command.
    assert cached.argv == (
        "dnf",
        "--setopt=keepcache=True",
        "--setopt=cachedir=/volume/packages/dnf",
        "install",
        "-y",
        "jq",
    )
    assert cached.folders == (CACHE / "dnf",)


def test_the_installed_query_is_rpm_q() -> None:
    [query] = DNF.installed_queries(("git", "curl"))
    # rpm(8), QUERY OPTIONS: -q/--query PACKAGE_NAME queries the installed package;
    # --queryformat picks what is printed; a name that is not installed prints
    # "package NAME is not installed" and fails.
    assert query.argv == ("rpm", "--query", "--queryformat", "%{NAME}\\n", "git", "curl")
    assert DNF.says_installed(query, 0, "git\ncurl\n")
    assert not DNF.says_installed(query, 1, "git\npackage curl is not installed\n")
    assert not DNF.says_installed(query, 0, "package curl is not installed\n")


def test_names_may_be_groups_and_arch_qualified() -> None:
    # dnf(8) SPECIFYING PACKAGES: "@group-spec", "name.arch".
    assert (DNF.leading_chars, DNF.name_chars) == ("@", ".+-_@:/")
    assert DNF.repository_folders == ("/etc/yum.repos.d",)


def _explain(output: str, *packages: str) -> str | None:
    return DNF.explain(base.Failure(output, 1, packages))


def test_missing_and_excluded_packages_are_named() -> None:
    missing = _explain(
        "No match for argument: nosuch\nError: Unable to find a match: nosuch\n", "nosuch"
    )
    assert missing is not None
    assert "dnf has no package 'nosuch'" in missing
    # dnf.conf(5) excludepkgs (and the versionlock plugin, which works through it).
    excluded = _explain(
        "All matches were filtered out by exclude filtering for argument: nginx\n"
        "Error: Unable to find a match: nginx\n",
        "nginx",
    )
    assert excluded is not None
    assert "dnf excludes 'nginx'" in excluded
    assert "versionlock" in excluded
    assert _explain("Error: Transaction test error\n", "jq") is None
