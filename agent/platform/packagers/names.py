"""Package name checks: a name can never become an option, a second word or a command.

Policy: a name must start with a letter or digit (or one of the manager's
:attr:`~agent.platform.packagers.base.Packager.leading_chars`, such as dnf's ``@`` for
groups), continue with letters, digits and the manager's own
:attr:`~agent.platform.packagers.base.Packager.name_chars` only, and be at most
:data:`MAX_NAME` characters long. Nothing else reaches an argv.
"""

from __future__ import annotations

import functools
import re

from agent.platform import model
from agent.platform.packagers import base

MAX_NAME = 200


@functools.lru_cache(maxsize=None)  # noqa: UP033 (functools.cache is 3.9+)
def _pattern(leading: str, chars: str) -> re.Pattern[str]:
    return re.compile("[A-Za-z0-9" + re.escape(leading) + "][A-Za-z0-9" + re.escape(chars) + "]*")


def check(packager: base.Packager, name: object) -> str:
    """Return ``name`` if ``packager`` may be given it, else raise :class:`PlatformError`."""
    pattern = _pattern(packager.leading_chars, packager.name_chars)
    if not isinstance(name, str) or len(name) > MAX_NAME or not pattern.fullmatch(name):
        first = (
            f"a letter, digit or {' '.join(packager.leading_chars)}"
            if packager.leading_chars
            else "a letter or digit"
        )
        raise model.PlatformError(
            f"package name {name!r} is not acceptable for {packager.name}: expected at most "
            f"{MAX_NAME} characters, starting with {first}, then letters, digits and "
            f"{' '.join(packager.name_chars)} only (no spaces, no leading '-')"
        )
    return name
