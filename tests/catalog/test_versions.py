"""Version specs: mise-style partial matching, caret, tilde, ranges, aliases, pre-releases."""

from __future__ import annotations

import pytest

from agent.catalog import versions

KNOWN = ["1.2.0", "1.2.3", "1.20.0", "1.3.0", "2.0.0", "2.1.0rc1", "0.3.1", "0.4.0"]


@pytest.mark.parametrize(
    ("spec", "best"),
    [
        ("1.2", "1.2.3"),  # never 1.20.0: partial matches by component, as mise does
        ("1", "1.20.0"),
        ("1.20", "1.20.0"),
        ("1.2.0", "1.2.0"),
        ("1.x", "1.20.0"),
        ("^1.2", "1.20.0"),
        ("^0.3", "0.3.1"),  # 0.x caret stays within the minor, as semver does
        ("~1.2", "1.2.3"),
        ("~1", "1.20.0"),
        (">=1.3,<2", "1.20.0"),
        ("2", "2.0.0"),  # the rc is not chosen unless asked for
        ("2.1.0rc1", "2.1.0rc1"),
        (">=2.1.0rc1", "2.1.0rc1"),
        ("3", None),
    ],
)
def test_best_match(spec: str, best: str | None) -> None:
    parsed = versions.parse_spec(spec, allow_ranges=True)
    assert versions.best_match(KNOWN, [parsed]) == best


def test_several_specs_must_all_hold() -> None:
    specs = [versions.parse_spec(s, allow_ranges=True) for s in ("1", "<1.4")]
    assert versions.best_match(KNOWN, specs) == "1.3.0"


def test_ranges_are_refused_where_labels_cannot_hold_them() -> None:
    with pytest.raises(versions.VersionSpecError, match=r"labels cannot hold commas"):
        versions.parse_spec(">=3.10,<3.13", allow_ranges=False)


@pytest.mark.parametrize(
    "bad", ["", "1..2", "v1.2", "^", "~x", "1.2.3.4.5.6", ">=foo", "latest!", "$(id)"]
)
def test_malformed_specs_say_what_is_expected(bad: str) -> None:
    with pytest.raises(versions.VersionSpecError, match="expected"):
        versions.parse_spec(bad, allow_ranges=True)


def test_aliases_parse_as_aliases() -> None:
    assert versions.parse_spec("lts", allow_ranges=False).kind == "alias"


def test_nearby_offers_the_newest_of_the_closest_majors() -> None:
    assert versions.nearby(["18.20.8", "20.11.1", "20.19.6", "22.21.1", "24.12.0"], "19") == [
        "20.19.6",
        "18.20.8",
        "22.21.1",
        "24.12.0",
    ]
