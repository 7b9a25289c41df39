"""apt (Debian, Ubuntu): ``apt-get`` installs, ``dpkg-query`` says what is installed.

Sources: apt-get(8) (``install``, ``update``, ``-y``, ``-q``, ``--no-install-recommends``,
``-o``; DIAGNOSTICS: 0 on success, 100 on error); apt.conf(5) and the option list it
points to, /usr/share/doc/apt/examples/configure-index (``DPkg::Lock::Timeout``,
``APT::Keep-Downloaded-Packages``, ``Dir::Cache::Archives``); dpkg-query(1) (``--show``,
``--showformat``, ``db:Status-Status``; EXIT STATUS 1 when a package is not found);
apt-mark(8) (``hold``/``unhold``).

Policy:
- downloaded ``.deb`` files live in ``<package_cache>/apt/archives`` on the shared volume
  (``Dir::Cache::Archives``, with ``APT::Keep-Downloaded-Packages`` forced on, since
  images often clean the cache after every install): a package one host fetched is not
  fetched again by the next. apt verifies each cached file against the signed index
  before it uses it, so a shared cache cannot smuggle in a package;
- the index lives in /var/lib/apt/lists, so the executor may skip ``apt-get update``
  when it ran recently on this host (a refresh that could not fetch some index, see
  :meth:`Apt.failed_fetches`, does not count as one);
- apt's locks are fcntl locks on the dpkg frontend lock and the lists lock; the executor
  asks the kernel who holds them while it waits, and ``DPkg::Lock::Timeout`` covers the
  dpkg lock apt takes itself. apt 2.6 still fails at once when ``update`` finds the lists
  lock held, hence the executor's own wait;
- needrestart (Ubuntu 22.04+) reads NEEDRESTART_MODE; "l" lists stale services rather
  than restarting them: an install for one job must not restart the runner or dockerd
  under the others. One ``-q``: no progress bars, but the "Get:" and "Need to get" lines
  stay in the log.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

from agent.platform.packagers import base

_FAILED_FETCH = re.compile(r"^(?:W|E): Failed to fetch (\S+)\s+(.*)$", re.MULTILINE)
_MISSING = re.compile(
    r"^E: (?:Unable to locate package |Package '?)([^\s']+)'?(?: has no installation candidate)?",
    re.MULTILINE,
)
_LOCKED = re.compile(r"Could not get lock (\S+?)\.? It is held by process (\d+)")


def archives(package_cache: PurePath) -> PurePath:
    """The shared folder that holds the ``.deb`` files."""
    return package_cache / "apt" / "archives"


class Apt(base.Packager):
    name = "apt"
    binary = "apt-get"
    oses = ("linux",)
    # "pkg=1:2.0~rc1-1" (version, epoch, tilde), "pkg:arm64", "pkg/bookworm-backports".
    name_chars = ".+-_:=~/"
    repository_folders = ("/etc/apt/sources.list.d", "/etc/apt/keyrings")
    lock_files = ("/var/lib/dpkg/lock-frontend", "/var/lib/apt/lists/lock")
    index_folder = "/var/lib/apt/lists"
    index_glob = "*_Packages*"

    def _lock(self, lock_timeout_s: int) -> tuple[str, ...]:
        # DPkg::Lock::Timeout (apt >= 1.9.11) waits for the dpkg frontend lock.
        return ("-o", f"DPkg::Lock::Timeout={lock_timeout_s}")

    def refresh_command(self, lock_timeout_s: int) -> tuple[str, ...]:
        return ("apt-get", *self._lock(lock_timeout_s), "update", "-q")

    def install_commands(
        self, names: tuple[str, ...], lock_timeout_s: int
    ) -> list[base.InstallCommand]:
        lock = self._lock(lock_timeout_s)
        return [
            base.InstallCommand(
                argv=("apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", *names),
                # needrestart, when installed, runs from apt's hook: list-only mode still
                # scans every process and floods the output (readline() on closed
                # filehandle HENV); suspended, it does not run at all.
                env=(
                    ("DEBIAN_FRONTEND", "noninteractive"),
                    ("NEEDRESTART_MODE", "l"),
                    ("NEEDRESTART_SUSPEND", "1"),
                ),
                refresh=self.refresh_command(lock_timeout_s),
            )
        ]

    def with_cache(self, argv: Sequence[str], cache: PurePath) -> base.Cached:
        folder = archives(cache)
        options = (
            "-o",
            f"Dir::Cache::Archives={folder}/",
            "-o",
            "APT::Keep-Downloaded-Packages=true",
        )
        return base.Cached(argv=(argv[0], *options, *argv[1:]), folders=(folder / "partial",))

    def installed_queries(self, names: tuple[str, ...]) -> list[base.Query]:
        # One line per package dpkg knows by that name: its status word.
        return [
            base.Query(
                argv=("dpkg-query", "--show", "--showformat=${db:Status-Status}\\n", *names),
                names=names,
            )
        ]

    def says_installed(self, query: base.Query, returncode: int, output: str) -> bool:
        # Exit 1: some name is unknown to dpkg. A known one may still be "config-files"
        # (removed, not purged) or "not-installed" (a hold on an absent package).
        words = output.split()
        return returncode == 0 and len(words) >= len(query.names) and set(words) == {"installed"}

    def failed_fetches(self, output: str) -> list[str]:
        return [f"{url} ({why.strip()})" for url, why in _FAILED_FETCH.findall(output)]

    def explain(self, failure: base.Failure) -> str | None:
        output, packages = failure.output, list(failure.packages)
        found = _MISSING.findall(output)
        missing = [m for m in found if m in packages] or found
        if missing:
            message = (
                f"apt has no package {', '.join(repr(m) for m in missing)}: check the name in "
                "the feature's packages.apt, and that a repository on this host provides it"
            )
            if failure.fetch_failures:
                message += (
                    f"; apt-get update could not fetch {'; '.join(failure.fetch_failures[:3])}"
                )
            return message
        if "Held packages were changed" in output or "held packages" in output.lower():
            held = re.findall(r"^\s+(\S+)", output.split("held packages will be changed:", 1)[-1])
            names = [n for n in held if n in packages] or packages
            return (
                f"apt will not change held package {', '.join(repr(n) for n in names)}: "
                f"release it with 'apt-mark unhold {' '.join(names)}' on this host, or drop "
                "it from the feature"
            )
        if "dpkg was interrupted" in output:
            return (
                "dpkg was interrupted by an earlier run (killed mid-install): run "
                "'dpkg --configure -a' on this host as root, then install again"
            )
        locked = _LOCKED.search(output)
        if locked:
            return (
                f"apt could not get {locked.group(1)}, held by pid {locked.group(2)}, within "
                "the lock timeout: wait for that package manager run to end, or raise "
                "installer.package_lock_timeout_seconds"
            )
        if "unmet dependencies" in output:
            return (
                f"apt cannot install {', '.join(packages)}: unmet dependencies (see the "
                "output below); the host's packages may be held or from another release"
            )
        return None


PACKAGER = Apt()
