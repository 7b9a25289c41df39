"""The runner's readings of $GITHUB_ENV and $GITHUB_PATH, written after actions/runner's
FileCommandManager (SetEnvFileCommand, AddPathFileCommand), so a test can apply the
hook's files exactly as the runner does."""

from __future__ import annotations

from pathlib import Path


def _read_line(text: str, index: int) -> tuple[str | None, int, str | None]:
    """The runner's ReadLine: the line from ``index``, the next index, its newline."""
    if index >= len(text):
        return None, index, None
    end = text.find("\n", index)
    if end < 0:
        return text[index:], len(text), None
    newline = "\r\n" if end > index and text[end - 1] == "\r" else "\n"
    line = text[index : end - (len(newline) - 1)]
    return line, end + 1, newline


def parse_env(text: str) -> dict[str, str]:
    """What the runner sets from a $GITHUB_ENV file (it raises on a malformed one)."""
    env: dict[str, str] = {}
    line, index, _ = _read_line(text, 0)
    while line is not None:
        if line:
            equals, heredoc = line.find("="), line.find("<<")
            if equals >= 0 and (heredoc < 0 or equals < heredoc):
                name, value = line.split("=", 1)
                if not name:
                    raise ValueError(f"Invalid format {line!r}")
                env[name] = value
            elif heredoc >= 0 and (equals < 0 or heredoc < equals):
                name, delimiter = line.split("<<", 1)
                if not name or not delimiter:
                    raise ValueError(f"Invalid format {line!r}")
                start = end = index
                temp, index, newline = _read_line(text, index)
                while temp != delimiter:
                    if temp is None:
                        raise ValueError(f"Matching delimiter not found {delimiter!r}")
                    if newline is None:
                        raise ValueError("EOF marker missing new line")
                    end = index - len(newline)
                    temp, index, newline = _read_line(text, index)
                env[name] = text[start:end] if end > start else ""
            else:
                raise ValueError(f"Invalid format {line!r}")
        line, index, _ = _read_line(text, index)
    return env


def path_after(text: str, path: str) -> str:
    """PATH after the runner applies a $GITHUB_PATH file: each line is put in front
    (again, if it was there), so the last line ends up first."""
    prepend: list[str] = []
    for line in text.splitlines():
        if line:
            if line in prepend:
                prepend.remove(line)
            prepend.append(line)
    return ":".join([*reversed(prepend), path])


def apply(env_file: Path, path_file: Path, base: dict[str, str]) -> dict[str, str]:
    """``base`` with both files applied, as the job's next step gets it."""
    out = dict(base)
    out.update(parse_env(env_file.read_bytes().decode("utf-8")))
    out["PATH"] = path_after(path_file.read_bytes().decode("utf-8"), base.get("PATH", ""))
    return out
