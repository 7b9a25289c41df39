"""Loading the agent's config: positions in errors, environment overrides, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import loading


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return loading.load(path, environ=environ or {}), path


def problems_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(loading.ConfigError) as info:
        load_text(tmp_path, text, environ)
    return [str(p) for p in info.value.problems]


def test_no_file_gives_the_defaults() -> None:
    settings = loading.load(None, environ={})
    assert settings.server.metrics_address == "127.0.0.1:9102"


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    settings, _ = load_text(tmp_path, "# nothing here\n")
    assert settings.logging.level == "info"


def test_malformed_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "server:\n  metrics_address: [unclosed\n")
    assert problem.startswith(f"{tmp_path / 'agent.yaml'}:3:1: invalid YAML")


def test_a_wrong_type_names_the_key_path_value_and_expectation(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "server:\n  shutdown_grace_seconds: soon\n")
    assert problem == (
        f"{tmp_path / 'agent.yaml'}:2:3: server.shutdown_grace_seconds: got 'soon'; "
        "Input should be a valid number, unable to parse string as a number"
    )


def test_an_unknown_key_lists_the_keys_expected_there(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "logging:\n  levle: debug\n")
    assert (
        ":2:3: logging.levle: got 'debug'; unknown key; expected one of: format, level" in problem
    )


def test_an_unknown_group_lists_the_groups(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "gpus: {}\n")
    assert "gpus" in problem
    assert "expected one of: server, cache, catalog, features, installer, logging" in problem


def test_a_negative_size_is_refused(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "cache:\n  size_budget: -5\n")
    assert ":2:3: cache.size_budget: got -5; expected a size above 0" in problem


def test_sizes_take_units(tmp_path: Path) -> None:
    settings, _ = load_text(
        tmp_path, "cache:\n  size_budget: 2GiB\nserver:\n  max_request_bytes: 64KiB\n"
    )
    assert settings.cache.size_budget == 2 * 1024**3
    assert settings.server.max_request_bytes == 64 * 1024


def test_a_bad_address_says_the_expected_form(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "server:\n  metrics_address: localhost\n")
    assert "expected host:port, e.g. 127.0.0.1:9102" in problem


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("[::1]:9102", True),
        ("0.0.0.0:1", True),
        ("::1:9102", False),
        ("h:70000", False),
        ("[zz]:1", False),
    ],
)
def test_addresses(tmp_path: Path, address: str, ok: bool) -> None:
    text = f"server:\n  metrics_address: '{address}'\n"
    if ok:
        assert load_text(tmp_path, text)[0].server.metrics_address == address
    else:
        problems_of(tmp_path, text)


def test_a_relative_path_is_refused(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "cache:\n  root: store\n")
    assert "cache.root: got 'store'; expected an absolute path" in problem


def test_a_duplicate_key_is_an_error(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "logging:\n  level: debug\n  level: info\n")
    assert ":3:3: logging.level: duplicate key" in problem


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path, "logging:\n  level: loud\n  format: xml\ncache:\n  size_budget: 0\n"
    )
    assert len(problems) == 3


def test_a_top_level_list_is_refused(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "- a\n- b\n")
    assert "expected a mapping of groups" in problem


def test_tcp_api_without_a_token_file_is_refused(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "server:\n  api_tcp_address: 127.0.0.1:9103\n")
    assert "needs a bearer token" in problem
    assert ":1:1: server: " in problem


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    settings, _ = load_text(
        tmp_path,
        "logging:\n  level: debug\n",
        {
            "RUNNER_AGENT_LOGGING__LEVEL": "error",
            "RUNNER_AGENT_SERVER__METRICS_ADDRESS": "0.0.0.0:9102",
            "RUNNER_AGENT_CATALOG__PATHS": '["/a", "/b"]',
        },
    )
    assert settings.logging.level == "error"
    assert settings.server.metrics_address == "0.0.0.0:9102"
    assert [str(p) for p in settings.catalog.paths] == ["/a", "/b"]


def test_runner_agent_socket_sets_the_socket_and_the_specific_variable_wins() -> None:
    assert (
        str(loading.load(None, environ={"RUNNER_AGENT_SOCKET": "/s/a.sock"}).server.socket_path)
        == "/s/a.sock"
    )
    both = {"RUNNER_AGENT_SOCKET": "/s/a.sock", "RUNNER_AGENT_SERVER__SOCKET_PATH": "/s/b.sock"}
    assert str(loading.load(None, environ=both).server.socket_path) == "/s/b.sock"


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(loading.ConfigError) as info:
        loading.load(None, environ={"RUNNER_AGENT_SERVER__SHUTDOWN_GRACE_SECONDS": "-1"})
    assert str(info.value.problems[0]).startswith(
        "environment variable RUNNER_AGENT_SERVER__SHUTDOWN_GRACE_SECONDS: "
        "server.shutdown_grace_seconds: got '-1'"
    )


def test_an_unknown_environment_key_is_an_error() -> None:
    with pytest.raises(loading.ConfigError) as info:
        loading.load(None, environ={"RUNNER_AGENT_SERVER__PORT": "1"})
    assert "RUNNER_AGENT_SERVER__PORT" in str(info.value)
    assert "unknown key" in str(info.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(loading.ConfigError, match="does not exist"):
        loading.load(tmp_path / "nope.yaml", environ={})


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(loading.ConfigError, match="is a directory"):
        loading.load(tmp_path, environ={})


def test_binary_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(loading.ConfigError, match="not UTF-8"):
        loading.load(path, environ={})


def test_one_line_counts_the_rest(tmp_path: Path) -> None:
    with pytest.raises(loading.ConfigError) as info:
        load_text(tmp_path, "logging:\n  level: loud\n  format: xml\n")
    assert info.value.one_line().endswith("(and 1 more problem)")


# --- hostile files -----------------------------------------------------------------------


def test_aliases_are_refused_before_they_can_expand(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    [problem] = problems_of(tmp_path, bomb)
    assert "anchors and aliases are not supported" in problem


def test_a_self_referencing_alias_is_refused(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "server: &a [*a]\n")
    assert "aliases are not supported" in problem


def test_a_key_that_is_not_a_string_is_refused_where_it_stands(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "logging:\n  yes: 2\n")
    assert ":2:3: logging: key 'yes' is not a string" in problem


def test_absurd_nesting_is_refused(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "a: " + "[" * 100 + "]" * 100 + "\n")
    assert "nested deeper than" in problem


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "agent.yaml"
    os.mkfifo(fifo)
    with pytest.raises(loading.ConfigError, match="not a regular file"):
        loading.load(fifo, environ={})


def test_a_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "agent.yaml"
    link.symlink_to("/dev/zero")
    with pytest.raises(loading.ConfigError, match="not a regular file"):
        loading.load(link, environ={})


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("# padding\n" * 200_000)
    with pytest.raises(loading.ConfigError, match="the limit is 1048576"):
        loading.load(path, environ={})


def test_true_is_not_a_number_of_seconds(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "server:\n  shutdown_grace_seconds: true\n")
    assert "expected a number, not true/false" in problem


def test_a_host_with_a_space_is_refused(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "server:\n  metrics_address: 'a b:1'\n")
    assert "is not an IP address or host name" in problem


def test_a_numeric_group_from_the_environment_is_a_gid() -> None:
    settings = loading.load(None, environ={"RUNNER_AGENT_SERVER__SOCKET_GROUP": "123"})
    assert settings.server.socket_group == 123


def test_a_negative_group_is_refused() -> None:
    with pytest.raises(loading.ConfigError, match="expected a group id"):
        loading.load(None, environ={"RUNNER_AGENT_SERVER__SOCKET_GROUP": "-1"})


def test_a_variable_without_a_double_underscore_is_an_error() -> None:
    with pytest.raises(loading.ConfigError) as info:
        loading.load(None, environ={"RUNNER_AGENT_LOGGING_LEVEL": "debug"})
    assert "environment variable RUNNER_AGENT_LOGGING_LEVEL: not a setting" in str(info.value)


def test_the_agents_own_variables_are_not_settings_errors() -> None:
    environ = {"RUNNER_AGENT_CONFIG": "/x", "RUNNER_AGENT_ON_CONFIG_ERROR": "degrade"}
    assert loading.load(None, environ=environ).logging.level == "info"


def test_identical_job_and_admin_tokens_are_refused(tmp_path: Path) -> None:
    from agent.config import reloading

    (tmp_path / "job").write_text("same")
    (tmp_path / "admin").write_text("same\n")
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"server:\n  job_token_file: {tmp_path / 'job'}\n  admin_token_file: {tmp_path / 'admin'}\n"
    )
    with pytest.raises(loading.ConfigError, match="job and admin tokens are the same"):
        reloading.load_snapshot(path, generation=1, environ={})


def test_non_ascii_tokens_compare_without_crashing() -> None:
    from agent.config import tokens

    configured = tokens.Tokens(job="plain", admin="admin")
    assert configured.scopes_for("café") == set()
    assert configured.scopes_for("plain") == {"job"}


def test_url_passwords_are_hidden_from_what_people_read(tmp_path: Path) -> None:
    settings, _ = load_text(
        tmp_path,
        "installer:\n"
        "  https_proxy: http://ci:pr0xy-secret@proxy.invalid:3128\n"
        "  pip_indexes: {pytorch: 'https://bot:index-secret@wheels.invalid/whl'}\n",
    )
    assert settings.installer.https_proxy == "http://ci:pr0xy-secret@proxy.invalid:3128"
    shown = settings.shown()
    assert shown["installer"]["https_proxy"] == "http://ci:[redacted]@proxy.invalid:3128"
    assert shown["installer"]["pip_indexes"] == {
        "pytorch": "https://bot:[redacted]@wheels.invalid/whl"
    }
    assert "pr0xy-secret" not in str(shown)
    assert "index-secret" not in str(shown)


def test_a_bad_url_is_named_without_its_password(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, "installer:\n  pip_index_url: 'ftp://u:hunter2@x.invalid/'\n")
    assert "hunter2" not in problem
    assert "ftp://u:[redacted]@x.invalid/" in problem


def test_a_named_index_url_with_a_query_is_refused(tmp_path: Path) -> None:
    [problem] = problems_of(
        tmp_path, "installer:\n  pip_indexes: {pytorch: 'https://x.invalid/whl?token=1'}\n"
    )
    assert "has a query or fragment; a named index's URL is http(s)://host/path" in problem


@pytest.mark.parametrize("url", ["https://x.invalid/whl#cu128", "https://x.invalid/whl?"])
def test_a_named_index_url_with_a_fragment_or_an_empty_query_is_refused(
    tmp_path: Path, url: str
) -> None:
    # "?" alone leaves urlsplit's query empty: the appended path still lands after it.
    [problem] = problems_of(tmp_path, f"installer:\n  pip_indexes: {{pytorch: '{url}'}}\n")
    assert "has a query or fragment" in problem


@pytest.mark.parametrize("field", ["pip_index_url", "npm_registry"])
def test_the_single_index_urls_take_a_query(tmp_path: Path, field: str) -> None:
    # Used as given (no path appended): a mirror's repository selector belongs there.
    url = "https://mirror.invalid/simple/?repo=internal#main"
    settings, _ = load_text(tmp_path, f"installer:\n  {field}: '{url}'\n")
    assert getattr(settings.installer, field) == url


@pytest.mark.parametrize("field", ["pip_index_url", "npm_registry"])
def test_the_single_index_urls_still_refuse_what_is_no_index_url(
    tmp_path: Path, field: str
) -> None:
    [problem] = problems_of(tmp_path, f"installer:\n  {field}: 'ftp://x.invalid/?a=1'\n")
    assert "is not an index URL" in problem


def test_a_tokens_url_is_hidden_from_what_people_read(tmp_path: Path) -> None:
    settings, _ = load_text(
        tmp_path,
        "installer:\n"
        "  pip_index_url: 'HTTPS://ghp_t0ken@mirror.invalid/simple/'\n"
        "  https_proxy: 'http://ci:p@ss-secret@proxy.invalid:3128'\n",
    )
    shown = settings.shown()
    assert shown["installer"]["pip_index_url"] == "HTTPS://[redacted]@mirror.invalid/simple/"
    assert shown["installer"]["https_proxy"] == "http://ci:[redacted]@proxy.invalid:3128"
    assert "t0ken" not in str(shown)
    assert "ss-secret" not in str(shown)


def test_a_bad_list_is_named_without_the_passwords_in_it(tmp_path: Path) -> None:
    [problem] = problems_of(
        tmp_path,
        "installer:\n"
        "  http_proxy: ['http://u:hunter2@x.invalid:3128', {url: 'https://tok3n@y.invalid/'}]\n",
    )
    assert "hunter2" not in problem
    assert "tok3n" not in problem
    assert "http://u:[redacted]@x.invalid:3128" in problem


def test_a_value_is_hidden_inside_lists_and_mappings_before_it_is_shortened() -> None:
    from agent.config import problems

    secret = "s3cret-" + "x" * 200  # long enough that reprlib cuts the string
    value = [{"index": f"https://u:{secret}@x.invalid/simple/"}, (f"https://{secret}@y.invalid",)]
    shown = problems.show(value)
    assert "s3cret" not in shown
    assert "u:[redacted]@x.invalid" in shown
    assert problems.show({"k": [f"https://u:{secret}@x.invalid"]}).count("s3cret") == 0
    # Beyond what reprlib shows, nothing is visited, and it still reads the same.
    deep = [[[[f"https://u:{secret}@x.invalid"]]]]
    assert problems.show(deep) == "[[[...]]]"
    assert problems.show(list(range(100))) == "[0, 1, 2, 3, 4, 5, ...]"


@pytest.mark.parametrize("field", ["mirrors", "pip_index_url"])
def test_a_password_with_an_unencoded_slash_is_refused_without_showing_it(
    tmp_path: Path, field: str
) -> None:
    # urlsplit would read "aws" as the host and "wJalr" as its port: the request would go
    # nowhere, and an error quoting the "port" would show part of the password.
    url = "http://aws:wJalr/K7MD+bPx@mirror.invalid/"
    value = f"{{'https://upstream.invalid/': '{url}'}}" if field == "mirrors" else f"'{url}'"
    [problem] = problems_of(tmp_path, f"installer:\n  {field}: {value}\n")
    assert "wJalr" not in problem
    assert "K7MD" not in problem
    assert "must be percent-encoded" in problem


def test_a_mirror_must_be_an_http_url(tmp_path: Path) -> None:
    [problem] = problems_of(
        tmp_path, "installer:\n  mirrors: {'https://upstream.invalid/': 'file:///etc/'}\n"
    )
    assert "'file:///etc/' is not a mirror URL: expected http(s)://host/path" in problem


def test_a_mirrors_credentials_are_hidden_from_what_people_read(tmp_path: Path) -> None:
    settings, _ = load_text(
        tmp_path,
        "installer:\n  mirrors: {'https://upstream.invalid/': 'https://u:m1rror@m.invalid/'}\n",
    )
    assert settings.installer.mirrors["https://upstream.invalid/"] == "https://u:m1rror@m.invalid/"
    assert "m1rror" not in str(settings.shown())
