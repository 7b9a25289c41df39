"""Chocolatey (Windows): ``choco install``; ``choco list`` says what is installed.

Sources: docs.chocolatey.org, choco install (``-y``/``--confirm`` "confirm all prompts",
``--no-progress``; Exit Codes: 0 success, 1641 "success, reboot initiated", 3010
"success, reboot required", 350 "pending reboot detected, no action has occurred", 1604
"install suspended, incomplete") and choco list (``-e``/``--exact`` "only return packages
with this exact name", ``-r``/``--limit-output`` "limit the output to essential
information", one ``id|version`` line per package; since Chocolatey 2.0 ``list`` shows
installed packages only).

Chocolatey queries its sources on every install, so there is no refresh, and its
download cache is its own. It installs several packages in one run.
"""

from __future__ import annotations

from agent.platform.packagers import base

REBOOT_INITIATED = 1641
REBOOT_REQUIRED = 3010
PENDING_REBOOT = 350
INSTALL_SUSPENDED = 1604
_NOT_FOUND = "not installed. The package was not found with the source(s) listed"


class Choco(base.Packager):
    name = "choco"
    binary = "choco"
    oses = ("windows",)
    # Dotted ids such as "nodejs.install", "nodejs-lts".
    name_chars = ".+-_"
    success_codes = frozenset({0, REBOOT_INITIATED, REBOOT_REQUIRED})

    def install_commands(
        self, names: tuple[str, ...], lock_timeout_s: int
    ) -> list[base.InstallCommand]:
        return [base.InstallCommand(argv=("choco", "install", "-y", "--no-progress", *names))]

    def installed_queries(self, names: tuple[str, ...]) -> list[base.Query]:
        # None it can trust: before Chocolatey 2.0, ``choco list`` searches the remote
        # sources, so it would call a package that is only published "installed". The
        # install runs instead; choco itself skips what is already there.
        return []

    def says_installed(self, query: base.Query, returncode: int, output: str) -> bool:
        ids = {line.split("|", 1)[0].strip().lower() for line in output.splitlines() if "|" in line}
        return returncode == 0 and all(n.lower() in ids for n in query.names)

    def explain(self, failure: base.Failure) -> str | None:
        missing = [
            line.split(_NOT_FOUND, 1)[0].strip()
            for line in failure.output.splitlines()
            if _NOT_FOUND in line
        ]
        if missing:
            return (
                f"choco has no package {', '.join(repr(m) for m in missing)}: check the id "
                "in the feature's packages.choco, and the sources configured on this host "
                "('choco source list')"
            )
        if failure.returncode == PENDING_REBOOT:
            return "choco found a reboot pending on this host and did nothing: reboot it first"
        if failure.returncode == INSTALL_SUSPENDED:
            return (
                "choco's install was suspended and is incomplete: reboot this host, then "
                "install again"
            )
        return None


PACKAGER = Choco()
