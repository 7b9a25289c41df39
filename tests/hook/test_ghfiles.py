"""$GITHUB_ENV and $GITHUB_PATH, read back the way the runner reads them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.hook import ghfiles
from tests.hook import runnerfiles


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "env").touch()
    (tmp_path / "path").touch()
    return {"GITHUB_ENV": str(tmp_path / "env"), "GITHUB_PATH": str(tmp_path / "path")}


VALUES = [
    "plain",
    "",
    "with = equals and << arrows",
    "two\nlines",
    "ends with a newline\n",
    "\nstarts with one",
    "blank\n\nline inside",
    "crlf\r\ninside",
    "a lone\rcarriage return",
    "ghadelimiter_looks-like-ours\nghadelimiter_\n",
    "EOF\nEOF",
    "ünïcode ✓\nsecond",
]


@pytest.mark.parametrize("value", VALUES)
def test_every_value_round_trips_through_the_runners_parser(
    files: dict[str, str], value: str
) -> None:
    ghfiles.write(files, {"FIRST": "1", "VALUE": value, "LAST": "z"}, [])
    parsed = runnerfiles.parse_env(Path(files["GITHUB_ENV"]).read_bytes().decode("utf-8"))
    assert parsed == {"FIRST": "1", "VALUE": value, "LAST": "z"}


def test_a_multiline_value_takes_the_heredoc_form_with_an_unguessable_delimiter() -> None:
    entry = ghfiles.env_entry("NAME", "a\nb")
    head, *_ = entry.split("\n")
    assert head.startswith("NAME<<ghadelimiter_")
    delimiter = head.split("<<", 1)[1]
    assert entry == f"NAME<<{delimiter}\na\nb\n{delimiter}\n"
    assert ghfiles.env_entry("NAME", "a\nb") != entry  # fresh each time


def test_path_entries_are_written_so_the_first_wins(files: dict[str, str]) -> None:
    ghfiles.write(files, {}, ["/first/bin", "/second/bin", "/first/bin", "/third"])
    text = Path(files["GITHUB_PATH"]).read_text()
    assert text == "/third\n/second/bin\n/first/bin\n"
    assert runnerfiles.path_after(text, "/usr/bin") == "/first/bin:/second/bin:/third:/usr/bin"


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("NODE_OPTIONS", "--require x", "the runner refuses it"),
        ("1ABC", "x", "a name is letters"),
        ("A-B", "x", "a name is letters"),
        ("A=B", "x", "a name is letters"),
        ("A<<B", "x", "a name is letters"),
        ("", "x", "a name is letters"),
        ("NUL", "a\0b", "NUL"),
    ],
)
def test_bad_names_and_values_are_refused_and_nothing_is_written(
    files: dict[str, str], name: str, value: str, needle: str
) -> None:
    with pytest.raises(ghfiles.GitHubFileError, match=needle):
        ghfiles.write(files, {"GOOD": "1", name: value}, ["/bin"])
    assert Path(files["GITHUB_ENV"]).read_text() == ""
    assert Path(files["GITHUB_PATH"]).read_text() == ""


@pytest.mark.parametrize("entry", ["", "/a\nb", "/a\rb"])
def test_a_path_entry_with_a_line_break_is_refused(files: dict[str, str], entry: str) -> None:
    with pytest.raises(ghfiles.GitHubFileError, match="GITHUB_PATH"):
        ghfiles.write(files, {}, [entry])


def test_an_unset_or_missing_file_is_named(files: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ghfiles.GitHubFileError, match=r"^\$GITHUB_ENV is unset"):
        ghfiles.write({"GITHUB_PATH": files["GITHUB_PATH"]}, {"A": "1"}, [])
    missing = str(tmp_path / "nope" / "env")
    with pytest.raises(ghfiles.GitHubFileError, match=f"GITHUB_ENV \\({missing}\\)"):
        ghfiles.write({**files, "GITHUB_ENV": missing}, {"A": "1"}, [])
    assert not os.path.exists(missing)


@pytest.mark.root
def test_an_unwritable_github_env_is_named_as_an_unprivileged_user(
    needs_root: None, workdir: Path
) -> None:
    env_file, path_file = workdir / "env", workdir / "path"
    env_file.touch(mode=0o644)  # root's, not writable by uid 1001
    path_file.touch(mode=0o666)
    code = (
        "import sys; from agent.hook import ghfiles\n"
        "try:\n"
        "    files = {'GITHUB_ENV': sys.argv[1], 'GITHUB_PATH': sys.argv[2]}\n"
        "    ghfiles.write(files, {'A': '1'}, ['/x'])\n"
        "except ghfiles.GitHubFileError as exc:\n"
        "    print(exc); sys.exit(exc.exit_code)\n"
    )
    proc = subprocess.run(
        ["setpriv", "--reuid=1001", "--regid=123", "--clear-groups", sys.executable, "-c", code,
         str(env_file), str(path_file)],
        capture_output=True, text=True, timeout=30, check=False,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"cannot write $GITHUB_ENV ({env_file}): Permission denied" in proc.stdout
