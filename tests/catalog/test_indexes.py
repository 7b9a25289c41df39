"""Upstream version indexes: real published payloads parsed, and every rule of the parser.

The payloads under data/indexes/ are copies of published files; data/indexes/README.md
names the repository, path and commit of each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from agent.catalog import indexes
from agent.catalog.indexes import IndexKind, VersionIndexError

DATA = Path(__file__).parent / "data" / "indexes"
SOURCE = "https://index.example/versions.json"


def _parse(kind: IndexKind, payload: Any, **kwargs: Any) -> list[str]:
    return indexes.parse(kind, json.dumps(payload).encode(), source=SOURCE, **kwargs)


def _error(kind: IndexKind, body: bytes, **kwargs: Any) -> str:
    with pytest.raises(VersionIndexError) as caught:
        indexes.parse(kind, body, source=SOURCE, **kwargs)
    message = str(caught.value)
    assert SOURCE in message
    return message


# --- real payloads -------------------------------------------------------------------


def test_node_dist_index() -> None:
    got = indexes.parse("node", (DATA / "node-dist-index.json").read_bytes(), source=SOURCE)
    assert got[:4] == ["14.1.0", "14.0.0", "13.14.0", "13.13.0"]
    assert got[-2:] == ["0.12.18", "0.12.17"]
    assert len(got) == 23


def test_go_dl_keeps_stable_only_and_adds_no_patch() -> None:
    got = indexes.parse("go", (DATA / "go-dl.json").read_bytes(), source=SOURCE)
    assert got[:3] == ["1.13.7", "1.13.6", "1.13.5"]
    assert "1.14rc1" not in got  # "stable": false in the payload
    assert "1.13" in got  # go1.13 as published: no ".0" added
    assert "1.13.0" not in got
    assert got[-1] == "1"  # plain "go1"
    assert len(got) == 44


def test_pypi_json_api() -> None:
    got = indexes.parse("pypi", (DATA / "pypi-requests.json").read_bytes(), source=SOURCE)
    assert got[:2] == ["2.18.4", "2.18.3"]
    # 0.0.1, 0.12.01 and 2.15.0 list no files in the payload: nothing to install.
    assert not {"0.0.1", "2.15.0"} & set(got)
    assert len(got) == 129


def test_pypi_yanked_and_prereleases_leave_nothing() -> None:
    # black 19.10b0 is a beta; 21.11b0 has only yanked files.
    message = _error("pypi", (DATA / "pypi-black.json").read_bytes())
    assert "no stable release" in message


def test_npm_packument_skips_prereleases_and_deprecated() -> None:
    got = indexes.parse("npm", (DATA / "npm-prerelease.json").read_bytes(), source=SOURCE)
    # 2.0.0-alpha, -rc1 and -rc2 are pre-releases; 3.0.0 is deprecated.
    assert got[0] == "1.7.0"
    assert got[-1] == "1.0.0"
    assert len(got) == 12


def test_github_releases_strip_prefix_and_skip_prerelease_versions() -> None:
    body = (DATA / "github-business-releases.json").read_bytes()
    # v1.7.0.beta and v1.7.0.alpha are not flagged prerelease, but their versions are.
    assert indexes.parse("github-releases", body, source=SOURCE) == [
        "1.8.0",
        "1.7.0",
        "1.6.0",
        "1.5.0",
    ]


def test_github_releases_custom_prefix() -> None:
    body = (DATA / "github-prefixed-releases.json").read_bytes()
    got = indexes.parse("github-releases", body, source=SOURCE, tag_prefix="business-")
    assert got == ["21.8.0", "2.1.8.0", "1.8.0", "1.7.0", "1.5.0"]
    # With the default "v" prefix none of these tags is a release of ours.
    assert "no stable release" in _error("github-releases", body)


# --- per-kind rules (constructed payloads) -------------------------------------------


def test_node_needs_the_v() -> None:
    got = _parse("node", [{"version": "v20.11.1"}, {"version": "18.0.0"}, {"version": 20}])
    assert got == ["20.11.1"]


def test_go_stable_must_be_true() -> None:
    payload = [
        {"version": "go1.25.5", "stable": True},
        {"version": "go1.21rc2", "stable": False},
        {"version": "go1.20", "stable": True},
        {"version": "go1.19.1", "stable": "yes"},
        {"version": "go1.19.2"},
        {"version": "1.18.1", "stable": True},
    ]
    assert _parse("go", payload) == ["1.25.5", "1.20"]


def test_pypi_needs_a_file_not_yanked() -> None:
    payload = {
        "releases": {
            "2.9.1": [{"yanked": True}, {"yanked": False}],
            "2.9.0": [{"yanked": True}],
            "2.8.0": [],
            "2.7.0": [{}],  # before PEP 592 the API had no "yanked": not yanked
            "2.6.0": "files",
            "2.5.0": ["file"],
            "3.0.0rc1": [{"yanked": False}],
            "3.0.0.dev1": [{"yanked": False}],
            "2.10.0.post1": [{"yanked": False}],
        }
    }
    assert _parse("pypi", payload) == ["2.10.0.post1", "2.9.1", "2.7.0"]


def test_npm_deprecated_string_only() -> None:
    payload = {
        "versions": {
            "1.0.0": {},
            "1.1.0": {"deprecated": "use 2.x"},
            "1.2.0": {"deprecated": ""},  # npm un-deprecates with an empty message
            "1.3.0": {"deprecated": False},
            "2.0.0-beta.1": {},
            "2.0.0": "not an object",
        }
    }
    assert _parse("npm", payload) == ["1.3.0", "1.2.0", "1.0.0"]


def test_github_drafts_prereleases_and_odd_tags_skipped() -> None:
    release = {"draft": False, "prerelease": False}
    payload = [
        {**release, "tag_name": "v2.9.1"},
        {**release, "tag_name": "v3.0.0", "draft": True},
        {**release, "tag_name": "v2.10.0", "prerelease": True},
        {**release, "tag_name": "v2.9.2-rc.1"},
        {**release, "tag_name": "v2.9.3", "draft": None},
        {**release, "tag_name": "2.9.4"},  # no prefix
        {**release, "tag_name": "vv2.9.5"},  # after the prefix, not a version
        {**release, "tag_name": "nightly"},
        {**release, "tag_name": 5},
        "v2.9.6",
    ]
    assert _parse("github-releases", payload) == ["2.9.1"]
    assert _parse("github-releases", [{**release, "tag_name": "2.9.4"}], tag_prefix="") == ["2.9.4"]


# --- rules for every kind ------------------------------------------------------------


@pytest.mark.parametrize(
    "version",
    [
        "1.2.3 ",  # space
        "1.2.3!",
        "1!2.3",  # an epoch: valid PEP 440, outside the characters allowed
        "1.2.3\u0661",  # a non-ASCII digit
        "1." + "1" * 63,  # 65 characters
        "1.2.3.4.banana",  # the characters pass; packaging does not parse it
        "",
    ],
)
def test_unusable_versions_are_skipped(version: str) -> None:
    got = _parse("node", [{"version": "v1.0.0"}, {"version": f"v{version}"}])
    assert got == ["1.0.0"]


def test_longest_allowed_version() -> None:
    version = "1." + "1" * 62  # 64 characters
    assert _parse("node", [{"version": f"v{version}"}]) == [version]


def test_spelt_as_upstream_deduplicated_and_sorted_highest_first() -> None:
    payload = {
        "releases": {
            version: [{"yanked": False}]
            for version in ["0.12.01", "0.12.1", "1.2", "1.2.0", "1.10.0", "1.9.9", "10.0"]
        }
    }
    expected = ["10.0", "1.10.0", "1.9.9", "1.2.0", "1.2", "0.12.1", "0.12.01"]
    assert _parse("pypi", payload) == expected


def test_more_than_max_versions_keeps_the_highest() -> None:
    count = indexes.MAX_VERSIONS + 5
    payload = [{"version": f"v1.{n}.0"} for n in range(count)]
    got = _parse("node", payload)
    assert len(got) == indexes.MAX_VERSIONS
    assert got[0] == f"1.{count - 1}.0"
    assert got[-1] == "1.5.0"
    assert got == sorted(got, key=Version, reverse=True)


@pytest.mark.parametrize(
    ("kind", "payload", "fragment"),
    [
        ("node", {"version": "v1.0.0"}, "is a JSON object; expected a JSON list"),
        ("go", "go1.25.5", "is a JSON string; expected a JSON list"),
        ("github-releases", None, "is JSON null; expected a JSON list"),
        ("pypi", [], 'is a JSON list; expected a JSON object whose "releases"'),
        ("pypi", {"info": {}}, '"releases" is missing'),
        ("pypi", {"releases": ["1.0"]}, '"releases" is a JSON list'),
        ("npm", 5, 'is a JSON number; expected a JSON object whose "versions"'),
        ("npm", {"versions": True}, '"versions" is a JSON boolean'),
    ],
)
def test_wrong_top_level_shape(kind: IndexKind, payload: Any, fragment: str) -> None:
    assert fragment in _error(kind, json.dumps(payload).encode())


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("node", []),
        ("node", [1, "v1.0.0", None, {"name": "v1.0.0"}]),
        ("go", [{"version": "go1.26rc1", "stable": False}]),
        ("pypi", {"releases": {}}),
        ("npm", {"versions": {"1.0.0-rc.1": {}}}),
        ("github-releases", [{"tag_name": "v1.0.0", "draft": True, "prerelease": False}]),
    ],
)
def test_nothing_usable_is_an_error(kind: IndexKind, payload: Any) -> None:
    message = _error(kind, json.dumps(payload).encode())
    assert f"the {kind} index lists no stable release version" in message


def test_over_max_bytes() -> None:
    body = b" " * (indexes.MAX_BYTES + 1)
    message = _error("node", body)
    assert f"over the limit of {indexes.MAX_BYTES}" in message
    assert "a JSON list of release objects" in message


def test_not_utf8() -> None:
    assert "not UTF-8" in _error("npm", b'{"versions": {"1.0.0": {"x": "\xff"}}}')


@pytest.mark.parametrize("body", [b"", b"<html>rate limited</html>", b"[{]", b'{"a": 1} x'])
def test_not_json(body: bytes) -> None:
    assert "is not JSON" in _error("go", body)


def test_integer_too_long_for_json() -> None:
    assert "is not JSON" in _error("node", b"[" + b"9" * 5000 + b"]")


def test_nested_too_deep() -> None:
    assert "nested too deep" in _error("pypi", b"[" * 100_000 + b"]" * 100_000)


def test_messages_quote_no_payload() -> None:
    secret = "payload-text-" * 20
    for body in (
        f"<html>{secret}</html>".encode(),
        json.dumps({"releases": secret}).encode(),
        json.dumps({"versions": {secret: {}}}).encode(),
        json.dumps([{"tag_name": secret, "draft": False, "prerelease": False}]).encode(),
    ):
        for kind in ("pypi", "npm", "github-releases"):
            with pytest.raises(VersionIndexError) as caught:
                indexes.parse(kind, body, source=SOURCE)
            message = str(caught.value)
            assert "payload-text" not in message
            assert len(message) < len(SOURCE) + 250


def test_source_passed_through_as_given() -> None:
    source = "https://mirror.example/pypi/x/json?page=2"
    with pytest.raises(VersionIndexError, match=r"^https://mirror\.example/pypi/x/json\?page=2: "):
        indexes.parse("pypi", b"[]", source=source)


# --- python-build-standalone: versions from release assets, with their tag ----------


def _pbs_release(tag: str, names: list[str], **flags: Any) -> dict[str, Any]:
    # A GitHub release object as the REST API serves one (the shape of
    # github-business-releases.json), with asset objects as GitHub documents them.
    base = f"https://github.com/astral-sh/python-build-standalone/releases/download/{tag}"
    assets = [
        {"name": n, "state": "uploaded", "size": 1, "browser_download_url": f"{base}/{n}"}
        for n in names
    ]
    return {"tag_name": tag, "draft": False, "prerelease": False, "assets": assets, **flags}


def test_python_build_standalone_versions_carry_their_release_tag() -> None:
    newest = _pbs_release(
        "20251120",
        [
            "cpython-3.14.1+20251120-x86_64-unknown-linux-gnu-install_only.tar.gz",
            "cpython-3.14.1+20251120-x86_64-unknown-linux-gnu-install_only.tar.gz.sha256",
            "cpython-3.13.10+20251120-aarch64-apple-darwin-install_only.tar.gz",
            "cpython-3.15.0a2+20251120-x86_64-unknown-linux-gnu-install_only.tar.gz",
            "cpython-3.14.1+20251120-x86_64-unknown-linux-gnu-debug-full.tar.zst",
            "cpython-3.12.99+20250101-x86_64-unknown-linux-gnu-install_only.tar.gz",  # not its tag
            "SHA256SUMS",
        ],
    )
    older = _pbs_release(
        "20251031",
        [
            "cpython-3.14.0+20251031-x86_64-unknown-linux-gnu-install_only.tar.gz",
            "cpython-3.13.10+20251031-x86_64-unknown-linux-gnu-install_only.tar.gz",
        ],
    )
    draft = _pbs_release(
        "20251201",
        ["cpython-3.14.2+20251201-x86_64-unknown-linux-gnu-install_only.tar.gz"],
        draft=True,
    )
    body = json.dumps([draft, newest, older]).encode()
    found = indexes.parse_vars("python-build-standalone", body, source=SOURCE)
    assert found == {
        "3.14.1": {"release": "20251120"},
        "3.14.0": {"release": "20251031"},
        "3.13.10": {"release": "20251120"},  # the newest release that has it
    }
    assert indexes.parse("python-build-standalone", body, source=SOURCE) == [
        "3.14.1",
        "3.14.0",
        "3.13.10",
    ]


def test_python_build_standalone_needs_releases_with_assets() -> None:
    message = _error(
        "python-build-standalone", json.dumps([{"tag_name": "v1.0.0", "draft": False}]).encode()
    )
    assert "lists no stable release version" in message
    assert "install_only.tar.gz" in message
