"""Credentials in URLs: hidden for what people read, whatever the URL's spelling."""

from __future__ import annotations

import time

import pytest

from agent.kits import urls


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cret@example.invalid/simple/", "https://user:***@example.invalid/simple/"),
        ("HTTP://user:s3cret@example.invalid:8080/", "HTTP://user:***@example.invalid:8080/"),
        ("Https://user:s3cret@example.invalid", "Https://user:***@example.invalid"),
        # The password holds "@": the split is at the last one before the host.
        ("https://user:p@ss@w@rd@example.invalid/x", "https://user:***@example.invalid/x"),
        ("https://user:p@ss@127.0.0.1:3128", "https://user:***@127.0.0.1:3128"),
        # A token alone as the user name: all of it goes.
        ("https://ghp_s3cret@example.invalid/o/r.git", "https://***@example.invalid/o/r.git"),
        ("git+https://s3cret@example.invalid/o/r", "git+https://***@example.invalid/o/r"),
        ("https://:s3cret@example.invalid/", "https://:***@example.invalid/"),
        ("https://user:s3cret@[::1]:8080/x", "https://user:***@[::1]:8080/x"),
        # An unencoded "#" or "?" ends urlsplit's userinfo early: the rest still goes.
        ("https://user:p#s3cret@example.invalid/", "https://user:***@example.invalid/"),
        ("https://user:p?s3cret@example.invalid/", "https://user:***@example.invalid/"),
        # Kept as written: geturl() would drop an empty query.
        ("https://user:s3cret@example.invalid/x?", "https://user:***@example.invalid/x?"),
    ],
)
def test_a_urls_credentials_are_hidden(url: str, shown: str) -> None:
    assert urls.hide_url(url) == shown
    assert urls.hide_urls(url) == shown
    assert "s3cret" not in shown


@pytest.mark.parametrize(
    "text",
    [
        "https://example.invalid/simple/",
        "https://example.invalid/a:b@c",  # an "@" in the path is no userinfo
        "https://example.invalid/@scope/pkg",  # npm's scoped packages
        "ssh://git@example.invalid/o/r",  # a user name that is only a user name
        "ftp://anonymous@example.invalid/pub",
        "https://@example.invalid/",
        "mailto:someone@example.invalid",
        "user:p@ss@example.invalid",
        "not a url at all",
        "",
        "https://[not-v6/x@y",
    ],
)
def test_what_carries_no_credentials_comes_back_unchanged(text: str) -> None:
    assert urls.hide_url(text) == text
    assert urls.hide_urls(text) == text


def test_a_user_name_with_a_password_is_kept_for_any_scheme() -> None:
    assert urls.hide_url("ftp://me:s3cret@example.invalid/x") == "ftp://me:***@example.invalid/x"


def test_every_url_in_a_message_is_hidden_and_the_rest_kept() -> None:
    text = (
        "fetching https://bot:p@ss@example.invalid/whl/cu128 via http://p:x@127.0.0.1:3128, "
        "then 'https://ghp_tok@example.invalid/o/r.git' and me@example.invalid"
    )
    assert urls.hide_urls(text) == (
        "fetching https://bot:***@example.invalid/whl/cu128 via http://p:***@127.0.0.1:3128, "
        "then 'https://***@example.invalid/o/r.git' and me@example.invalid"
    )
    # hide_url takes such a text too: it is no URL, the URLs in it are hidden.
    assert urls.hide_url(text) == urls.hide_urls(text)


def test_quotes_and_backslashes_end_a_url_in_a_repr() -> None:
    text = "{'proxy': 'http://u:s3cret@127.0.0.1:3128', 'mail': 'me@example.invalid'}"
    assert urls.hide_urls(text) == (
        "{'proxy': 'http://u:***@127.0.0.1:3128', 'mail': 'me@example.invalid'}"
    )
    raw = r"b'GET http://u:s3cret@127.0.0.1/ HTTP/1.1\r\nFrom: me@example.invalid'"
    assert "s3cret" not in urls.hide_urls(raw)
    assert "me@example.invalid" in urls.hide_urls(raw)


def test_hiding_twice_gives_what_hiding_once_did() -> None:
    for url in ("https://u:p@ss@example.invalid/", "https://tok@example.invalid/"):
        once = urls.hide_url(url)
        assert urls.hide_url(once) == once
        assert urls.hide_urls(once) == once


def test_the_mask_can_be_chosen() -> None:
    assert (
        urls.hide_url("https://u:s3cret@example.invalid/", mask="[redacted]")
        == "https://u:[redacted]@example.invalid/"
    )
    assert (
        urls.hide_urls("https://tok@example.invalid/", mask="[x]") == "https://[x]@example.invalid/"
    )


def test_a_huge_text_is_scanned_in_linear_time() -> None:
    # Log lines and install outputs can be long; a pattern that rescans from every letter
    # would take minutes on these.
    texts = ["a" * 200_000 + "://", "https://" + "a" * 200_000, "x://" * 50_000]
    start = time.monotonic()
    for text in texts:
        assert urls.hide_urls(text) == text
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # urlsplit reads "aws" as the host and "wJalr" as a port: still hidden.
        ("http://aws:wJalr/K7MD+bPx@127.0.0.1:9/x.tgz", "http://aws:***@127.0.0.1:9/x.tgz"),
        ("failed: http://aws:wJalr/K7MD@h/ x", "failed: http://aws:***@h/ x"),
        ("https://user:pa'ss@host/", "https://user:***@host/"),
        # A port, then a path with "@" (an npm scope): nothing to hide.
        ("https://host:8080/@types/node", "https://host:8080/@types/node"),
        ("https://u:p@host/@types/x", "https://u:***@host/@types/x"),
    ],
)
def test_a_password_with_a_slash_or_quote_is_hidden(text: str, shown: str) -> None:
    assert urls.hide_urls(text) == shown
    assert urls.hide_url(text) == shown


def test_a_host_part_that_does_not_parse_is_named_without_quoting_it() -> None:
    problem = urls.authority_problem("http://aws:wJalr/K7MD@127.0.0.1/")
    assert problem is not None
    assert "percent-encoded" in problem
    assert "wJalr" not in problem
    assert urls.authority_problem("https://u:p%2Fq@127.0.0.1:8080/x") is None
