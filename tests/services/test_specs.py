"""Service specs in the agent config: validation, the dockerd preset, stale-file rules."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.config import loading, models, presets
from agent.config import services as specs
from agent.services import backoff, stale


def problems_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(loading.ConfigError) as info:
        loading.load(path, environ=environ or {})
    return [str(p) for p in info.value.problems]


def test_dockerd_is_one_line_with_arcs_argv_and_a_ping_check() -> None:
    settings = loading.load(None, environ={"RUNNER_AGENT_SERVICES__DOCKERD__PRESET": "dockerd"})
    dockerd = settings.services["dockerd"]
    assert dockerd.command[:3] == [
        "dockerd",
        "--host=unix:///var/run/docker.sock",
        "--group=123",
    ]
    assert "--pidfile=/var/run/docker.pid" in dockerd.command
    assert "--data-root=/var/lib/docker" in dockerd.command
    assert "--exec-root=/var/run/docker" in dockerd.command
    health = dockerd.health
    assert isinstance(health, specs.HttpHealth)
    assert (health.socket, health.method, health.path) == (
        Path("/var/run/docker.sock"),
        "GET",
        "/_ping",
    )
    assert (health.expect_status, health.expect_body) == (200, "OK")
    assert dockerd.pre_start.pid_files == [
        Path("/var/run/docker.pid"),
        Path("/var/run/docker/containerd/containerd.pid"),
    ]
    assert dockerd.pre_start.sockets == [Path("/var/run/docker.sock")]
    assert dockerd.stop.gate is True
    assert dockerd.required_for_ready is True


def test_dockerd_mtu_applies_to_the_bridge_and_new_networks(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "services:\n"
        "  dockerd:\n"
        "    preset: dockerd\n"
        "    params: {mtu: 1400, socket: /run/d.sock, extra_args: [--iptables=false]}\n"
        "    health: {interval_seconds: 1}\n"
    )
    dockerd = loading.load(path, environ={}).services["dockerd"]
    assert dockerd.command[-3:] == [
        "--mtu=1400",
        "--default-network-opt=bridge=com.docker.network.driver.mtu=1400",
        "--iptables=false",
    ]
    assert "--host=unix:///run/d.sock" in dockerd.command
    assert isinstance(dockerd.health, specs.HttpHealth)
    assert dockerd.health.interval_seconds == 1
    assert dockerd.health.path == "/_ping"  # timings alone keep the preset's check
    older = presets.DockerdParams(mtu=1450, mtu_default_network_opt=False).argv()
    assert older[-1] == "--mtu=1450"


def test_a_reload_round_trip_keeps_the_spec() -> None:
    settings = models.Settings.model_validate(
        {"services": {"dockerd": {"preset": "dockerd", "params": {"mtu": 1400}}}}
    )
    assert models.Settings.model_validate(settings.model_dump()) == settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "services:\n  d:\n    preset: dockerd\n    params: {extra_args: [--host=tcp://0.0.0.0:2375]}\n",
            "services.d.params.extra_args: got ['--host=tcp://0.0.0.0:2375']; "
            "'--host=tcp://0.0.0.0:2375' is set by the preset; set params.socket instead",
        ),
        (
            "services:\n  s:\n    command: [sleep, '1']\n    stop: {signal: SIGNOPE}\n",
            ":4:12: services.s.stop.signal: got 'SIGNOPE'; expected a signal name such as SIGTERM",
        ),
        (
            "services:\n  s:\n    command: []\n",
            ":3:5: services.s.command: got []; List should have at least 1 item",
        ),
        (
            "services:\n  s:\n    command: [x]\n    health: {kind: tcp, address: nowhere}\n",
            # The kind's branch tag is no key of the file: the path and the column are
            # those of the address itself.
            ":4:25: services.s.health.address: got 'nowhere'; expected host:port",
        ),
        (
            "services:\n  s:\n    command: [x]\n"
            "    health: {kind: exec, command: [x], interval_seconds: 1, timeout_seconds: 5}\n",
            "timeout_seconds (5) is longer than interval_seconds (1)",
        ),
        (
            "services:\n  s:\n    command: [x]\n    params: {mtu: 1400}\n",
            "params apply to a preset; set preset: dockerd, or remove params",
        ),
        (
            "services:\n  Bad_Name:\n    command: [x]\n",
            "String should match pattern '^[a-z][a-z0-9-]{0,62}$'",
        ),
        (
            "services:\n  s:\n    command: [x]\n    restrat: {}\n",
            ":4:5: services.s.restrat: unknown key; expected one of: preset, params, command",
        ),
    ],
)
def test_bad_specs_name_the_value_and_the_expected_form(
    tmp_path: Path, text: str, expected: str
) -> None:
    problems = problems_of(tmp_path, text)
    assert any(expected in p for p in problems), problems


def test_dependencies_must_exist_and_have_no_cycle(tmp_path: Path) -> None:
    [unknown] = problems_of(
        tmp_path, "services:\n  a: {command: [x], depends_on: [dockerd]}\n  b: {command: [x]}\n"
    )
    assert ":1:1: services: " in unknown
    assert "service 'a' depends on 'dockerd', which is not a service; expected one of: a, b" in (
        unknown
    )
    [cycle] = problems_of(
        tmp_path,
        "services:\n  a: {command: [x], depends_on: [b]}\n  b: {command: [x], depends_on: [c]}\n"
        "  c: {command: [x], depends_on: [a]}\n",
    )
    assert "depends_on has a cycle: a -> b -> c -> a" in cycle
    levels = specs.start_order(
        {
            "app": specs.ServiceSpec(command=["x"], depends_on=["db", "dockerd"]),
            "db": specs.ServiceSpec(command=["x"], depends_on=["dockerd"]),
            "dockerd": specs.ServiceSpec(command=["x"]),
        }
    )
    assert levels == [["dockerd"], ["db"], ["app"]]


def test_every_service_field_is_documented() -> None:
    def walk(model: type[BaseModel], prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not field.description or len(field.description) < 15:
                missing.append(prefix + name)
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                missing += walk(annotation, f"{prefix}{name}.")
        return missing

    undocumented = []
    for model in (
        specs.ServiceSpec,
        specs.HttpHealth,
        specs.TcpHealth,
        specs.ExecHealth,
        presets.DockerdParams,
    ):
        undocumented += walk(model, f"{model.__name__}.")
    assert undocumented == []


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    policy = specs.RestartPolicy(
        backoff_initial_seconds=1, backoff_max_seconds=5, backoff_multiplier=2, jitter=0.2
    )
    planned = backoff.Backoff(policy, rng=lambda: 0.5)
    assert [planned.next().base_seconds for _ in range(5)] == [1, 2, 4, 5, 5]
    assert planned.history[0].delay_seconds == pytest.approx(0.9)
    planned.reset()
    assert planned.next().base_seconds == 1
    limit = backoff.StartLimit(
        specs.RestartPolicy(start_limit_burst=2, start_limit_window_seconds=10)
    )
    limit.record(0.0)
    limit.record(1.0)
    assert not limit.allows(5.0)
    assert limit.allows(10.5)  # the first start left the window


def test_stale_cleanup_never_touches_a_live_daemons_files(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file = tmp_path / "live.pid"
        pid_file.write_text(str(live.pid))
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listening.bind(str(tmp_path / "live.sock"))
        listening.listen()
        not_a_socket = tmp_path / "file.sock"
        not_a_socket.write_text("")
        pre = specs.PreStart(pid_files=[pid_file], sockets=[tmp_path / "live.sock", not_a_socket])
        assert stale.clean("svc", pre) == []
        assert pid_file.exists()
        assert (tmp_path / "live.sock").exists()
        assert not_a_socket.exists()
        # The same pid under another program's name is a reused pid: stale.
        renamed = specs.PreStart(pid_files=[pid_file], process_names=["dockerd"])
        [removed] = stale.clean("svc", renamed)
        assert "the pid was reused" in removed
        assert not pid_file.exists()
        listening.close()
    finally:
        live.kill()
        live.wait()
    # Now dead: the pid file goes; garbage in a pid file goes too.
    pid_file.write_text(str(live.pid))
    (tmp_path / "junk.pid").write_text("not a pid")
    removed = stale.clean("svc", specs.PreStart(pid_files=[pid_file, tmp_path / "junk.pid"]))
    assert len(removed) == 2


def test_a_planted_link_at_a_pid_file_is_removed_never_followed(tmp_path: Path) -> None:
    # In ARC's layout the runner shares dockerd's /run: a link there could make the
    # service write its pid through it, or the cleanup read a file it names.
    target = tmp_path / "precious"
    target.write_text("4242\n")
    link = tmp_path / "docker.pid"
    link.symlink_to(target)
    folder = tmp_path / "dir.pid"
    folder.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "sock.pid"))
    sock.close()
    (tmp_path / "digits.pid").write_text("\u00b2\n")  # isdigit(), yet no int()
    pre = specs.PreStart(pid_files=[link, folder, tmp_path / "sock.pid", tmp_path / "digits.pid"])
    removed = stale.clean("svc", pre)
    assert removed == [
        f"{link} (is a link, which the service would write through)",
        f"{tmp_path / 'digits.pid'} (holds '\u00b2', not a pid)",
    ]
    assert not link.is_symlink()
    assert target.read_text() == "4242\n"
    assert folder.is_dir()  # not ours to remove: left, with a warning
    assert (tmp_path / "sock.pid").exists()
