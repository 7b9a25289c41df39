"""runner.policy and runner.allowed_features, as a pure check: first glob wins, the
default for the rest, * for any, nothing set restricts nothing."""

from __future__ import annotations

import pytest

from agent.catalog import policy
from agent.config.runner import PolicyRule

POLICY = [
    PolicyRule(repositories=["octo/infra-*"], features=["terraform", "kubectl"]),
    PolicyRule(repositories=["octo/*", "friends/app"], features=["node", "python"]),
    PolicyRule(repositories=["*/*"], features=["*"]),
]


@pytest.mark.parametrize(
    ("repository", "requested"),
    [("octo/app", ["node", "python"]), ("octo/infra-prod", ["terraform"]),
     ("OCTO/App", ["node"]), ("other/x", ["cuda", "anything"])],
)  # fmt: skip
def test_allowed(repository: str, requested: list[str]) -> None:
    policy.check(POLICY, [], repository, requested)


def test_the_first_glob_in_order_decides() -> None:
    with pytest.raises(policy.PolicyError) as info:
        policy.check(POLICY, None, "octo/infra-prod", ["node"])
    assert str(info.value) == (
        "feature node is not allowed for octo/infra-prod by runner.policy[0] (octo/infra-*), "
        "which allows terraform, kubectl; ask the runner's operator to allow it there"
    )


def test_a_repository_no_glob_matches_gets_the_default() -> None:
    rules = [PolicyRule(repositories=["octo/*"], features=["node"])]
    with pytest.raises(policy.PolicyError, match=r"by runner\.allowed_features, which allows go"):
        policy.check(rules, ["go"], "elsewhere/x", ["node"])
    policy.check(rules, None, "elsewhere/x", ["node"])  # None: any


def test_no_repository_gets_the_default() -> None:
    with pytest.raises(policy.PolicyError, match="a request that names no repository"):
        policy.check([PolicyRule(repositories=["octo/*"], features=["node"])], [], None, ["node"])


def test_nothing_set_restricts_nothing() -> None:
    policy.check([], None, "octo/app", ["cuda"])
    policy.check([], None, None, ["cuda"])


def test_rules_without_a_default_refuse_a_request_naming_no_repository() -> None:
    # A catch-all rule must not be escaped by leaving the repository out.
    rules = [PolicyRule(repositories=["*/*"], features=["node"])]
    with pytest.raises(policy.PolicyError, match=r"names no repository is outside runner\.policy"):
        policy.check(rules, None, None, ["cuda"])
