"""What the rpm-based managers (dnf, yum, zypper) share: the installed-package query.

Not a manager of its own (the registry does not list it). All three install into the
rpm database, so ``rpm -q`` is the one query that answers for each, whichever front end
installed the package. rpm(8), QUERY OPTIONS: ``rpm {-q|--query} [select-options]
[query-options]`` with a PACKAGE_NAME selects the installed package of that name and
``--queryformat`` picks what is printed; for a name that is not installed rpm prints
"package NAME is not installed" and exits non-zero. Both are read, so an rpm that exited
0 anyway still answers no.
"""

from __future__ import annotations

from agent.platform.packagers import base

NOT_INSTALLED = "is not installed"


def installed_query(names: tuple[str, ...]) -> base.Query:
    """``rpm -q`` for every name at once: one line per installed package."""
    return base.Query(argv=("rpm", "--query", "--queryformat", "%{NAME}\\n", *names), names=names)


def says_installed(returncode: int, output: str) -> bool:
    """Whether ``rpm -q`` found every name it was given."""
    return returncode == 0 and NOT_INSTALLED not in output
