"""The feature: label grammar, its limits, and hostile text."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.catalog import requests


@pytest.mark.parametrize(
    ("label", "rendered"),
    [
        ("feature:node", "feature:node"),
        ("feature:Node@20", "feature:node@20"),
        ("FEATURE:python@3.12;pip=true", "feature:python@3.12;pip=true"),
        ("feature:python@~3.12", "feature:python@~3.12"),
        ("feature:node@^20.1", "feature:node@^20.1"),
        ("feature:node@lts", "feature:node@lts"),
        ("feature:cuda@12.4.1;b=2;a=1", "feature:cuda@12.4.1;a=1;b=2"),
    ],
)
def test_valid_labels_parse_and_render_canonically(label: str, rendered: str) -> None:
    assert requests.parse(label).render() == rendered


@pytest.mark.parametrize(
    ("label", "fragment"),
    [
        ("feature:", "is not a feature id"),
        ("feature:../etc", "is not a feature id"),
        ("feature:node/../../x", "is not a feature id"),
        ("feature:no de", "is not a feature id"),
        ("feature:-node", "is not a feature id"),
        ("feature:node\x00", "is not a feature id"),
        ("feature:node\n", "is not a feature id"),
        ("feature:\uff4eode", "is not a feature id"),  # fullwidth n
        ("feature:n\u043ede", "is not a feature id"),  # Cyrillic o
        ("feature:node@$(id)", "is not a version spec"),
        ("feature:node@`id`", "is not a version spec"),
        ("feature:node@20;x=$(id)", "is not <name>=<value>"),
        ("feature:node@20;x=a/b", "is not <name>=<value>"),
        ("feature:node@20;=1", "is not <name>=<value>"),
        ("feature:node@20;a=1;a=2", "is given twice"),
        ("feature:node@>=20,<22", "labels cannot hold commas"),
        ("feature:" + "a" * 300, "the limit is 256"),
        ("feature:node" + ";a=1" * 17, "more than 16 options"),
    ],
)
def test_malformed_labels_quote_the_label_and_the_grammar(label: str, fragment: str) -> None:
    with pytest.raises(requests.RequestError) as info:
        requests.parse(label)
    message = str(info.value)
    assert fragment in message
    assert message.isprintable()  # control characters are escaped, never echoed raw
    assert message.isascii()


def test_other_labels_are_ignored_and_bad_ones_are_all_reported() -> None:
    with pytest.raises(requests.RequestError) as info:
        requests.from_labels(["self-hosted", "linux", "feature:ok", "feature:../x", "feature:y@!"])
    assert len(str(info.value).splitlines()) == 2


def test_labels_for_one_feature_merge_when_they_agree() -> None:
    [merged] = requests.from_labels(["feature:node@20;a=1", "feature:node@20;b=2"])
    assert merged.render() == "feature:node@20;a=1;b=2"


def test_the_number_of_features_is_limited() -> None:
    labels = [f"feature:f{n}" for n in range(requests.MAX_FEATURES + 1)]
    with pytest.raises(requests.RequestError, match="the limit is 32"):
        requests.from_labels(labels)


def test_team_mappings_allow_ranges_and_typed_options() -> None:
    request = requests.from_mapping(
        {"id": "python", "version": ">=3.10,<3.13", "options": {"pip": True}}, source="team"
    )
    assert request.render() == "feature:python@>=3.10,<3.13;pip=true"


# --- properties ----------------------------------------------------------------------

SAFE_FIELD = re.compile(r"(?a:[A-Za-z0-9._+:^~@;=-]*)")
ids = st.from_regex(r"(?a:[a-z0-9][a-z0-9-]{0,20})", fullmatch=True)
specs = st.one_of(
    st.none(),
    st.from_regex(r"(?a:\^?\d{1,3}(\.\d{1,3}){0,2})", fullmatch=True),
    st.from_regex(r"(?a:~\d{1,3}(\.\d{1,3}){0,2})", fullmatch=True),
    st.sampled_from(["lts", "latest", "stable"]),
)
options = st.dictionaries(
    st.from_regex(r"(?a:[A-Za-z][A-Za-z0-9_]{0,10})", fullmatch=True),
    st.from_regex(r"(?a:[A-Za-z0-9._+:-]{0,12})", fullmatch=True),
    max_size=4,
)


@given(ident=ids, spec=specs, opts=options, upper=st.booleans(), order=st.randoms())
def test_parse_then_render_round_trips(
    ident: str, spec: str | None, opts: dict[str, str], upper: bool, order: Any
) -> None:
    # Non-canonical spellings too: upper-case prefix and id, options in any order.
    prefix = "FEATURE:" if upper else "feature:"
    text = prefix + (ident.upper() if upper else ident) + (f"@{spec}" if spec else "")
    items = list(opts.items())
    order.shuffle(items)
    text += "".join(f";{k}={v}" for k, v in items)
    first = requests.parse(text)
    again = requests.parse(first.render())
    assert again == first
    assert again.render() == first.render()


hostile = st.one_of(
    st.text(max_size=80),
    # Near misses: valid labels with one hostile character spliced in somewhere.
    st.tuples(
        st.sampled_from(["node@20", "python@~3.12;pip=true", "cmake@^3;a=b"]),
        st.integers(min_value=0, max_value=20),
        st.sampled_from(
            ["\n", "\x00", "\t", " ", "$", "`", "/", "..", "\u2028", "\uff4e", "\u00a0"]
        ),
    ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]),
)


@settings(max_examples=400)
@given(hostile)
def test_nothing_hostile_survives_parsing(text: str) -> None:
    try:
        request = requests.parse("feature:" + text)
    except requests.RequestError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert message.isascii()
        assert message.isprintable()
        return
    # What was accepted was itself plain: nothing was stripped or normalised into safety.
    assert text.isascii()
    assert text.isprintable()
    assert not any(c.isspace() for c in text)
    rendered = request.render()
    # Whatever passed can go into a path, an argv or an env value without escaping.
    assert SAFE_FIELD.fullmatch(rendered.removeprefix("feature:"))
    assert ".." not in request.id
    assert "/" not in rendered
    for key, value in request.options:
        assert re.fullmatch(r"(?a:[A-Za-z][A-Za-z0-9_]*)", key)
        assert "$" not in value
        assert "`" not in value
