"""winget (Windows): ``winget install``, one id per run; ``winget list`` says what is
installed.

Sources: learn.microsoft.com/windows/package-manager/winget/install (``--id``,
``-e``/``--exact``, ``-h``/``--silent``, ``--accept-package-agreements``,
``--accept-source-agreements``, ``--disable-interactivity``), .../winget/list (``--id``,
``-e``/``--exact``: installed packages only) and .../winget/returnCodes:
0x8A150014 APPINSTALLER_CLI_ERROR_NO_APPLICATIONS_FOUND "No packages found",
0x8A150068 APPINSTALLER_CLI_ERROR_PACKAGE_IS_PINNED "The package has a pin that
prevents upgrade", 0x8A150102 APPINSTALLER_CLI_ERROR_INSTALL_INSTALL_IN_PROGRESS
"Another installation is already in progress".

winget fetches its source index as needed, so there is no refresh; it keeps its own
download cache.
"""

from __future__ import annotations

from agent.platform.packagers import base

NO_APPLICATIONS_FOUND = 0x8A150014
PACKAGE_IS_PINNED = 0x8A150068
INSTALL_IN_PROGRESS = 0x8A150102


def _code(returncode: int) -> int:
    # Windows reports the HRESULT as an unsigned 32-bit status; signed on other hosts.
    return returncode & 0xFFFFFFFF


class Winget(base.Packager):
    name = "winget"
    binary = "winget"
    oses = ("windows",)
    # Dotted ids such as "Notepad++.Notepad++".
    name_chars = ".+-_"

    def install_commands(
        self, names: tuple[str, ...], lock_timeout_s: int
    ) -> list[base.InstallCommand]:
        # winget installs exactly one package per run.
        return [
            base.InstallCommand(
                argv=(
                    "winget",
                    "install",
                    "--exact",
                    "--id",
                    name,
                    "--silent",
                    "--accept-package-agreements",
                    "--accept-source-agreements",
                    "--disable-interactivity",
                )
            )
            for name in names
        ]

    def installed_queries(self, names: tuple[str, ...]) -> list[base.Query]:
        return [
            base.Query(
                argv=(
                    "winget",
                    "list",
                    "--exact",
                    "--id",
                    name,
                    "--accept-source-agreements",
                    "--disable-interactivity",
                ),
                names=(name,),
            )
            for name in names
        ]

    def says_installed(self, query: base.Query, returncode: int, output: str) -> bool:
        # NO_APPLICATIONS_FOUND when absent; the table names the id when present.
        return returncode == 0 and all(n in output for n in query.names)

    def explain(self, failure: base.Failure) -> str | None:
        code = _code(failure.returncode)
        ids = ", ".join(repr(n) for n in failure.packages)
        if code == NO_APPLICATIONS_FOUND:
            return (
                f"winget has no package with id {ids}: check the id in the feature's "
                "packages.winget ('winget search --id ...' on this host)"
            )
        if code == PACKAGE_IS_PINNED:
            return (
                f"winget will not change pinned package {ids}: see 'winget pin list' and "
                "release it with 'winget pin remove --id ...', or drop it from the feature"
            )
        if code == INSTALL_IN_PROGRESS:
            return "another installation is in progress on this host: install again once it ends"
        return None


PACKAGER = Winget()
