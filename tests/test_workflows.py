"""The repository's own GitHub workflows (.github/workflows).

Policy: every workflow passes actionlint (the binary the dev extra installs, so the check
never depends on what the machine has), and a test proves that actionlint really fails on
a broken workflow, so that check cannot pass vacuously. CI runs exactly ``.ci/run`` with
``CI=true``. A release builds every image target the Dockerfiles define, for linux/amd64
and linux/arm64, and pushes each under its name in ``IMAGES`` to ghcr.io. A ``${{ }}``
expression never appears inside a ``run:`` script: values reach scripts through ``env:``
(script-injection hygiene, as actionlint and zizmor ask).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
RELEASE = WORKFLOWS / "release.yml"
ACTIONLINT = Path(sys.executable).parent / "actionlint"
DOCKERFILES = ("container/agent/Dockerfile", "container/runner/Dockerfile")
# Stages that only feed other stages: never released as images.
INTERNAL_STAGES = {
    "build",
    "runtime",
    "docker-static",
    "docker-cli",
    "hook-build",
    "runner-download",
}
PLATFORMS = {"linux/amd64", "linux/arm64"}
IMAGES = {
    "agent": "runner-agent",
    "engine": "runner-agent-engine",
    "hook": "runner-agent-hook",
    "runner": "runner-agent-runner",
    "runner-gpu": "runner-agent-runner-gpu",
}
STAGE = re.compile(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
ALL_WORKFLOWS = sorted(WORKFLOWS.glob("*.y*ml"))


def actionlint(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert ACTIONLINT.is_file(), f"{ACTIONLINT} is missing: install the dev extra (pip -e .[dev])"
    return subprocess.run(
        [str(ACTIONLINT), "-no-color", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


def triggers(data: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    on = data[True]
    assert isinstance(on, dict)
    return on


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    result = job["steps"]
    assert isinstance(result, list)
    return result


def step_using(job: dict[str, Any], action: str) -> dict[str, Any]:
    [step] = [s for s in steps(job) if str(s.get("uses", "")).split("@")[0] == action]
    return step


def matrix(release: dict[Any, Any]) -> list[dict[str, Any]]:
    include = release["jobs"]["images"]["strategy"]["matrix"]["include"]
    assert isinstance(include, list)
    return include


def stages(dockerfile: str) -> set[str]:
    return set(STAGE.findall((ROOT / dockerfile).read_text()))


def build_args(text: str) -> dict[str, str]:
    """NAME=value lines; a line that is a bare ``${{ }}`` expression (more lines) is skipped."""
    lines = [line.strip() for line in text.splitlines()]
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("${{")]
    assert all(len(pair) == 2 for pair in pairs), text
    return {key: value for key, value in pairs}


def test_there_are_the_two_workflows() -> None:
    assert [p.name for p in ALL_WORKFLOWS] == ["ci.yml", "release.yml"]


@pytest.mark.parametrize("path", ALL_WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_accepts_the_workflow(path: Path) -> None:
    result = actionlint(path.relative_to(ROOT))
    assert result.returncode == 0, f"actionlint on {path.name}:\n{result.stdout}{result.stderr}"


def test_actionlint_fails_on_a_broken_workflow(tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    broken = workflows / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  test:\n"
        "    runs-onn: ubuntu-24.04\n"
        "    steps:\n"
        "      - run: echo ${{ github.no_such_property }}\n"
    )
    result = actionlint(broken, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "runs-onn" in output, output
    assert "no_such_property" in output, output


def test_no_expression_is_inlined_in_a_run_script() -> None:
    for path in ALL_WORKFLOWS:
        for name, job in load(path)["jobs"].items():
            for step in steps(job):
                script = step.get("run", "")
                assert "${{" not in script, f"{path.name}: job {name}: pass it through env:"


def test_ci_runs_ci_run_with_ci_true() -> None:
    ci = load(CI)
    on = triggers(ci)
    assert on["push"]["branches"] == ["main"]
    assert "pull_request" in on
    assert ci["permissions"] == {"contents": "read"}
    assert "github.ref" in ci["concurrency"]["group"]
    assert "pull_request" in str(ci["concurrency"]["cancel-in-progress"])
    [job] = ci["jobs"].values()
    assert job["runs-on"] == "ubuntu-24.04"
    assert job["timeout-minutes"] == 45
    uses = [str(s.get("uses", "")).split("@")[0] for s in steps(job)]
    runs = [s.get("run", "") for s in steps(job)]
    [index] = [i for i, script in enumerate(runs) if ".ci/run" in script]
    assert "CI=true" in runs[index]
    assert "sudo" in runs[index], "the root-marked tests need root"
    assert uses.index("actions/checkout") < index
    assert uses.index("actions/setup-python") < index
    assert step_using(job, "actions/setup-python")["with"]["python-version"] == "3.11"


def test_release_builds_every_target_the_dockerfiles_define() -> None:
    entries = matrix(load(RELEASE))
    defined = {(df, t) for df in DOCKERFILES for t in stages(df) - INTERNAL_STAGES}
    built = {(e["dockerfile"], e["target"]) for e in entries}
    assert len(built) == len(entries), "a target is built twice"
    assert built == defined
    assert {e["target"]: e["image"] for e in entries} == IMAGES


def test_release_pushes_both_platforms_to_ghcr() -> None:
    release = load(RELEASE)
    assert triggers(release)["push"]["tags"] == ["v*"]
    assert release["permissions"] == {"contents": "read", "packages": "write"}
    job = release["jobs"]["images"]
    assert step_using(job, "docker/login-action")["with"]["registry"] == "ghcr.io"
    meta = step_using(job, "docker/metadata-action")
    assert meta["with"]["images"] == "ghcr.io/${{ github.repository_owner }}/${{ matrix.image }}"
    tags = meta["with"]["tags"]
    for pattern in ("{{version}}", "{{major}}.{{minor}}", "type=sha"):
        assert pattern in tags
    build = step_using(job, "docker/build-push-action")["with"]
    assert build["push"] is True
    assert set(build["platforms"].split(",")) == PLATFORMS
    assert build["context"] == "."
    assert build["file"] == "${{ matrix.dockerfile }}"
    assert build["target"] == "${{ matrix.target }}"
    assert build["tags"] == "${{ steps.meta.outputs.tags }}"
    assert "VERSION=${{ steps.meta.outputs.version }}" in build["build-args"]
    assert "${{ matrix.build-args }}" in build["build-args"]
    assert "scope=${{ matrix.image }}" in build["cache-from"]
    assert "scope=${{ matrix.image }}" in build["cache-to"]


def test_release_pins_docker_and_the_gpu_base() -> None:
    job = load(RELEASE)["jobs"]["images"]
    # Every target gets Docker's static release (the engine's dockerd, the runners'
    # CLI), pinned with both checksums; only the GPU runner has an extra argument.
    assert job["env"]["DOCKER_VERSION"] == "28.5.2"
    for arch in ("AMD64", "ARM64"):
        assert re.fullmatch(r"[0-9a-f]{64}", job["env"][f"DOCKER_SHA256_{arch}"]), arch
    args = build_args(step_using(job, "docker/build-push-action")["with"]["build-args"])
    for name in ("DOCKER_VERSION", "DOCKER_SHA256_AMD64", "DOCKER_SHA256_ARM64"):
        assert args[name] == f"${{{{ env.{name} }}}}"
    for dockerfile in DOCKERFILES:
        assert "ARG DOCKER_VERSION" in (ROOT / dockerfile).read_text(), dockerfile
    by_target = {e["target"]: build_args(e["build-args"]) for e in matrix(load(RELEASE))}
    assert by_target.pop("runner-gpu") == {"BASE_IMAGE": "nvidia/cuda:12.8.1-base-ubuntu24.04"}
    assert all(extra == {} for extra in by_target.values()), by_target


def test_the_chart_is_published_only_when_it_exists() -> None:
    job = load(RELEASE)["jobs"]["chart"]
    assert job["needs"] == "images"
    [check, *rest] = [s for s in steps(job) if "actions/checkout" not in str(s.get("uses", ""))]
    assert "charts/runner-agent/Chart.yaml" in check["run"]
    assert rest, "the chart job does nothing"
    for step in rest:
        assert f"steps.{check['id']}.outputs." in step["if"]
    script = "\n".join(s.get("run", "") for s in rest)
    assert 'helm package charts/runner-agent --version "${VERSION}"' in script
    assert "--password-stdin" in script
    assert "oci://ghcr.io/" in script
