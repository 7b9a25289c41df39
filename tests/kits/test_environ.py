"""The one clean environment every command the agent runs gets."""

from __future__ import annotations

from agent.install import running
from agent.kits import environ

AGENT = {
    "PATH": "/usr/bin",
    "HOME": "/root",
    "LANG": "de_DE.UTF-8",
    "LC_ALL": "de_DE.UTF-8",
    "https_proxy": "http://proxy:3128",
    "NO_PROXY": "localhost",
    "SSL_CERT_FILE": "/etc/ssl/extra.pem",
    "PIP_INDEX_URL": "https://mirror/simple",
    "npm_config_registry": "https://mirror/npm",
    "GITHUB_TOKEN": "secret",
    "RUNNER_AGENT_TOKEN": "secret",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "PYTHONPATH": "/agent",
}


def test_only_the_listed_variables_pass_through() -> None:
    env = environ.clean(base=AGENT)
    assert env == {k: v for k, v in AGENT.items() if "secret" not in v and k != "PYTHONPATH"}


def test_every_kept_name_and_prefix_is_honoured() -> None:
    base = {name: "x" for name in environ.KEEP} | {f"{p}ANY": "y" for p in environ.KEEP_PREFIXES}
    assert environ.clean(base=base) == base


def test_a_missing_path_gets_the_default_and_extra_goes_on_top() -> None:
    env = environ.clean({"FLAVOUR": "big", "HOME": "/tmp/h"}, base={"HOME": "/root"})
    assert env == {"PATH": environ.DEFAULT_PATH, "HOME": "/tmp/h", "FLAVOUR": "big"}


def test_a_fixed_locale_replaces_the_agents() -> None:
    env = environ.clean(base=AGENT, fixed_locale=True)
    assert env["LANG"] == "C.UTF-8"
    assert "LC_ALL" not in env
    # The caller's own variables still win.
    assert environ.clean({"LANG": "C"}, base=AGENT, fixed_locale=True)["LANG"] == "C"


def test_install_steps_use_the_same_policy() -> None:
    assert running.environment({"A": "1"}, base=AGENT) == environ.clean({"A": "1"}, base=AGENT)


def test_host_commands_get_no_registry_settings_home_or_scratch_folder() -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "TMPDIR": "/tmp/jobdir",
        "PIP_INDEX_URL": "https://user:s3cret@mirror.invalid/simple",
        "NPM_CONFIG__AUTH": "c2VjcmV0",
        "XDG_CONFIG_HOME": "/tmp/jobdir/.config",
        "https_proxy": "http://127.0.0.1:3128",
        "GITHUB_TOKEN": "ghs_x",
    }
    env = environ.clean(base=base, fixed_locale=True, host=True)
    assert env == {"PATH": "/usr/bin", "https_proxy": "http://127.0.0.1:3128", "LANG": "C.UTF-8"}
    build = environ.clean(base=base)
    assert "PIP_INDEX_URL" in build
    assert "GITHUB_TOKEN" not in build
