"""Every way resolution fails has its own class, code and HTTP status."""

from __future__ import annotations

import pytest

from agent.http import errors as http_errors
from agent.sources import errors


def _leaves(cls: type[errors.SourceError]) -> list[type[errors.SourceError]]:
    subs = cls.__subclasses__()
    return [cls] if not subs else [leaf for sub in subs for leaf in _leaves(sub)]


@pytest.mark.parametrize("cls", _leaves(errors.SourceError), ids=lambda c: c.__name__)
def test_each_error_has_a_status_of_its_own_table_row(cls: type[errors.SourceError]) -> None:
    # A new error class must be given its status, not fall back to a generic 400.
    assert any(base in http_errors.SOURCE_STATUS for base in cls.__mro__), cls


def test_statuses_and_codes() -> None:
    cases = {
        errors.InvalidTeam("x"): (400, "validation_error"),
        errors.Invalid("x"): (400, "validation_error"),
        errors.InvalidRequest("x"): (400, "invalid_request"),
        errors.Refused("x"): (403, "policy"),
        errors.Unresolvable("x"): (422, "unresolvable"),
        errors.GitHubUnavailable("x"): (502, "github_error"),
    }
    for exc, (status, code) in cases.items():
        assert (http_errors.source_status(exc), exc.code) == (status, code)
