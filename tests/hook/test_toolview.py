"""The job's tool cache view: links that resolve in job containers too, the marker last,
nothing followed that the hook did not make, and the real @actions/tool-cache find()."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from agent.hook import toolview
from tests.hook.conftest import make_entry

AGENT_STORE = "/var/lib/runner-agent/store"


class Notes(list[str]):
    def __call__(self, text: str) -> None:
        self.append(text)


def view_inside(tmp_path: Path) -> tuple[toolview.ToolView, Path, Notes]:
    """A tool cache with the store mounted inside it (as in a runner pod)."""
    cache = tmp_path / "_work" / "_tool"
    store = cache / toolview.STORE_IN_TOOL_CACHE
    store.mkdir(parents=True)
    notes = Notes()
    return toolview.ToolView(str(cache), AGENT_STORE, str(store), notes), store, notes


def test_the_link_is_relative_and_the_marker_comes_after_it(tmp_path: Path) -> None:
    view, store, notes = view_inside(tmp_path)
    make_entry(store, "ninja", "1.11.1", "x64")
    linked = view.link("ninja", f"{AGENT_STORE}/ninja/1.11.1/x64")
    cache = Path(view.tool_cache)
    link = cache / "ninja" / "1.11.1" / "x64"
    marker = cache / "ninja" / "1.11.1" / "x64.complete"
    assert linked.linked
    assert linked.view_path == str(link)
    assert os.readlink(link) == "../../.runner-agent-store/ninja/1.11.1/x64"
    assert (link / "bin" / "ninja").is_file()
    assert marker.is_file()
    assert not marker.is_symlink()
    assert marker.stat().st_size == 0
    assert os.lstat(link).st_mtime_ns <= os.lstat(marker).st_mtime_ns
    assert notes == []
    # Put again (a second ensure): the same link and marker stay.
    before = os.lstat(link).st_ino, os.lstat(marker).st_ino
    view.link("ninja", f"{AGENT_STORE}/ninja/1.11.1/x64")
    assert (os.lstat(link).st_ino, os.lstat(marker).st_ino) == before


def test_the_relative_link_resolves_where_the_tool_cache_is_mounted_elsewhere(
    tmp_path: Path,
) -> None:
    view, store, _ = view_inside(tmp_path)
    make_entry(store, "ninja", "1.11.1")
    view.link("ninja", f"{AGENT_STORE}/ninja/1.11.1/x64")
    # A job container sees the tool cache at /__t: the same tree under another root.
    moved = tmp_path / "__t"
    os.rename(view.tool_cache, moved)
    assert (
        (moved / "ninja" / "1.11.1" / "x64" / "bin" / "ninja")
        .read_text()
        .endswith("echo ninja 1.11.1\n")
    )


def test_a_store_outside_the_tool_cache_gets_an_absolute_link(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_entry(store, "node", "20.11.1")
    view = toolview.ToolView(str(tmp_path / "tool"), AGENT_STORE, str(store), Notes())
    view.link("node", f"{AGENT_STORE}/node/20.11.1/x64")
    assert os.readlink(tmp_path / "tool/node/20.11.1/x64") == str(store / "node/20.11.1/x64")


def test_a_stale_link_of_ours_is_replaced(tmp_path: Path) -> None:
    view, store, _ = view_inside(tmp_path)
    make_entry(store, "ninja", "1.11.1")
    (Path(view.tool_cache) / "ninja" / "1.11.1").mkdir(parents=True)
    os.symlink("/old/place", Path(view.tool_cache) / "ninja" / "1.11.1" / "x64")
    assert view.link("ninja", f"{AGENT_STORE}/ninja/1.11.1/x64").linked
    assert os.readlink(Path(view.tool_cache) / "ninja/1.11.1/x64").startswith("../../")
    assert [p.name for p in (Path(view.tool_cache) / "ninja" / "1.11.1").iterdir()] != []
    leftovers = [
        p for p in (Path(view.tool_cache) / "ninja/1.11.1").iterdir() if "runner-agent" in p.name
    ]
    assert leftovers == []


def test_a_preinstalled_folder_is_left_and_the_store_path_used(tmp_path: Path) -> None:
    view, store, notes = view_inside(tmp_path)
    make_entry(store, "node", "20.11.1")
    own = make_entry(Path(view.tool_cache), "node", "20.11.1")
    linked = view.link("node", f"{AGENT_STORE}/node/20.11.1/x64")
    assert not linked.linked
    assert linked.view_path == str(store / "node/20.11.1/x64")
    assert not own.is_symlink()
    assert (own / "bin" / "node").exists()
    assert not (Path(view.tool_cache) / "node/20.11.1/x64.complete").exists()
    [note] = notes
    assert "already there" in note
    assert str(store / "node/20.11.1/x64") in note


@pytest.mark.root
def test_a_planted_link_owned_by_someone_else_is_not_followed(
    needs_root: None, tmp_path: Path
) -> None:
    view, store, notes = view_inside(tmp_path)
    make_entry(store, "ninja", "1.11.1")
    victim = tmp_path / "victim"
    victim.mkdir()
    folder = Path(view.tool_cache) / "ninja" / "1.11.1"
    folder.mkdir(parents=True)
    planted = folder / "x64"
    os.symlink(victim, planted)
    os.lchown(planted, 1001, 123)
    linked = view.link("ninja", f"{AGENT_STORE}/ninja/1.11.1/x64")
    assert not linked.linked
    assert os.readlink(planted) == str(victim)
    assert list(victim.iterdir()) == []
    assert not (folder / "x64.complete").exists()
    assert linked.view_path == str(store / "ninja/1.11.1/x64")
    assert any("not a link of the hook's" in n for n in notes)


@pytest.mark.parametrize("where", ["name", "version"])
def test_a_link_where_a_folder_belongs_is_not_followed(tmp_path: Path, where: str) -> None:
    view, store, notes = view_inside(tmp_path)
    make_entry(store, "ninja", "1.11.1")
    victim = tmp_path / "victim"
    victim.mkdir()
    cache = Path(view.tool_cache)
    if where == "name":
        os.symlink(victim, cache / "ninja")
    else:
        (cache / "ninja").mkdir()
        os.symlink(victim, cache / "ninja" / "1.11.1")
    linked = view.link("ninja", f"{AGENT_STORE}/ninja/1.11.1/x64")
    assert not linked.linked
    assert list(victim.iterdir()) == []
    assert any("a link, not followed" in n for n in notes)


@pytest.mark.parametrize(
    "entry",
    [
        "/elsewhere/ninja/1.11.1/x64",
        f"{AGENT_STORE}/ninja/1.11.1",
        f"{AGENT_STORE}/ninja/1.11.1/x64/bin",
        f"{AGENT_STORE}/ninja/../../etc/x64",
        f"{AGENT_STORE}",
    ],
)
def test_an_entry_that_is_not_name_version_arch_in_the_store_is_refused(
    tmp_path: Path, entry: str
) -> None:
    view, _, _ = view_inside(tmp_path)
    with pytest.raises(toolview.ToolViewError, match="ninja: its entry"):
        view.link("ninja", entry)


def test_an_entry_the_runner_cannot_see_says_where_to_mount_the_store(tmp_path: Path) -> None:
    view, _, _ = view_inside(tmp_path)
    with pytest.raises(toolview.ToolViewError, match="mount it read-only"):
        view.link("ninja", f"{AGENT_STORE}/ninja/1.11.1/x64")


def test_paths_and_values_are_translated_and_given_in_container_form(tmp_path: Path) -> None:
    view, store, _ = view_inside(tmp_path)
    make_entry(store, "ninja", "1.11.1")
    make_entry(store, "node", "20.11.1")
    view.link("ninja", f"{AGENT_STORE}/ninja/1.11.1/x64")
    view.link("node", f"{AGENT_STORE}/node/20.11.1/x64")
    cache = view.tool_cache
    assert view.translate(f"{AGENT_STORE}/node/20.11.1/x64/lib:/usr/lib:{AGENT_STORE}/x") == (
        f"{cache}/node/20.11.1/x64/lib:/usr/lib:{store}/x"
    )
    assert view.translate("http://example.invalid:8080/x") == "http://example.invalid:8080/x"
    assert (
        view.translate(f"{AGENT_STORE}/node/20.11.1/x64-other") == f"{store}/node/20.11.1/x64-other"
    )
    assert view.path_lines([f"{AGENT_STORE}/ninja/1.11.1/x64/bin", "/usr/local/bin"]) == [
        f"{cache}/ninja/1.11.1/x64/bin",
        "/__t/ninja/1.11.1/x64/bin",
        "/usr/local/bin",
    ]


def test_homes_are_pod_local_folders(tmp_path: Path) -> None:
    view, _, _ = view_inside(tmp_path)
    home, below = view.home("node", "NPM_CONFIG_PREFIX", ["bin", "."])
    assert home == f"{view.tool_cache}/.runner-agent-homes/node/npm_config_prefix"
    assert below == [f"{home}/bin", home]
    assert Path(home).is_dir()
    assert (Path(home).stat().st_mode & 0o777) == 0o755
    with pytest.raises(toolview.ToolViewError, match="not below it"):
        view.home("node", "NPM_CONFIG_PREFIX", ["../../escape"])
    with pytest.raises(toolview.ToolViewError, match="feature named"):
        view.home("../x", "A", [])


def test_the_tool_cache_and_store_are_found_by_the_runners_rules(tmp_path: Path) -> None:
    assert toolview.tool_cache_dir({"RUNNER_TOOL_CACHE": "/opt/hostedtoolcache/"}) == (
        "/opt/hostedtoolcache"
    )
    assert (
        toolview.tool_cache_dir({"AGENT_TOOLSDIRECTORY": "/a", "RUNNER_WORKSPACE": "/w/r"}) == "/a"
    )
    assert toolview.tool_cache_dir({"RUNNER_WORKSPACE": "/home/runner/_work/repo"}) == (
        "/home/runner/_work/_tool"
    )
    with pytest.raises(toolview.ToolViewError, match="set RUNNER_TOOL_CACHE"):
        toolview.tool_cache_dir({})
    cache = tmp_path / "tool"
    with pytest.raises(toolview.ToolViewError, match="not visible here"):
        toolview.runner_store({}, str(cache), str(tmp_path / "nope"))
    assert toolview.runner_store({}, str(cache), str(tmp_path)) == str(tmp_path)
    assert toolview.runner_store({"RUNNER_AGENT_STORE": "/mnt/s"}, str(cache), "/x") == "/mnt/s"


def test_a_store_planted_in_the_tool_cache_is_not_trusted(tmp_path: Path) -> None:
    # Job code on a persistent runner can write the tool cache: a folder (or a link to a
    # tree of its own) at .runner-agent-store must not become the next job's store.
    cache, agent_store = tmp_path / "tool", tmp_path / "store"
    agent_store.mkdir()
    (cache / ".runner-agent-store").mkdir(parents=True)
    assert toolview.runner_store({}, str(cache), str(agent_store)) == str(agent_store)
    with pytest.raises(toolview.ToolViewError, match="not a read-only mount"):
        toolview.runner_store({}, str(cache), str(tmp_path / "nope"))
    (cache / ".runner-agent-store").rmdir()
    (cache / ".runner-agent-store").symlink_to(agent_store)
    with pytest.raises(toolview.ToolViewError, match="not a read-only mount"):
        toolview.runner_store({}, str(cache), str(tmp_path / "nope"))


@pytest.mark.root
def test_a_read_only_mount_in_the_tool_cache_is_the_store(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to bind-mount the store read-only")
    cache, store = tmp_path / "tool", tmp_path / "store"
    store.mkdir()
    mounted = cache / ".runner-agent-store"
    mounted.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(store), str(mounted)], check=True, timeout=30)
    try:
        # Bound but still writable: not yet the store.
        assert toolview.runner_store({}, str(cache), str(store)) == str(store)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mounted)], check=True, timeout=30)
        assert toolview.runner_store({}, str(cache), str(tmp_path / "gone")) == str(mounted)
        # Host mode: the agent's store is visible, and this is the same folder mounted in
        # the tool cache: used, for relative links.
        assert toolview.runner_store({}, str(cache), str(store)) == str(mounted)
        # A read-only mount reached through a link (job code turned the tool cache into
        # one, e.g. into /proc/<pid>/root of a namespace of its own) is not trusted.
        linked = tmp_path / "linked-tool"
        linked.symlink_to(cache)
        with pytest.raises(toolview.ToolViewError, match="not a read-only mount"):
            toolview.runner_store({}, str(linked), str(tmp_path / "gone"))
        # Nor is another read-only mount when the agent's own store is here.
        other = tmp_path / "other"
        other.mkdir()
        assert toolview.runner_store({}, str(cache), str(other)) == str(other)
    finally:
        subprocess.run(["umount", str(mounted)], check=True, timeout=30)


def test_the_real_actions_tool_cache_finds_the_linked_entry(
    tmp_path: Path, tool_cache_module: Path
) -> None:
    view, store, _ = view_inside(tmp_path)
    make_entry(store, "node", "20.11.1")
    make_entry(store, "node", "18.19.0")
    view.link("node", f"{AGENT_STORE}/node/20.11.1/x64")
    view.link("node", f"{AGENT_STORE}/node/18.19.0/x64")
    script = tool_cache_module / "find-hook.mjs"
    script.write_text(
        "import * as tc from '@actions/tool-cache';\n"
        "console.log(JSON.stringify({found: tc.find('node', '20', 'x64'),"
        " versions: tc.findAllVersions('node', 'x64').sort()}));\n"
    )
    env = {**os.environ, "RUNNER_TOOL_CACHE": view.tool_cache, "RUNNER_TEMP": str(tmp_path)}
    proc = subprocess.run(
        ["node", str(script)], cwd=tool_cache_module, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["found"] == f"{view.tool_cache}/node/20.11.1/x64"
    assert result["versions"] == ["18.19.0", "20.11.1"]
