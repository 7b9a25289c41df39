"""zypper (openSUSE, SLES): ``zypper install``; ``rpm -q`` says what is installed (see
:mod:`.rpm`).

Sources: zypper(8): global ``--non-interactive``; ``install`` with ``--no-recommends``;
``refresh``; ``addlock``/``removelock`` and the lock file /etc/zypp/locks (locks(5));
EXIT CODES: 0 ok, 7 ZYPPER_EXIT_ZYPP_LOCKED ("the ZYPP library is locked, e.g.
packagekit is running"), 8 ZYPPER_EXIT_ERR_COMMIT, 102 ZYPPER_EXIT_INF_REBOOT_NEEDED
("returned after a successful installation" that needs a reboot), 104
ZYPPER_EXIT_INF_CAP_NOT_FOUND ("any of the arguments does not match any of the
available (or installed) package names"), 106 ZYPPER_EXIT_INF_REPOS_SKIPPED, 107
ZYPPER_EXIT_INF_RPM_SCRIPT_FAILED. zypp.conf(5): libzypp reads ZYPP_LOCK_TIMEOUT
(seconds to wait for the zypp lock; without it a held lock fails at once, and a negative
value waits forever, which the caller refuses).

zypper's package cache is per repository (``keeppackages``), so downloads are not moved
to the shared volume.
"""

from __future__ import annotations

from agent.platform.packagers import base, rpm

ZYPP_LOCKED = 7
ERR_COMMIT = 8
REBOOT_NEEDED = 102
CAP_NOT_FOUND = 104
REPOS_SKIPPED = 106
RPM_SCRIPT_FAILED = 107


class Zypper(base.Packager):
    name = "zypper"
    binary = "zypper"
    oses = ("linux",)
    # "pkg=1.2", "pattern:devel_basis".
    name_chars = ".+-_:=/"
    repository_folders = ("/etc/zypp/repos.d",)
    success_codes = frozenset({0, REBOOT_NEEDED})

    def refresh_command(self, lock_timeout_s: int) -> tuple[str, ...]:
        return ("zypper", "--non-interactive", "refresh")

    def install_commands(
        self, names: tuple[str, ...], lock_timeout_s: int
    ) -> list[base.InstallCommand]:
        return [
            base.InstallCommand(
                argv=("zypper", "--non-interactive", "install", "--no-recommends", *names),
                env=(("ZYPP_LOCK_TIMEOUT", str(lock_timeout_s)),),
                refresh=self.refresh_command(lock_timeout_s),
            )
        ]

    def installed_queries(self, names: tuple[str, ...]) -> list[base.Query]:
        return [rpm.installed_query(names)]

    def says_installed(self, query: base.Query, returncode: int, output: str) -> bool:
        return rpm.says_installed(returncode, output)

    def explain(self, failure: base.Failure) -> str | None:
        code, packages = failure.returncode, ", ".join(failure.packages)
        if code == ZYPP_LOCKED or "System management is locked" in failure.output:
            return (
                "zypper found the zypp library locked by another program (packagekit, "
                "another zypper) for longer than the lock timeout: wait for it to end, or "
                "raise installer.package_lock_timeout_seconds"
            )
        if code == CAP_NOT_FOUND:
            return (
                f"zypper has no package matching {packages}: check the names in the "
                "feature's packages.zypper, and that a repository in /etc/zypp/repos.d on "
                "this host provides them"
            )
        if "Problem:" in failure.output and "locked" in failure.output.lower():
            return (
                f"zypper will not change a locked package for {packages}: see 'zypper "
                "locks' and release it with 'zypper removelock NAME' on this host "
                "(/etc/zypp/locks), or drop it from the feature"
            )
        if code == REPOS_SKIPPED:
            return (
                "zypper skipped a repository that failed to refresh: check the host's "
                "repositories ('zypper refresh --force')"
            )
        if code == RPM_SCRIPT_FAILED:
            return (
                f"zypper installed {packages}, but a package's %post script failed (see "
                "the output below and /var/log/zypp/history)"
            )
        if code == ERR_COMMIT:
            return (
                f"zypper could not commit the installation of {packages} (see the output "
                "below); 'zypper verify' repairs dependency problems"
            )
        return None


PACKAGER = Zypper()
