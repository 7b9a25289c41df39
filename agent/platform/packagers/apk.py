"""apk (Alpine): ``apk add``; ``apk info -e`` says what is installed.

Sources: apk(8) (apk-tools, also the Alpine wiki's apk pages): global options
``--no-cache`` ("do not use any local cache path"), ``--cache-dir CACHEDIR``,
``-U``/``--update-cache`` (alias for ``--cache-max-age 0``: refresh the index now) and
``--wait TIME`` ("wait for TIME seconds to get an exclusive repository lock before
failing"); the lock file /lib/apk/db/lock; apk-info(8) ``-e``/``--exists``: "the exit
status is the number of given packages not installed"; apk-world(5) for ``name@tag``
repository pinning.

Policy: ``--no-cache`` and ``--wait`` are global options, so they come before the
applet: apk-tools 3 wants them there (after it is a deprecated fallback) and apk-tools 2
takes them there too. ``--no-cache`` fetches a current index for this run, so there is
nothing to refresh; with the shared cache it becomes ``--cache-dir`` plus
``--update-cache``, which keeps the packages and still fetches a current index.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

from agent.platform.packagers import base

_MISSING = re.compile(r"^\s+(\S+) \(no such package\)", re.MULTILINE)


class Apk(base.Packager):
    name = "apk"
    binary = "apk"
    oses = ("linux",)
    # "pkg=1.2-r0", "pkg@testing", "so:libc.musl-x86_64.so.1".
    name_chars = ".+-_@:="

    def install_commands(
        self, names: tuple[str, ...], lock_timeout_s: int
    ) -> list[base.InstallCommand]:
        return [
            base.InstallCommand(
                argv=("apk", "--no-cache", "--wait", str(lock_timeout_s), "add", *names)
            )
        ]

    def with_cache(self, argv: Sequence[str], cache: PurePath) -> base.Cached:
        if "--no-cache" not in argv:
            return base.Cached(argv=tuple(argv))
        folder = cache / self.name
        at = list(argv).index("--no-cache")
        return base.Cached(
            argv=(*argv[:at], "--cache-dir", str(folder), "--update-cache", *argv[at + 1 :]),
            folders=(folder,),
        )

    def installed_queries(self, names: tuple[str, ...]) -> list[base.Query]:
        return [base.Query(argv=("apk", "info", "-e", *names), names=names)]

    def explain(self, failure: base.Failure) -> str | None:
        output = failure.output
        if "Unable to lock database" in output:
            return (
                "apk could not lock its database (/lib/apk/db/lock) within the lock "
                "timeout: wait for the other apk run to end, or raise "
                "installer.package_lock_timeout_seconds"
            )
        missing = failure.named(_MISSING)
        if missing:
            return (
                f"apk has no package {', '.join(repr(m) for m in missing)}: check the name "
                "in the feature's packages.apk, and that /etc/apk/repositories on this host "
                "lists a repository (and the @tag, if pinned) that provides it"
            )
        if "unable to select packages" in output:
            return (
                f"apk cannot satisfy {', '.join(failure.packages)} together with the "
                "constraints in /etc/apk/world (see the output below)"
            )
        return None


PACKAGER = Apk()
