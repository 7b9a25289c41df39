"""apt's module against apt's own documentation, and its installed query against the
real dpkg database of this (Debian) host."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import PurePosixPath

import pytest

from agent.platform.packagers import apt, base

APT = apt.PACKAGER
CACHE = PurePosixPath("/volume/packages")


def test_install_is_noninteractive_without_recommends_and_waits_for_the_dpkg_lock() -> None:
    [command] = APT.install_commands(("git", "curl"), 45)
    # apt-get(8), OPTIONS: -y/--assume-yes "run non-interactively", -q "output suitable
    # for logging, omitting progress indicators", --no-install-recommends, -o sets a
    # configuration item. DPkg::Lock::Timeout: apt.conf(5)'s full list,
    # /usr/share/doc/apt/examples/configure-index ("dpkg::lock::timeout <INT>").
    assert command.argv == (
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=45",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "git",
        "curl",
    )
    # debconf(7): the "noninteractive" frontend never asks. needrestart(1) -r: restart
    # modes (l)ist only, (i)nteractive, (a)utomatic; NEEDRESTART_MODE sets it for a run,
    # and NEEDRESTART_SUSPEND keeps apt's hook from running it at all (its scan floods).
    assert command.env == (
        ("DEBIAN_FRONTEND", "noninteractive"),
        ("NEEDRESTART_MODE", "l"),
        ("NEEDRESTART_SUSPEND", "1"),
    )


def test_the_refresh_is_apt_get_update_with_the_same_lock_wait() -> None:
    # apt-get(8), update: "resynchronize the package index files from their sources".
    assert APT.refresh_command(45) == ("apt-get", "-o", "DPkg::Lock::Timeout=45", "update", "-q")
    assert APT.install_commands(("git",), 45)[0].refresh == APT.refresh_command(45)


def test_downloads_go_to_the_shared_cache() -> None:
    cached = APT.with_cache(["apt-get", "-o", "DPkg::Lock::Timeout=1", "install", "jq"], CACHE)
    # configure-index: Dir::Cache::Archives (where .deb files are kept; apt wants its
    # partial/ folder inside) and APT::Keep-Downloaded-Packages (do not delete them after
    # a successful install). -o must come before the operation (apt-get(8) SYNOPSIS).
    assert cached.argv == (
        "apt-get",
        "-o",
        "Dir::Cache::Archives=/volume/packages/apt/archives/",
        "-o",
        "APT::Keep-Downloaded-Packages=true",
        "-o",
        "DPkg::Lock::Timeout=1",
        "install",
        "jq",
    )
    assert cached.folders == (CACHE / "apt" / "archives" / "partial",)
    assert apt.archives(CACHE) == CACHE / "apt" / "archives"


def test_the_installed_query_reads_dpkgs_status_word() -> None:
    [query] = APT.installed_queries(("git", "curl"))
    # dpkg-query(1): -W/--show with --showformat; db:Status-Status is the package status
    # word ("installed", "config-files", "not-installed", ...). EXIT STATUS 1: some
    # package was not found.
    assert query.argv == (
        "dpkg-query",
        "--show",
        "--showformat=${db:Status-Status}\\n",
        "git",
        "curl",
    )
    assert APT.says_installed(query, 0, "installed\ninstalled\n")
    assert not APT.says_installed(query, 0, "installed\nconfig-files\n")
    assert not APT.says_installed(query, 0, "installed\n")
    assert not APT.says_installed(query, 1, "installed\ndpkg-query: no packages found\n")


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg (Debian/Ubuntu)")
def test_the_installed_query_answers_on_this_host() -> None:
    # dpkg itself is always installed where dpkg-query is; the query needs no root.
    def ask(*names: str) -> bool:
        [query] = APT.installed_queries(names)
        done = subprocess.run(query.argv, capture_output=True, text=True, check=False)
        return APT.says_installed(query, done.returncode, done.stdout + done.stderr)

    assert ask("dpkg")
    assert not ask("dpkg", "runner-agent-no-such-package")
    assert not ask("dpkg=0.0-runner-agent")


def test_locks_index_and_repository_folders() -> None:
    # The fcntl locks apt takes (dpkg's frontend lock, the lists lock), the lists
    # folder apt-get update fills (apt-get(8) FILES: /var/lib/apt/lists/), and
    # sources.list.d plus the keyrings folder of sources.list(5)'s Signed-By.
    assert APT.lock_files == ("/var/lib/dpkg/lock-frontend", "/var/lib/apt/lists/lock")
    assert (APT.index_folder, APT.index_glob) == ("/var/lib/apt/lists", "*_Packages*")
    assert APT.repository_folders == ("/etc/apt/sources.list.d", "/etc/apt/keyrings")
    # apt-get(8) DIAGNOSTICS: zero on normal operation, 100 on error.
    assert APT.succeeded(0)
    assert not APT.succeeded(100)


def test_failed_fetches_are_read_from_update() -> None:
    output = (
        "Hit:1 http://127.0.0.2:8080/debian bookworm InRelease\n"
        "W: Failed to fetch http://127.0.0.1:9/debian/dists/bookworm/InRelease  "
        "Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)\n"
    )
    assert APT.failed_fetches(output) == [
        "http://127.0.0.1:9/debian/dists/bookworm/InRelease (Could not connect to "
        "127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused))"
    ]


def _explain(output: str, *packages: str, fetched: tuple[str, ...] = ()) -> str | None:
    return APT.explain(base.Failure(output, 100, packages, fetched))


def test_a_missing_package_is_named_with_the_fetch_failures() -> None:
    message = _explain("E: Unable to locate package nosuch\n", "nosuch", fetched=("u (why)",))
    assert message is not None
    assert "apt has no package 'nosuch'" in message
    assert "apt-get update could not fetch u (why)" in message
    assert "apt has no package 'x'" in (
        _explain("E: Package 'x' has no installation candidate\n", "x") or ""
    )


def test_held_locked_interrupted_and_unmet_are_explained() -> None:
    # apt-get(8) -y: "changing a held package" aborts; apt-mark(8): hold/unhold.
    held = _explain(
        "The following held packages will be changed:\n  hello\n"
        "E: Held packages were changed and -y was used without --allow-change-held-packages.\n",
        "hello",
    )
    assert held is not None
    assert "held package 'hello'" in held
    assert "apt-mark unhold hello" in held
    locked = _explain(
        "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4321 (apt-get)\n",
        "jq",
    )
    assert locked == (
        "apt could not get /var/lib/dpkg/lock-frontend, held by pid 4321, within the lock "
        "timeout: wait for that package manager run to end, or raise "
        "installer.package_lock_timeout_seconds"
    )
    interrupted = _explain("E: dpkg was interrupted, you must manually run ...\n", "jq")
    assert interrupted is not None
    assert "dpkg --configure -a" in interrupted
    unmet = _explain(
        "The following packages have unmet dependencies:\n jq : Depends: libjq1\n"
        "E: Unable to correct problems, you have held broken packages.\n",
        "jq",
    )
    assert unmet is not None
    assert "apt cannot install jq: unmet dependencies" in unmet
    assert _explain("E: Sub-process /usr/bin/dpkg returned an error code (1)\n", "jq") is None
