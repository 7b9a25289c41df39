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


def test_nearby_offers_the_closest_versions() -> None:
    python = ["3.9.25", "3.10.19", "3.11.14", "3.12.12", "3.13.9", "3.14.0"]
    assert versions.nearby(python, "3.8") == ["3.9.25", "3.10.19", "3.11.14", "3.12.12"]
    ninja = ["1.11.1.4", "1.13.0", "1.13.2"]
    assert versions.nearby(ninja, "1.11.1.0")[0] == "1.11.1.4"


def test_an_exact_version_wins_over_longer_ones_it_prefixes() -> None:
    spec = versions.parse_spec("1.11.1", allow_ranges=False)
    assert versions.best_match(["1.11.1", "1.11.1.4"], [spec]) == "1.11.1"
    assert versions.best_match(["1.11.1.4"], [spec]) == "1.11.1.4"  # then the prefix rule


def test_caret_on_0_0_x_stays_on_the_patch() -> None:
    assert str(versions.parse_spec("^0.0.3", allow_ranges=False).specifier()) == "<0.0.4,>=0.0.3"


@pytest.mark.parametrize("spec", ["20\n", "\t20", "20\u2028", "20\u3000", " 20"])
def test_a_label_spec_takes_no_whitespace(spec: str) -> None:
    with pytest.raises(versions.VersionSpecError, match="no spaces or control characters"):
        versions.parse_spec(spec, allow_ranges=False)
