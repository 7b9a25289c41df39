"""The host executor drives any registered manager through its module alone: a fake
manager, registered like a real one, gets its cache arguments, refresh policy,
installed query, success codes, repository folders and explanations honoured, with no
change to the executor. Runs unprivileged: the fake manager's commands are Python."""

from __future__ import annotations

import json
import os
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path, PurePath

import pytest

from agent.install.host import executor
from agent.platform import packagers
from agent.platform.packagers import base, registry

RECORD = """
import json, os, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"argv": sys.argv[2:], "env": dict(os.environ)}) + "\\n")
"""
REFRESH = """
import pathlib, sys
pathlib.Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
(pathlib.Path(sys.argv[1]) / "main.idx").write_text("index")
"""
INSTALL = (
    RECORD
    + """
if "BROKEN" in sys.argv:
    print("fakepm: BROKEN package tool")
    sys.exit(1)
open(sys.argv[2], "w").close()
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""
)
HAS = "import os, sys; sys.exit(0 if os.path.exists(sys.argv[1]) else 1)"


class FakePM(base.Packager):
    name = "fakepm"
    binary = "fakepm"
    oses = ("linux",)
    name_chars = "-"
    index_glob = "*.idx"
    success_codes = frozenset({0, 3})

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repository_folders = (str(root / "repos"),)  # type: ignore[misc]
        self.index_folder = str(root / "index")  # type: ignore[misc]

    def install_commands(
        self, names: tuple[str, ...], lock_timeout_s: int
    ) -> list[base.InstallCommand]:
        raise AssertionError("the executor runs the plan's argv; it builds none")

    def with_cache(self, argv: Sequence[str], cache: PurePath) -> base.Cached:
        return base.Cached(argv=(*argv, "--cache", str(cache / "fake")), folders=(cache / "fake",))

    def installed_queries(self, names: tuple[str, ...]) -> list[base.Query]:
        return [
            base.Query(argv=(sys.executable, "-c", HAS, str(self.root / "installed")), names=names)
        ]

    def explain(self, failure: base.Failure) -> str | None:
        if "BROKEN" in failure.output:
            return f"fakepm explains {', '.join(failure.packages)} (exit {failure.returncode})"
        return None


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePM:
    module = types.ModuleType("fakepm")
    module.PACKAGER = FakePM(tmp_path)  # type: ignore[attr-defined]
    monkeypatch.setitem(registry.MANAGERS, "fakepm", module)
    return module.PACKAGER  # type: ignore[attr-defined, no-any-return]


def _step(
    root: Path, *extra: str, refresh: bool = True, env: dict[str, str] | None = None
) -> dict[str, object]:
    actions: list[dict[str, object]] = [
        {"action": "write_file", "path": str(root / "repos" / "probe.repo"), "content": "[probe]\n"}
    ]
    if refresh:
        actions.append(
            {
                "action": "run",
                "argv": [sys.executable, "-c", REFRESH, str(root / "index")],
                "env": {},
                "purpose": "refresh",
                "manager": "fakepm",
            }
        )
    actions.append(
        {
            "action": "run",
            "argv": [
                sys.executable,
                "-c",
                INSTALL,
                str(root / "record.jsonl"),
                str(root / "installed"),
                *extra,
            ],
            "env": {"FAKE_STEP": "1", **(env or {})},
            "purpose": "install",
            "manager": "fakepm",
            "packages": ["tool"],
        }
    )
    return {"id": "probe", "version": "system", "check": None, "actions": actions}


def _settings(root: Path, refresh: float = 3600) -> executor.HostSettings:
    return executor.HostSettings(package_cache=root / "cache", index_refresh_seconds=refresh)


def _no_fetch(url: str, dest: Path) -> None:
    raise AssertionError(f"nothing to fetch here, asked for {url}")


def _records(root: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (root / "record.jsonl").read_text().splitlines()]


def test_a_registered_manager_installs_through_its_module(
    fake: FakePM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_AGENT_TOKEN", "secret")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    lines: list[str] = []
    done = executor.install(
        _step(tmp_path),  # type: ignore[arg-type]
        _settings(tmp_path),
        fetch=_no_fetch,
        on_line=lines.append,
    )
    assert (done.manager, done.already_present, done.refreshed) == ("fakepm", False, True)
    assert (tmp_path / "repos" / "probe.repo").read_text() == "[probe]\n"
    [record] = _records(tmp_path)
    # The module's cache arguments, and its cache folder made before the run.
    assert record["argv"][-2:] == ["--cache", str(tmp_path / "cache" / "fake")]  # type: ignore[index]
    assert (tmp_path / "cache" / "fake").is_dir()
    # The one clean environment, with the fixed locale and the step's variables.
    env = record["env"]
    assert isinstance(env, dict)
    assert env["FAKE_STEP"] == "1"
    assert env["LANG"] == "C.UTF-8"
    assert env["https_proxy"] == "http://proxy:3128"
    assert "LC_ALL" not in env
    assert "RUNNER_AGENT_TOKEN" not in env
    # A complete refresh is stamped in the module's index folder.
    assert (tmp_path / "index" / executor.STAMP_NAME).exists()


def test_the_managers_installed_query_stands_in_for_a_missing_check(
    fake: FakePM, tmp_path: Path
) -> None:
    (tmp_path / "installed").touch()
    done = executor.install(
        _step(tmp_path),  # type: ignore[arg-type]
        _settings(tmp_path),
        fetch=_no_fetch,
    )
    assert done.already_present
    assert done.check == "ok: fakepm reports tool installed on this host"
    assert not (tmp_path / "record.jsonl").exists()
    assert not (tmp_path / "repos").exists()


def test_a_manager_without_a_query_installs_even_when_the_package_may_be_there(
    fake: FakePM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "installed").touch()
    monkeypatch.setattr(fake, "installed_queries", lambda names: [])
    done = executor.install(
        _step(tmp_path),  # type: ignore[arg-type]
        _settings(tmp_path),
        fetch=_no_fetch,
    )
    assert not done.already_present
    assert (tmp_path / "record.jsonl").exists()  # the install ran


def test_a_recent_refresh_is_not_repeated(fake: FakePM, tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    (index / "main.idx").write_text("index")
    (index / executor.STAMP_NAME).touch()
    (tmp_path / "repos").mkdir()
    (tmp_path / "repos" / "probe.repo").write_text("[probe]\n")  # unchanged repository
    lines: list[str] = []
    done = executor.install(
        _step(tmp_path),  # type: ignore[arg-type]
        _settings(tmp_path),
        fetch=_no_fetch,
        on_line=lines.append,
    )
    assert not done.refreshed
    assert "runner-agent: fakepm's index is recent on this host; not refreshing" in lines

    # An old stamp, or an index wiped since, means refreshing again.
    old = time.time() - 7200
    os.utime(index / executor.STAMP_NAME, (old, old))
    (tmp_path / "installed").unlink()
    again = executor.install(
        _step(tmp_path),  # type: ignore[arg-type]
        _settings(tmp_path),
        fetch=_no_fetch,
    )
    assert again.refreshed


def test_the_modules_success_codes_and_explanations_decide(fake: FakePM, tmp_path: Path) -> None:
    step = _step(tmp_path, refresh=False, env={"FAKE_EXIT": "3"})
    executor.install(step, _settings(tmp_path), fetch=_no_fetch)  # type: ignore[arg-type]
    (tmp_path / "installed").unlink()
    with pytest.raises(executor.SystemInstallError) as caught:
        executor.install(
            _step(tmp_path, "BROKEN", refresh=False),  # type: ignore[arg-type]
            _settings(tmp_path),
            fetch=_no_fetch,
        )
    assert str(caught.value) == (
        "installing probe system with fakepm failed: fakepm explains tool (exit 1)"
    )


def test_a_plan_writes_only_into_the_managers_repository_folders(
    fake: FakePM, tmp_path: Path
) -> None:
    step = _step(tmp_path)
    step["actions"][0]["path"] = "/etc/apt/sources.list.d/evil.sources"  # type: ignore[index]
    with pytest.raises(executor.SystemInstallError, match=r"outside fakepm's repository folders"):
        executor.install(step, _settings(tmp_path), fetch=_no_fetch)  # type: ignore[arg-type]


def test_an_unknown_manager_fails_clearly(tmp_path: Path) -> None:
    step = _step(tmp_path)
    with pytest.raises(executor.SystemInstallError, match=r"the plan's manager is unknown"):
        executor.install(step, _settings(tmp_path), fetch=_no_fetch)  # type: ignore[arg-type]


def test_the_executor_names_no_manager() -> None:
    # What differs between managers lives in their modules; the executor asks the registry.
    source = Path(executor.__file__).read_text()
    for name in packagers.registry.names():
        assert f'"{name}"' not in source, name
        assert f"'{name}'" not in source, name
