"""dnf (Fedora, RHEL 8+, Amazon Linux 2023): ``dnf install``; ``rpm -q`` says what is
installed (see :mod:`.rpm`).

Sources: dnf(8) (``install``, ``-y``/``--assumeyes``, ``--setopt=<option>=<value>``
overrides a configuration option); dnf.conf(5) [main] options ``install_weak_deps``
(False: weak dependencies, dnf's recommends, are not installed), ``keepcache`` (True:
downloaded packages are kept after a successful install), ``cachedir`` (where metadata
and packages are kept), ``metadata_expire`` (dnf refreshes expired metadata itself, so
there is no refresh command) and ``excludepkgs`` (packages dnf will not touch, which is
also how the versionlock plugin holds packages).

Policy: dnf and yum have no lock-timeout option. yum and dnf 4 wait for a running
instance's lock themselves, without a bound, so the caller's own deadline is the bound.
Downloads go to ``<package_cache>/dnf`` on the shared volume (``keepcache`` on, its own
``cachedir``); dnf verifies each cached package's signature and checksum before it uses
it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

from agent.platform.packagers import base, rpm

# dnf 4 and dnf 5 both say "No match for argument: NAME"; dnf 4 adds "Error: Unable to
# find a match: NAME ...". An excluded (or versionlocked) package is "filtered out".
_MISSING = re.compile(r"(?:No match for argument|Unable to find a match): (\S+)")
_EXCLUDED = re.compile(r"filtered out by exclude filtering for argument: (\S+)")


def _named(pattern: re.Pattern[str], output: str, packages: tuple[str, ...]) -> list[str]:
    found = list(dict.fromkeys(pattern.findall(output)))
    return [n for n in found if n in packages] or found


class Dnf(base.Packager):
    name = "dnf"
    binary = "dnf"
    oses = ("linux",)
    # "gcc-c++", "pkg.x86_64", "@development" groups (the only leading "@").
    name_chars = ".+-_@:/"
    leading_chars = "@"
    repository_folders = ("/etc/yum.repos.d",)

    def install_commands(
        self, names: tuple[str, ...], lock_timeout_s: int
    ) -> list[base.InstallCommand]:
        return [
            base.InstallCommand(
                argv=("dnf", "install", "-y", "--setopt=install_weak_deps=False", *names)
            )
        ]

    def with_cache(self, argv: Sequence[str], cache: PurePath) -> base.Cached:
        folder = cache / self.name
        return base.Cached(
            argv=(argv[0], "--setopt=keepcache=True", f"--setopt=cachedir={folder}", *argv[1:]),
            folders=(folder,),
        )

    def installed_queries(self, names: tuple[str, ...]) -> list[base.Query]:
        return [rpm.installed_query(names)]

    def says_installed(self, query: base.Query, returncode: int, output: str) -> bool:
        return rpm.says_installed(returncode, output)

    def explain(self, failure: base.Failure) -> str | None:
        excluded = _named(_EXCLUDED, failure.output, failure.packages)
        if excluded:
            return (
                f"{self.name} excludes {', '.join(repr(n) for n in excluded)} on this host "
                "(excludepkgs/exclude in /etc/dnf/dnf.conf or a .repo file, or a "
                "versionlock): lift the exclusion or the lock, or drop it from the feature"
            )
        missing = _named(_MISSING, failure.output, failure.packages)
        if missing:
            return (
                f"{self.name} has no package {', '.join(repr(m) for m in missing)}: check "
                f"the name in the feature's packages.{self.name}, and that a repository in "
                "/etc/yum.repos.d on this host provides it"
            )
        return None


PACKAGER = Dnf()
