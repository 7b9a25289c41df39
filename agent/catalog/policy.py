"""Which features a repository may request (``runner.policy`` and
``runner.allowed_features``).

Policy of the policy: the rules are tried in the order they are written and the first
with a glob that matches the repository (case-insensitively: GitHub's names are) gives
the allowed feature ids, ``*`` meaning any; a repository no glob matches, or a request that names
no repository, gets ``allowed_features``; ``None`` there means any, except for a request
that names no repository while rules exist: that one is refused (it must not slip past
them). So with nothing set nothing is restricted. Only what a request names is checked,
not the features those require: a feature's own dependencies come with it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from typing import Protocol


class Rule(Protocol):
    """A runner.policy rule (:class:`agent.config.runner.PolicyRule`)."""

    @property
    def repositories(self) -> Sequence[str]: ...

    @property
    def features(self) -> Sequence[str]: ...


class PolicyError(Exception):
    """A request outside policy; the message names the feature and the rule."""


def check(
    policy: Sequence[Rule],
    default: Sequence[str] | None,
    repository: str | None,
    requested: Iterable[str],
) -> None:
    """Raise :class:`PolicyError` for the first requested feature id not allowed."""
    rule, allowed = "runner.allowed_features", default
    if repository is not None:
        name = repository.lower()
        for index, each in enumerate(policy):
            glob = next(
                (g for g in each.repositories if fnmatch.fnmatchcase(name, g.lower())), None
            )
            if glob is not None:
                rule, allowed = f"runner.policy[{index}] ({glob})", each.features
                break
    if repository is None and policy and default is None:
        # Rules restrict repositories; a request that names none must not slip past them.
        raise PolicyError(
            "a request that names no repository is outside runner.policy; set "
            "runner.allowed_features for such requests, or ensure on behalf of a job"
        )
    if allowed is None or "*" in allowed:
        return
    for feature in requested:
        if feature not in allowed:
            who = repository or "a request that names no repository"
            shown = ", ".join(allowed) if allowed else "nothing"
            raise PolicyError(
                f"feature {feature} is not allowed for {who} by {rule}, which allows "
                f"{shown}; ask the runner's operator to allow it there"
            )
