"""Credentials for mirrors that demand them, against a real loopback mirror that answers
401 without them: a header read from a file (per URL prefix, the longest winning,
re-read so a rotated secret takes effect), a netrc file, and everything that can be
wrong with either, named by file and never by content."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import os
from pathlib import Path

import pytest

from agent.config import models
from agent.install import plans, protocol
from agent.install.fetch import credentials, downloads
from agent.install.fetch.downloads import DownloadCache, DownloadError
from agent.store import layout
from tests.support import fixtures
from tests.support.server import Server, ok, redirect

BODY = b"mirrored archive " * 500
DIGEST = hashlib.sha256(BODY).hexdigest()
UPSTREAM = "https://upstream.invalid/v1/tool.tgz"
FAST = downloads.Policy(
    connect_timeout=2.0,
    stall_timeout=0.5,
    attempts=2,
    backoff_initial=0.01,
    backoff_max=0.05,
    user_agent="runner-agent-test",
)


@pytest.fixture
def cache(tmp_path: Path) -> DownloadCache:
    return DownloadCache(tmp_path / "downloads")


def mirrored(server: Server, **found: object) -> downloads.Policy:
    """FAST with upstream.invalid mirrored at ``server``'s /mirror/, and ``found``'s
    credentials."""
    mirrors = (("https://upstream.invalid/", server.url("/mirror/")),)
    made = credentials.Credentials(**found)  # type: ignore[arg-type]
    return dataclasses.replace(FAST, mirrors=mirrors, credentials=made)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_header_file_serves_a_mirror_that_demands_it_and_a_rotation_takes_effect(
    tmp_path: Path, http_server: Server, cache: DownloadCache
) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(BODY))
    http_server.route("/mirror/v2/tool.tgz", ok(BODY + b"2"))
    http_server.require("/mirror/", "X-JFrog-Art-Api", "k3y-one")
    secret = write(tmp_path / "header", "X-JFrog-Art-Api: k3y-one\n")
    policy = mirrored(http_server, headers=((http_server.url("/mirror/"), secret),))

    artifact = downloads.fetch(UPSTREAM, cache, sha256=DIGEST, policy=policy)
    assert artifact.path.read_bytes() == BODY

    # The secret rotates (a Kubernetes secret volume updates in place): no restart.
    http_server.require("/mirror/", "X-JFrog-Art-Api", "k3y-two")
    write(secret, "X-JFrog-Art-Api: k3y-two")
    again = downloads.fetch(UPSTREAM.replace("v1", "v2"), cache, sha256=None, policy=policy)
    assert again.path.read_bytes() == BODY + b"2"
    assert "k3y" not in again.url


def test_without_its_credentials_the_mirror_refuses_and_the_error_says_where_they_go(
    http_server: Server, cache: DownloadCache
) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(BODY))
    http_server.require("/mirror/", "Authorization", "Bearer t0k")
    with pytest.raises(DownloadError) as caught:
        downloads.fetch(UPSTREAM, cache, sha256=DIGEST, policy=mirrored(http_server))
    assert "HTTP 401" in str(caught.value)
    assert "installer.mirror_headers or installer.netrc" in str(caught.value)
    assert not caught.value.transient
    assert http_server.count("/mirror/v1/tool.tgz") == 1  # a 401 is not retried


def test_the_longest_matching_prefix_gives_the_header(
    tmp_path: Path, http_server: Server, cache: DownloadCache
) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(BODY))
    http_server.require("/mirror/v1/", "Authorization", "Bearer inner")
    outer = write(tmp_path / "outer", "Authorization: Bearer outer")
    inner = write(tmp_path / "inner", "Authorization: Bearer inner")
    found = ((http_server.url("/"), outer), (http_server.url("/mirror/v1/"), inner))
    downloads.fetch(UPSTREAM, cache, sha256=DIGEST, policy=mirrored(http_server, headers=found))


def test_a_netrc_entry_is_sent_as_basic_auth_to_its_host(
    tmp_path: Path, http_server: Server, cache: DownloadCache
) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(BODY))
    basic = "Basic " + base64.b64encode(b"ci-bot:n3trc-secret").decode()
    http_server.require("/mirror/", "Authorization", basic)
    netrc = write(
        tmp_path / "netrc",
        "machine other.invalid login x password y\n"
        "machine 127.0.0.1\n  login ci-bot\n  password n3trc-secret\n",
    )
    artifact = downloads.fetch(
        UPSTREAM, cache, sha256=DIGEST, policy=mirrored(http_server, netrc=netrc)
    )
    assert artifact.sha256 == DIGEST


def test_a_netrc_without_the_host_sends_nothing(
    tmp_path: Path, http_server: Server, cache: DownloadCache
) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(BODY))
    netrc = write(tmp_path / "netrc", "machine other.invalid login x password y\n")
    downloads.fetch(UPSTREAM, cache, sha256=DIGEST, policy=mirrored(http_server, netrc=netrc))
    [sent] = http_server.headers("/mirror/v1/tool.tgz")
    assert "Authorization" not in sent


def test_the_url_s_own_credentials_win_over_the_files(
    tmp_path: Path, http_server: Server, cache: DownloadCache
) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(BODY))
    header = write(tmp_path / "header", "Authorization: Bearer from-file")
    mirror = http_server.url("/mirror/").replace("http://", "http://u:pw@", 1)
    policy = dataclasses.replace(
        mirrored(http_server, headers=((http_server.url("/"), header),)),
        mirrors=(("https://upstream.invalid/", mirror),),
    )
    downloads.fetch(UPSTREAM, cache, sha256=DIGEST, policy=policy)
    [sent] = http_server.headers("/mirror/v1/tool.tgz")
    assert sent["Authorization"] == "Basic " + base64.b64encode(b"u:pw").decode()


def test_a_redirect_to_another_origin_does_not_carry_the_header(
    tmp_path: Path, http_server: Server, cache: DownloadCache
) -> None:
    with Server() as elsewhere:
        elsewhere.route("/blob/tool.tgz", ok(BODY))
        http_server.route("/mirror/v1/tool.tgz", redirect("/mirror/store/tool.tgz"))
        http_server.route("/mirror/store/tool.tgz", redirect(elsewhere.url("/blob/tool.tgz")))
        header = write(tmp_path / "header", "X-Api-Key: s3cret-key")
        found = ((http_server.url("/mirror/"), header),)
        downloads.fetch(UPSTREAM, cache, sha256=DIGEST, policy=mirrored(http_server, headers=found))
        [inside] = http_server.headers("/mirror/store/tool.tgz")
        [outside] = elsewhere.headers("/blob/tool.tgz")
    assert inside["X-Api-Key"] == "s3cret-key"
    assert "X-Api-Key" not in outside


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("no colon here s3cret", "does not hold one header line"),
        ("X-Api-Key: s3cret\nX-Other: s3cret", "does not hold one header line"),
        ("X-Api-Key: s3cret\r\nHost: evil", "does not hold one header line"),
        ("Host: s3cret", "does not hold one header line"),  # hop-by-hop: never ours to set
        ("Bad Name: s3cret", "does not hold one header line"),
        ("X-Api-Key:", "does not hold one header line"),
        ("X-Api-Key: s3cr\u00e9t", "does not hold one header line"),
        ("X-Api-Key: " + "s3cret" * 20000, "is over 65536 bytes"),
    ],
)
def test_a_bad_header_file_is_named_and_its_content_never_shown(
    tmp_path: Path,
    http_server: Server,
    cache: DownloadCache,
    caplog: pytest.LogCaptureFixture,
    content: str,
    expected: str,
) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(BODY))
    header = write(tmp_path / "header", content)
    policy = mirrored(http_server, headers=((http_server.url("/"), header),))
    with caplog.at_level(logging.DEBUG), pytest.raises(DownloadError) as caught:
        downloads.fetch(UPSTREAM, cache, sha256=DIGEST, policy=policy)
    assert expected in str(caught.value)
    assert str(header) in str(caught.value)
    assert "s3cr" not in str(caught.value)
    assert "s3cr" not in caplog.text
    assert not caught.value.transient
    assert http_server.count("/mirror/v1/tool.tgz") == 0  # nothing was sent


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path, cache: DownloadCache) -> None:
    found = credentials.Credentials(headers=(("https://m.invalid/", tmp_path / "absent"),))
    with pytest.raises(credentials.CredentialError, match="cannot be read"):
        found.for_url("https://m.invalid/x")
    folder = credentials.Credentials(netrc=tmp_path)
    with pytest.raises(credentials.CredentialError, match="is not a regular file"):
        folder.for_url("https://m.invalid/x")


def test_a_bad_netrc_is_named_by_line_without_the_token_it_choked_on(tmp_path: Path) -> None:
    netrc = write(tmp_path / "netrc", "machine m.invalid login u password p\nhunter2-secret\n")
    with pytest.raises(credentials.CredentialError) as caught:
        credentials.Credentials(netrc=netrc).for_url("https://m.invalid/x")
    assert "is not netrc syntax near line" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_netrc_default_entry_serves_any_host(tmp_path: Path) -> None:
    netrc = write(tmp_path / "netrc", "default login anon password guest\n")
    sent = credentials.Credentials(netrc=netrc).for_url("https://m.invalid/x")
    assert sent == {"Authorization": "Basic " + base64.b64encode(b"anon:guest").decode()}


def test_an_install_through_the_settings_is_served_by_a_mirror_that_demands_a_token(
    tmp_path: Path, http_server: Server
) -> None:
    # From the settings as written, through the options the agent builds from them.
    body = fixtures.tar_gz({"bin/tool": (b"#!/bin/sh\necho tool 1.0.0\n", 0o755)}, top="tool")
    catalog = fixtures.archive_catalog(tmp_path / "cat", "tool", body)
    http_server.route("/x/tool-1.0.0.tar.gz", ok(body))
    http_server.require("/x/", "Authorization", "Bearer ci-t0ken")
    header = write(tmp_path / "token-header", "Authorization: Bearer ci-t0ken\n")
    settings = models.Settings.model_validate(
        {
            "installer": {
                "mirrors": {"https://example.invalid/": http_server.url("/x/")},
                "mirror_headers": {http_server.url("/x/"): str(header)},
            }
        }
    )
    assert "ci-t0ken" not in str(settings.shown())
    store = tmp_path / "store"

    [done] = plans.ensure_plan(
        layout.Store(store),
        fixtures.plan_for(catalog, "tool", store),
        options=protocol.options_from(settings.installer, native=False),
    ).installed

    assert done.receipt.sources[0].url == http_server.url("/x/tool-1.0.0.tar.gz")
    assert "ci-t0ken" not in done.entry.receipt.read_text()
    log = store / ".runner-agent" / "logs" / f"{done.entry.key}.log"
    assert "ci-t0ken" not in log.read_text()


def test_a_prefix_matches_at_a_slash_only(tmp_path: Path) -> None:
    header = write(tmp_path / "header", "Authorization: Bearer s3cret")
    found = credentials.Credentials(headers=(("https://mirror.invalid/", header),))
    assert found.for_url("https://mirror.invalid/x") == {"Authorization": "Bearer s3cret"}
    assert found.for_url("https://mirror.invalid.evil.invalid/x") == {}
    [problem] = [
        str(e) for e in _errors({"mirror_headers": {"https://mirror.invalid": str(header)}})
    ]
    assert "must end in '/'" in problem


def _errors(installer: dict[str, object]) -> list[str]:
    try:
        models.Settings.model_validate({"installer": installer})
    except ValueError as exc:
        return [str(exc)]
    return []


@pytest.mark.parametrize("name", ["Accept-Encoding", "User-Agent", "Range", "TE"])
def test_a_header_the_transfer_owns_is_refused(tmp_path: Path, name: str) -> None:
    header = write(tmp_path / "header", f"{name}: gzip")
    with pytest.raises(credentials.CredentialError, match="does not hold one header line"):
        credentials.header_from(header)


def test_a_fifo_is_refused_rather_than_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "netrc"
    os.mkfifo(fifo)
    with pytest.raises(credentials.CredentialError, match="is not a regular file"):
        credentials.Credentials(netrc=fifo).for_url("https://m.invalid/x")
