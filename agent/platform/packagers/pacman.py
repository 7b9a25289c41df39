"""pacman (Arch): ``pacman -S``; ``pacman -Q`` says what is installed.

Sources: pacman(8): ``-S``/``--sync`` installs from the sync repositories (``repo/pkg``
picks the repository); ``--noconfirm`` "bypass any and all 'Are you sure?' messages";
``--needed`` "do not reinstall the targets that are already up-to-date"; ``-Q``/``--query``
queries the local package database for the named packages (exit status non-zero when
one is not installed); ``-Sy`` refreshes the sync databases. pacman.conf(5) and the
database lock file db.lck in the database path (/var/lib/pacman).

Policy: no refresh. ``pacman -Sy`` followed by an install is a partial upgrade, which
Arch does not support (new packages against old libraries). Refreshing means
``pacman -Syu``, a whole-system upgrade: a decision for the operator, not a side effect
of one install. pacman cannot wait for its lock (db.lck); it fails at once. Its package
cache is left where pacman.conf puts it.
"""

from __future__ import annotations

import re

from agent.platform.packagers import base

_MISSING = re.compile(r"target not found: (\S+)")


class Pacman(base.Packager):
    name = "pacman"
    binary = "pacman"
    oses = ("linux",)
    # "extra/pkg".
    name_chars = ".+-_@/"

    def install_commands(
        self, names: tuple[str, ...], lock_timeout_s: int
    ) -> list[base.InstallCommand]:
        return [base.InstallCommand(argv=("pacman", "-S", "--noconfirm", "--needed", *names))]

    def installed_queries(self, names: tuple[str, ...]) -> list[base.Query]:
        return [base.Query(argv=("pacman", "-Q", *names), names=names)]

    def explain(self, failure: base.Failure) -> str | None:
        output = failure.output
        if "unable to lock database" in output or "db.lck" in output:
            return (
                "pacman found its database locked (/var/lib/pacman/db.lck): another pacman "
                "is running, or one was killed and left the lock file; pacman cannot wait, "
                "so install again once it has ended (remove db.lck only if none runs)"
            )
        missing = failure.named(_MISSING)
        if missing:
            return (
                f"pacman has no package {', '.join(repr(m) for m in missing)}: check the "
                "name in the feature's packages.pacman; the sync databases may also be "
                "older than the package ('pacman -Syu' on this host updates them)"
            )
        return None


PACKAGER = Pacman()
