"""The job context from the runner's environment: every NVIDIA_VISIBLE_DEVICES form, the
required variables, and an event file that is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.hook import context

UUID = "GPU-6a8b0f3c-1d2e-4f50-8a9b-0c1d2e3f4a5b"
MIG = "MIG-6a8b0f3c-1d2e-4f50-8a9b-0c1d2e3f4a5b"
MIG_OLD = "MIG-GPU-6a8b0f3c-1d2e-4f50-8a9b-0c1d2e3f4a5b/1/0"


def job_env(**extra: str) -> dict[str, str]:
    env = {
        "RUNNER_NAME": "arc-runner-x7k2p",
        "GITHUB_RUN_ID": "123456",
        "GITHUB_RUN_ATTEMPT": "2",
        "GITHUB_JOB": "build",
        "GITHUB_REPOSITORY": "octo/repo",
        "GITHUB_WORKFLOW": "CI",
        "GITHUB_WORKFLOW_REF": "octo/repo/.github/workflows/ci.yml@refs/heads/main",
        "GITHUB_SHA": "a" * 40,
        "GITHUB_EVENT_NAME": "push",
    }
    env.update(extra)
    return env


def gather(env: dict[str, str], *, gpu_nodes: bool = True) -> tuple[context.JobContext, list[str]]:
    warnings: list[str] = []
    ctx = context.gather(
        env, warnings.append, platform=lambda warn: None, gpu_nodes=lambda: gpu_nodes
    )
    return ctx, warnings


@pytest.mark.parametrize(
    ("value", "kind", "devices"),
    [
        (None, "unset", []),
        ("", "void", []),
        ("void", "void", []),
        ("all", "all", []),
        (" all ", "all", []),
        ("none", "none", []),
        ("0", "list", ["0"]),
        ("0,1", "list", ["0", "1"]),
        ("1, 0,1", "list", ["1", "0"]),
        (UUID, "list", [UUID]),
        (f"{UUID},{MIG}", "list", [UUID, MIG]),
        (MIG_OLD, "list", [MIG_OLD]),
        ("0:1,0:2", "list", ["0:1", "0:2"]),
    ],
)
def test_every_nvidia_visible_devices_form(
    value: str | None, kind: str, devices: list[str]
) -> None:
    env = job_env() if value is None else job_env(NVIDIA_VISIBLE_DEVICES=value)
    ctx, _ = gather(env)
    assert ctx.gpus.to_json() == {"kind": kind, "devices": devices}


def test_unset_without_a_gpu_device_node_is_no_gpu(tmp_path: Path) -> None:
    # A runner without a GPU beside an agent that sees the node's: not scoped to them.
    ctx, _ = gather(job_env(), gpu_nodes=False)
    assert ctx.gpus.to_json() == {"kind": "void", "devices": []}
    (tmp_path / "nvidiactl").touch()  # the control node alone is no GPU
    (tmp_path / "nvidia-uvm").touch()
    assert context.has_gpu_nodes(str(tmp_path)) is False
    (tmp_path / "nvidia1").touch()
    assert context.has_gpu_nodes(str(tmp_path)) is True
    assert context.has_gpu_nodes(str(tmp_path / "missing")) is True  # unknown: not "none"


@pytest.mark.parametrize("value", ["0,,1", "gpu0", "all,0", "GPU-xyz", "-1", "0:", "0;1"])
def test_a_bad_nvidia_value_names_it_and_the_forms(value: str) -> None:
    with pytest.raises(context.ContextError) as info:
        gather(job_env(NVIDIA_VISIBLE_DEVICES=value))
    message = str(info.value)
    assert repr(value) in message
    assert "GPU UUIDs" in message
    assert "MIG" in message
    assert "all, none, void" in message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "name", ["RUNNER_NAME", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB"]
)
def test_a_missing_required_variable_is_named(name: str) -> None:
    env = job_env()
    del env[name]
    with pytest.raises(context.ContextError, match=f"^{name} is not set"):
        gather(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GITHUB_RUN_ID", "12a"),
        ("GITHUB_RUN_ATTEMPT", "0"),
        ("GITHUB_RUN_ATTEMPT", "one"),
        ("RUNNER_NAME", "x" * 201),
        ("RUNNER_NAME", "bad\nname"),
        ("GITHUB_JOB", "a\tb"),
    ],
)
def test_a_malformed_required_variable_is_named(name: str, value: str) -> None:
    with pytest.raises(context.ContextError, match=f"^{name}="):
        gather(job_env(**{name: value}))


def test_the_body_carries_every_field() -> None:
    ctx, warnings = gather(job_env(NVIDIA_VISIBLE_DEVICES="0"))
    assert warnings == []
    assert ctx.to_json() == {
        "runner_name": "arc-runner-x7k2p",
        "run_id": "123456",
        "run_attempt": 2,
        "job": "build",
        "repository": "octo/repo",
        "workflow": "CI",
        "workflow_ref": "octo/repo/.github/workflows/ci.yml@refs/heads/main",
        "sha": "a" * 40,
        "event_name": "push",
        "platform": None,
        "gpus": {"kind": "list", "devices": ["0"]},
    }


def test_bad_optional_values_are_dropped_with_a_warning() -> None:
    ctx, warnings = gather(
        job_env(GITHUB_REPOSITORY="not a repo", GITHUB_SHA="xyz", GITHUB_EVENT_NAME="Push!")
    )
    assert (ctx.repository, ctx.sha) == (None, None)
    assert any("GITHUB_REPOSITORY" in w for w in warnings)
    assert any("GITHUB_SHA" in w for w in warnings)


def test_a_missing_event_file_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    env = job_env(GITHUB_EVENT_PATH=str(tmp_path / "gone" / "event.json"))
    del env["GITHUB_EVENT_NAME"]
    ctx, warnings = gather(env)
    assert ctx.event_name is None
    [warning] = warnings
    assert str(tmp_path / "gone" / "event.json") in warning
    assert "No such file" in warning


def test_the_event_name_comes_from_github_event_name(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text("{not json")
    ctx, warnings = gather(
        job_env(GITHUB_EVENT_PATH=str(event), GITHUB_EVENT_NAME="workflow_dispatch")
    )
    assert ctx.event_name == "workflow_dispatch"
    assert warnings == []


def test_the_real_platform_is_described() -> None:
    ctx = context.gather(job_env(), lambda text: None)
    assert ctx.platform is not None
    assert ctx.platform["os"] == "linux"
    assert set(ctx.platform) == {"os", "arch", "libc", "package_manager", "cuda_driver"}
