"""Downloads against a real HTTP server: verified, content-addressed, retried when it helps."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import logging
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from agent.install.fetch import downloads, transport
from agent.install.fetch.downloads import DownloadCache, DownloadError, Policy
from agent.kits import progress
from tests.support.server import Reply, Server, fail, ok, redirect, slow_down, stalled, truncated

FAST = Policy(
    connect_timeout=2.0,
    stall_timeout=0.5,
    attempts=3,
    backoff_initial=0.01,
    backoff_max=0.05,
    user_agent="runner-agent-test",
)
BODY = b"tool archive " * 1000
DIGEST = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def cache(tmp_path: Path) -> DownloadCache:
    return DownloadCache(tmp_path / "downloads")


def files_in(cache: DownloadCache) -> list[Path]:
    """Every file under the cache, temporary ones included."""
    return sorted(p for p in cache.root.rglob("*") if p.is_file()) if cache.root.exists() else []


# --- the happy path and the cache -----------------------------------------------------


def test_a_download_is_stored_by_its_digest_and_a_cache_hit_sends_no_request(
    http_server: Server, cache: DownloadCache
) -> None:
    url = http_server.route("/tool.tgz", ok(BODY))

    first = downloads.fetch(url, cache, sha256=DIGEST, policy=FAST)
    again = downloads.fetch(url, cache, sha256=DIGEST.upper(), policy=FAST)

    assert first.path == cache.root / DIGEST[:2] / DIGEST
    assert first.path.read_bytes() == BODY
    assert (first.sha256, first.size, first.url) == (DIGEST, len(BODY), url)
    assert again == first
    assert http_server.count("/tool.tgz") == 1
    assert http_server.headers("/tool.tgz")[0]["User-Agent"] == "runner-agent-test"
    assert files_in(cache) == [first.path]


def test_without_a_digest_the_file_is_still_stored_by_its_content(
    http_server: Server, cache: DownloadCache
) -> None:
    url = http_server.route("/tool.tgz", ok(BODY, content_length=False))

    artifact = downloads.fetch(url, cache, sha256=None, policy=FAST)

    assert artifact.sha256 == DIGEST
    assert cache.get(DIGEST) == artifact.path
    assert artifact.size == len(BODY)


def test_credentials_in_a_url_are_not_shown_in_errors(cache: DownloadCache) -> None:
    with pytest.raises(DownloadError) as caught:
        downloads.fetch("ftp://me:s3cret@host:8021/x", cache, sha256=None, policy=FAST)

    assert "s3cret" not in str(caught.value)
    assert "ftp://me:***@host:8021/x" in str(caught.value)


def test_a_digest_that_is_not_hex_is_refused_by_the_cache() -> None:
    with pytest.raises(ValueError, match="not a sha256 digest"):
        DownloadCache(Path("/nonexistent")).path_for("../../etc/passwd")


def test_a_redirect_is_followed(http_server: Server, cache: DownloadCache) -> None:
    http_server.route("/real.tgz", ok(BODY))
    url = http_server.route("/latest.tgz", redirect("/real.tgz"))

    artifact = downloads.fetch(url, cache, sha256=DIGEST, policy=FAST)

    assert artifact.path.read_bytes() == BODY
    assert (http_server.count("/latest.tgz"), http_server.count("/real.tgz")) == (1, 1)


# --- refusals that are final ----------------------------------------------------------


def test_a_wrong_hash_is_refused_once_and_nothing_is_cached(
    http_server: Server, cache: DownloadCache
) -> None:
    url = http_server.route("/tool.tgz", ok(b"something else"))

    with pytest.raises(DownloadError) as caught:
        downloads.fetch(url, cache, sha256=DIGEST, policy=FAST)

    actual = hashlib.sha256(b"something else").hexdigest()
    message = str(caught.value)
    assert DIGEST in message
    assert actual in message
    assert "artifact or the manifest is wrong" in message
    assert not caught.value.transient
    assert isinstance(caught.value, transport.ChecksumMismatch)
    assert (caught.value.expected, caught.value.actual) == (DIGEST, actual)
    assert http_server.count("/tool.tgz") == 1
    assert files_in(cache) == []


def test_a_404_fails_at_once(http_server: Server, cache: DownloadCache) -> None:
    url = http_server.route("/missing.tgz", fail(404))

    with pytest.raises(DownloadError, match="HTTP 404") as caught:
        downloads.fetch(url, cache, sha256=DIGEST, policy=FAST)

    assert not caught.value.transient
    assert caught.value.url == url
    assert http_server.count("/missing.tgz") == 1


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "example.com/x"])
def test_only_http_and_https_urls_are_fetched(url: str, cache: DownloadCache) -> None:
    with pytest.raises(DownloadError, match="is not allowed") as caught:
        downloads.fetch(url, cache, sha256=None, policy=FAST)
    assert not caught.value.transient


def test_a_redirect_to_a_file_url_is_refused(http_server: Server, cache: DownloadCache) -> None:
    url = http_server.route("/tool.tgz", redirect("file:///etc/passwd"))

    with pytest.raises(DownloadError, match="url 'file:///etc/passwd' is not allowed") as caught:
        downloads.fetch(url, cache, sha256=None, policy=FAST)

    assert "redirects are followed to https only" in str(caught.value)
    assert not caught.value.transient

    assert http_server.count("/tool.tgz") == 1
    assert files_in(cache) == []


@pytest.mark.parametrize(
    ("old", "new"), [("https://a.example/x", "http://a.example/x"), ("http://a/x", "ftp://a/x")]
)
def test_a_redirect_down_to_http_or_to_ftp_is_refused(old: str, new: str) -> None:
    # A real https server would need a certificate; the redirect rule is checked directly.
    response = io.BytesIO(b"")
    request = urllib.request.Request(old)  # noqa: S310 - built, never opened

    with pytest.raises(DownloadError, match=f"redirected to '{new}', which is not allowed"):
        transport._Redirects().redirect_request(request, response, 302, "Found", {}, new)

    assert response.closed


@pytest.mark.parametrize("content_length", [True, False], ids=["declared", "counted"])
def test_a_body_over_max_bytes_is_refused_at_once(
    http_server: Server, cache: DownloadCache, content_length: bool
) -> None:
    url = http_server.route("/huge.tgz", ok(BODY, content_length=content_length))
    policy = dataclasses.replace(FAST, max_bytes=len(BODY) - 1)

    with pytest.raises(DownloadError, match="the limit is") as caught:
        downloads.fetch(url, cache, sha256=None, policy=policy)

    assert not caught.value.transient
    assert http_server.count("/huge.tgz") == 1
    assert files_in(cache) == []


# --- transient failures are retried ---------------------------------------------------


def test_a_truncated_body_is_retried_then_fails_clearly_after_all_attempts(
    http_server: Server, cache: DownloadCache, caplog: pytest.LogCaptureFixture
) -> None:
    url = http_server.route("/tool.tgz", truncated(BODY))

    with (
        caplog.at_level(logging.WARNING, logger="agent.install.fetch.downloads"),
        pytest.raises(DownloadError) as caught,
    ):
        downloads.fetch(url, cache, sha256=DIGEST, policy=FAST)

    message = str(caught.value)
    assert f"body cut short: {len(BODY) // 2} of {len(BODY)} bytes" in message
    assert "gave up after 3 attempts" in message
    assert caught.value.transient
    assert http_server.count("/tool.tgz") == 3
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "attempt 1 of 3" in warnings[0]
    assert "attempt 2 of 3" in warnings[1]
    assert "cut short" in warnings[0]
    assert files_in(cache) == []


def test_a_server_error_then_success_takes_two_requests(
    http_server: Server, cache: DownloadCache
) -> None:
    url = http_server.route("/tool.tgz", fail(500), ok(BODY))

    artifact = downloads.fetch(url, cache, sha256=DIGEST, policy=FAST)

    assert artifact.path.read_bytes() == BODY
    assert http_server.count("/tool.tgz") == 2


def test_a_stall_mid_body_is_detected_and_retried(
    http_server: Server, cache: DownloadCache, caplog: pytest.LogCaptureFixture
) -> None:
    url = http_server.route("/tool.tgz", stalled(BODY), ok(BODY))

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="agent.install.fetch.downloads"):
        artifact = downloads.fetch(url, cache, sha256=DIGEST, policy=FAST)

    assert artifact.path.read_bytes() == BODY
    assert http_server.count("/tool.tgz") == 2
    assert time.monotonic() - started < 5  # the stall lasts 30 s: it was cut at 0.5 s
    assert "no data for 0.5s after" in caplog.text
    assert "the server stalled" in caplog.text


def test_a_429_retry_after_is_honoured(http_server: Server, cache: DownloadCache) -> None:
    url = http_server.route("/tool.tgz", slow_down("1"), ok(BODY))
    policy = dataclasses.replace(FAST, backoff_max=5.0)

    started = time.monotonic()
    downloads.fetch(url, cache, sha256=DIGEST, policy=policy)

    assert time.monotonic() - started >= 0.95
    assert http_server.count("/tool.tgz") == 2


def test_a_long_retry_after_is_capped_by_backoff_max(
    http_server: Server, cache: DownloadCache
) -> None:
    url = http_server.route("/tool.tgz", slow_down("3600"), ok(BODY))

    started = time.monotonic()
    downloads.fetch(url, cache, sha256=DIGEST, policy=FAST)

    assert time.monotonic() - started < 2
    assert http_server.count("/tool.tgz") == 2


def test_a_refused_connection_is_retried_then_reported(cache: DownloadCache) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(DownloadError, match="gave up after 3 attempts") as caught:
        downloads.fetch(f"http://127.0.0.1:{port}/x.tgz", cache, sha256=None, policy=FAST)

    assert "ConnectionRefusedError" in str(caught.value)
    assert caught.value.transient


# --- mirrors --------------------------------------------------------------------------


def test_mirrors_rewrite_by_prefix_and_the_first_match_wins() -> None:
    policy = Policy(
        mirrors=(
            ("https://nodejs.org/dist/", "https://artifactory.example/nodejs-dist/"),
            ("https://nodejs.org/", "https://elsewhere.example/"),
        )
    )

    assert (
        downloads.rewrite("https://nodejs.org/dist/v20.0.0/node.tar.gz", policy)
        == "https://artifactory.example/nodejs-dist/v20.0.0/node.tar.gz"
    )
    assert (
        downloads.rewrite("https://nodejs.org/other", policy) == "https://elsewhere.example/other"
    )
    assert downloads.rewrite("https://go.dev/dl/go.tgz", policy) == "https://go.dev/dl/go.tgz"


def test_a_mirrored_fetch_hits_the_mirror(http_server: Server, cache: DownloadCache) -> None:
    mirrored = http_server.route("/mirror/v1/tool.tgz", ok(BODY))
    policy = dataclasses.replace(
        FAST, mirrors=(("https://upstream.invalid/", http_server.url("/mirror/")),)
    )

    artifact = downloads.fetch(
        "https://upstream.invalid/v1/tool.tgz", cache, sha256=DIGEST, policy=policy
    )

    assert artifact.url == mirrored
    assert http_server.count("/mirror/v1/tool.tgz") == 1


def with_credentials(url: str, userinfo: str = "user:p@ss-secret") -> str:
    return url.replace("http://", f"http://{userinfo}@", 1)


def secret_mirror(server: Server, userinfo: str = "user:p@ss-secret") -> Policy:
    """FAST, with upstream.invalid mirrored at ``server``'s /mirror/ behind ``userinfo``."""
    mirror = with_credentials(server.url("/mirror/"), userinfo)
    return dataclasses.replace(FAST, mirrors=(("https://upstream.invalid/", mirror),))


def test_a_mirrors_credentials_are_sent_as_basic_auth_and_never_recorded(
    http_server: Server, cache: DownloadCache, caplog: pytest.LogCaptureFixture
) -> None:
    mirrored = http_server.route("/mirror/v1/tool.tgz", fail(503), ok(BODY))
    events: list[dict[str, object]] = []

    with (
        progress.listening(lambda event, data: events.append(data)),
        caplog.at_level(logging.WARNING, logger="agent.install.fetch.downloads"),
    ):
        artifact = downloads.fetch(
            "https://upstream.invalid/v1/tool.tgz",
            cache,
            sha256=None,
            policy=secret_mirror(http_server),
        )

    assert artifact.path.read_bytes() == BODY
    assert artifact.url == with_credentials(mirrored, "user:***")
    # What the server got: the bare path, the credentials in the Authorization header.
    basic = "Basic " + base64.b64encode(b"user:p@ss-secret").decode()
    assert [h.get("Authorization") for h in http_server.headers("/mirror/v1/tool.tgz")] == [
        basic,
        basic,
    ]
    assert "ss-secret" not in caplog.text  # the retry's warning
    assert "user:***@" in caplog.text
    assert events
    assert "ss-secret" not in str(events)  # progress, as clients see it


def test_a_token_alone_is_sent_as_the_user_name(http_server: Server, cache: DownloadCache) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(BODY))
    policy = secret_mirror(http_server, "t0k")

    artifact = downloads.fetch(
        "https://upstream.invalid/v1/tool.tgz", cache, sha256=DIGEST, policy=policy
    )

    assert artifact.url == with_credentials(http_server.url("/mirror/v1/tool.tgz"), "***")
    [headers] = http_server.headers("/mirror/v1/tool.tgz")
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"t0k:").decode()


@pytest.mark.parametrize("reply", [fail(404), fail(500)], ids=["fatal", "retried"])
def test_a_failure_at_a_mirror_with_credentials_does_not_show_them(
    http_server: Server, cache: DownloadCache, reply: Reply
) -> None:
    http_server.route("/mirror/v1/tool.tgz", reply)

    with pytest.raises(DownloadError) as caught:
        downloads.fetch(
            "https://upstream.invalid/v1/tool.tgz",
            cache,
            sha256=DIGEST,
            policy=secret_mirror(http_server),
        )

    assert "ss-secret" not in str(caught.value)
    assert "ss-secret" not in caught.value.url
    assert with_credentials(http_server.url("/mirror/v1/tool.tgz"), "user:***") in str(caught.value)


def test_a_checksum_at_a_mirror_with_credentials_is_fetched_and_errors_hide_them(
    http_server: Server,
) -> None:
    http_server.route("/mirror/SHASUMS256.txt", ok(SUMS))
    policy = secret_mirror(http_server)

    url = "https://upstream.invalid/SHASUMS256.txt"
    assert downloads.fetch_checksum(url, "tool-1.0-linux-x64.tar.gz", policy=policy) == DIGEST
    with pytest.raises(DownloadError) as caught:
        downloads.fetch_checksum(url, "not-listed.tar.gz", policy=policy)
    assert "ss-secret" not in str(caught.value)


def test_a_mirrors_credentials_follow_a_redirect_within_it_and_no_further(
    http_server: Server, cache: DownloadCache
) -> None:
    with Server() as elsewhere:
        http_server.route("/mirror/v1/tool.tgz", redirect("/storage/tool.tgz"))
        http_server.route("/storage/tool.tgz", redirect(elsewhere.url("/blob/tool.tgz")))
        elsewhere.route("/blob/tool.tgz", ok(BODY))

        downloads.fetch(
            "https://upstream.invalid/v1/tool.tgz",
            cache,
            sha256=DIGEST,
            policy=secret_mirror(http_server),
        )

        [inside] = http_server.headers("/storage/tool.tgz")
        [outside] = elsewhere.headers("/blob/tool.tgz")
    assert inside["Authorization"].startswith("Basic ")
    assert "Authorization" not in outside


# --- checksum files -------------------------------------------------------------------

OTHER = "ab" * 32
SUMS = f"""\
# a comment, and a line that is not a checksum at all
not-hex  tool-1.0-linux-arm64.tar.gz
{DIGEST}  tool-1.0-linux-x64.tar.gz
{OTHER.upper()} *tool-1.0-linux-arm64.tar.gz
SHA256 (tool-1.0-darwin-arm64.tar.gz) = {"cd" * 32}
{"ef" * 32}  ./tool-1.0-windows-x64.zip
MD5 (tool-1.0-linux-x64.tar.gz) = d41d8cd98f00b204e9800998ecf8427e
""".encode()


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("tool-1.0-linux-x64.tar.gz", DIGEST),  # GNU text mode
        ("tool-1.0-linux-arm64.tar.gz", OTHER),  # GNU binary mode, upper case hex
        ("tool-1.0-darwin-arm64.tar.gz", "cd" * 32),  # BSD
        ("tool-1.0-windows-x64.zip", "ef" * 32),  # listed as ./name
    ],
)
def test_a_checksum_file_gives_the_digest_for_a_name(
    http_server: Server, file_name: str, expected: str
) -> None:
    url = http_server.route("/SHASUMS256.txt", ok(SUMS))

    assert downloads.fetch_checksum(url, file_name, policy=FAST) == expected


@pytest.mark.parametrize("body", [f"{DIGEST}\n", f"  {DIGEST.upper()}", DIGEST])
def test_a_file_of_one_bare_digest_is_the_digest_of_its_one_file(
    http_server: Server, body: str
) -> None:
    # dl.k8s.io/.../kubectl.sha256 and go.dev/dl's *.tar.gz.sha256 hold the hex alone.
    url = http_server.route("/kubectl.sha256", ok(body.encode()))

    assert downloads.fetch_checksum(url, "kubectl", policy=FAST) == DIGEST


@pytest.mark.parametrize("body", [f"{DIGEST} {DIGEST}", f"{DIGEST[:-1]}", f"{DIGEST}0"])
def test_anything_else_without_a_name_is_no_digest(http_server: Server, body: str) -> None:
    url = http_server.route("/kubectl.sha256", ok(body.encode()))

    with pytest.raises(DownloadError, match="no sha256 or sha512 entry for 'kubectl'"):
        downloads.fetch_checksum(url, "kubectl", policy=FAST)


def test_a_name_missing_from_the_checksum_file_is_an_error(http_server: Server) -> None:
    url = http_server.route("/SHASUMS256.txt", ok(SUMS))

    with pytest.raises(DownloadError) as caught:
        downloads.fetch_checksum(url, "tool-1.0-plan9.tar.gz", policy=FAST)

    message = str(caught.value)
    assert "no sha256 or sha512 entry for 'tool-1.0-plan9.tar.gz'" in message
    assert url in message
    assert not caught.value.transient


def test_a_checksum_file_over_one_mib_is_refused(http_server: Server) -> None:
    url = http_server.route("/SHASUMS256.txt", ok(b"#" * (1024 * 1024 + 1)))

    with pytest.raises(DownloadError, match="the limit is 1048576"):
        downloads.fetch_checksum(url, "tool.tgz", policy=FAST)


def test_a_checksum_file_is_fetched_through_mirrors_and_retries(http_server: Server) -> None:
    mirrored = http_server.route("/mirror/SHASUMS256.txt", fail(503), ok(SUMS))
    policy = dataclasses.replace(
        FAST, mirrors=(("https://upstream.invalid/", http_server.url("/mirror/")),)
    )

    digest = downloads.fetch_checksum(
        "https://upstream.invalid/SHASUMS256.txt", "tool-1.0-linux-x64.tar.gz", policy=policy
    )

    assert digest == DIGEST
    assert http_server.count("/mirror/SHASUMS256.txt") == 2
    assert mirrored.endswith("/mirror/SHASUMS256.txt")


# --- the test server itself -----------------------------------------------------------


def test_the_server_stops_promptly_and_leaves_no_threads_even_mid_stall(
    cache: DownloadCache,
) -> None:
    before = set(threading.enumerate())
    started = time.monotonic()
    with Server() as server:
        url = server.route("/tool.tgz", Reply(body=BODY, send=10, stall=60.0))
        with pytest.raises(DownloadError, match="the server stalled"):
            downloads.fetch(url, cache, sha256=None, policy=dataclasses.replace(FAST, attempts=1))

    assert set(threading.enumerate()) == before
    assert time.monotonic() - started < 5


def test_a_link_planted_for_a_cache_folder_sends_nothing_outside(
    http_server: Server, cache: DownloadCache, tmp_path: Path
) -> None:
    url = http_server.route("/tool.tgz", ok(BODY))
    outside = tmp_path / "outside"
    outside.mkdir()
    cache.root.mkdir()
    (cache.root / DIGEST[:2]).symlink_to(outside, target_is_directory=True)
    # A file planted where the digest points is no cache hit either.
    (outside / DIGEST).write_bytes(b"planted")
    assert cache.get(DIGEST) is None
    with pytest.raises(DownloadError, match="symlink"):
        downloads.fetch(url, cache, sha256=DIGEST, policy=FAST)
    assert sorted(p.name for p in outside.iterdir()) == [DIGEST]
    assert (outside / DIGEST).read_bytes() == b"planted"


def test_a_link_planted_for_the_downloads_folder_itself_is_refused(
    http_server: Server, tmp_path: Path
) -> None:
    url = http_server.route("/tool.tgz", ok(BODY))
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / ".runner-agent").mkdir(parents=True)
    (root / ".runner-agent" / "downloads").symlink_to(outside, target_is_directory=True)
    cache = DownloadCache(root / ".runner-agent" / "downloads", store_root=root)
    with pytest.raises(DownloadError, match="symlink"):
        downloads.fetch(url, cache, sha256=DIGEST, policy=FAST)
    assert list(outside.iterdir()) == []


# .NET's <release>-sha.txt: sha512 alone, "<hex> <name>" with ONE space, CRLF line ends,
# every file of the release listed.
def dotnet_sums(body: bytes, name: str) -> bytes:
    other = hashlib.sha512(b"another file").hexdigest()
    lines = [
        f"{other} dotnet-runtime-8.0.22-linux-x64.tar.gz",
        f"{hashlib.sha512(body).hexdigest()} {name}",
    ]
    return ("\r\n".join(["Hash: SHA512", "", *lines]) + "\r\n").encode()


def test_a_sha512_list_gives_the_sha512_and_the_download_is_verified_with_it(
    http_server: Server, tmp_path: Path
) -> None:
    body = b"an sdk archive"
    name = "dotnet-sdk-8.0.416-linux-x64.tar.gz"
    sums = http_server.route("/8.0.22-sha.txt", ok(dotnet_sums(body, name)))
    url = http_server.route(f"/{name}", ok(body))
    digest = downloads.fetch_checksum(sums, name, policy=FAST)
    assert digest == hashlib.sha512(body).hexdigest()
    cache = downloads.DownloadCache(tmp_path / "downloads")
    artifact = downloads.fetch(url, cache, sha256=None, sha512=digest, policy=FAST)
    assert artifact.sha256 == hashlib.sha256(body).hexdigest()
    assert artifact.path.read_bytes() == body


def test_a_sha512_mismatch_is_refused_and_nothing_is_kept(
    http_server: Server, tmp_path: Path
) -> None:
    url = http_server.route("/dotnet-sdk.tar.gz", ok(b"tampered"))
    cache = downloads.DownloadCache(tmp_path / "downloads")
    wanted = hashlib.sha512(b"the real one").hexdigest()
    with pytest.raises(transport.ChecksumMismatch) as caught:
        downloads.fetch(url, cache, sha256=None, sha512=wanted, policy=FAST)
    assert f"sha512 mismatch: expected {wanted}" in str(caught.value)
    assert [p for p in (tmp_path / "downloads").rglob("*") if p.is_file()] == []


def test_a_name_listed_once_per_algorithm_gives_its_sha256(http_server: Server) -> None:
    # yq's checksums-bsd (rhash --bsd -a): a line per algorithm for every file.
    body = (
        f"SHA256 (yq_linux_amd64) = {DIGEST}\n"
        f"SHA512 (yq_linux_amd64) = {'ab' * 64}\n"
        f"SHA3-256 (yq_linux_amd64) = {'cd' * 32}\n"
    )
    url = http_server.route("/checksums-bsd", ok(body.encode()))
    assert downloads.fetch_checksum(url, "yq_linux_amd64", policy=FAST) == DIGEST
