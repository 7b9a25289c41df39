"""yum (RHEL/CentOS 7, Amazon Linux 2): ``yum install``; ``rpm -q`` says what is
installed (see :mod:`.rpm`).

Sources: yum(8) (``install``, ``-y``/``--assumeyes``, ``--setopt=option=value``);
yum.conf(5) ``keepcache`` and ``cachedir`` (on EL8 and later ``yum`` is dnf and reads
dnf.conf(5), which has the same two options). yum has no weak dependencies to skip; it
refreshes expired metadata itself and waits for another yum's lock without a bound (see
:mod:`.dnf`). Errors: yum 3 says "No package NAME available."; the dnf-based yum says
what dnf says, so dnf's explanations apply too.
"""

from __future__ import annotations

import re

from agent.platform.packagers import base, dnf

_NO_PACKAGE = re.compile(r"No package (\S+) available\.")


class Yum(dnf.Dnf):
    name = "yum"
    binary = "yum"

    def install_commands(
        self, names: tuple[str, ...], lock_timeout_s: int
    ) -> list[base.InstallCommand]:
        return [base.InstallCommand(argv=("yum", "install", "-y", *names))]

    def explain(self, failure: base.Failure) -> str | None:
        missing = [n for n in _NO_PACKAGE.findall(failure.output) if n in failure.packages]
        missing = missing or _NO_PACKAGE.findall(failure.output)
        if missing:
            return (
                f"yum has no package {', '.join(repr(m) for m in dict.fromkeys(missing))}: "
                "check the name in the feature's packages.yum, and that a repository in "
                "/etc/yum.repos.d on this host provides it (or that no exclude= hides it)"
            )
        return super().explain(failure)


PACKAGER = Yum()
