"""Homebrew (macOS, also Linux): ``brew install``; ``brew list --versions`` says what is
installed.

Sources: the brew manpage (docs.brew.sh/Manpage): ``install formula``; ``update``
("fetch the newest version of Homebrew and all formulae"); ``list --versions``: "show
the version number for installed formulae, or only the specified formulae if formula
are provided"; ``pin``/``unpin``; ENVIRONMENT: HOMEBREW_NO_AUTO_UPDATE,
HOMEBREW_NO_INSTALL_CLEANUP, HOMEBREW_NO_ENV_HINTS.

Policy: Homebrew would otherwise update itself and every tap before each install (slow,
and changes versions under other jobs) and clean up old versions after it, so both are
off; ``brew update`` is the explicit refresh. Homebrew keeps its own download cache.
"""

from __future__ import annotations

import re

from agent.platform.packagers import base

_MISSING = re.compile(r'No available formula with the name "([^"]+)"')
_PINNED = re.compile(r"(\S+) is pinned\. You must unpin it")


class Brew(base.Packager):
    name = "brew"
    binary = "brew"
    oses = ("darwin", "linux")
    # "python@3.12", "owner/tap/formula".
    name_chars = ".+-_@/"

    def _env(self) -> tuple[tuple[str, str], ...]:
        return (
            ("HOMEBREW_NO_AUTO_UPDATE", "1"),
            ("HOMEBREW_NO_INSTALL_CLEANUP", "1"),
            ("HOMEBREW_NO_ENV_HINTS", "1"),
        )

    def refresh_command(self, lock_timeout_s: int) -> tuple[str, ...]:
        return ("brew", "update")

    def install_commands(
        self, names: tuple[str, ...], lock_timeout_s: int
    ) -> list[base.InstallCommand]:
        return [
            base.InstallCommand(
                argv=("brew", "install", *names),
                env=self._env(),
                refresh=self.refresh_command(lock_timeout_s),
            )
        ]

    def installed_queries(self, names: tuple[str, ...]) -> list[base.Query]:
        return [
            base.Query(argv=("brew", "list", "--versions", *names), names=names, env=self._env())
        ]

    def says_installed(self, query: base.Query, returncode: int, output: str) -> bool:
        # One "name version..." line per installed formula, named without its tap.
        listed = {line.split()[0] for line in output.splitlines() if line.strip()}
        return returncode == 0 and all(n.rsplit("/", 1)[-1] in listed for n in query.names)

    def explain(self, failure: base.Failure) -> str | None:
        pinned = list(dict.fromkeys(_PINNED.findall(failure.output)))
        if pinned:
            return (
                f"brew will not change pinned formula {', '.join(repr(n) for n in pinned)}: "
                f"release it with 'brew unpin {' '.join(pinned)}' on this host, or drop it "
                "from the feature"
            )
        missing = failure.named(_MISSING)
        if missing:
            return (
                f"brew has no formula {', '.join(repr(m) for m in missing)}: check the name "
                "in the feature's packages.brew (and its tap, as owner/tap/formula)"
            )
        return None


PACKAGER = Brew()
