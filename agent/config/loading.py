"""Loading settings from built-in defaults, a YAML file and the environment.

Policy:
- precedence, lowest first: built-in defaults, the YAML file, ``RUNNER_AGENT_SOCKET``,
  then ``RUNNER_AGENT_<GROUP>__<KEY>[__<SUBKEY>...]`` variables;
- environment values are strings that pydantic coerces; a value starting with ``[`` or
  ``{`` is parsed as YAML flow so lists can be given (``'["/a", "/b"]'``);
- all problems are collected and raised together as one :class:`ConfigError`, each with
  its source (``file:line:column`` or the variable's name), key path, bad value and the
  expected form; duplicate keys in the YAML are errors too (YAML itself keeps the last).
"""

from __future__ import annotations

import contextlib
import os
import reprlib
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from agent.config import models

ENV_PREFIX = "RUNNER_AGENT_"
ENV_SOCKET = "RUNNER_AGENT_SOCKET"
ENV_CONFIG = "RUNNER_AGENT_CONFIG"
ENV_ON_CONFIG_ERROR = "RUNNER_AGENT_ON_CONFIG_ERROR"
_ENV_OWN = frozenset({ENV_SOCKET, ENV_CONFIG, ENV_ON_CONFIG_ERROR})

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration."""

    source: str
    path: str
    value: str
    expected: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        got = f"got {self.value}; " if self.value else ""
        return f"{self.source}: {where}{got}{self.expected}"


class ConfigError(Exception):
    """The configuration cannot be used; :attr:`problems` says why, one per item."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def one_line(self) -> str:
        """The first problem, plus how many more there are: for a single log line."""
        first = str(self.problems[0])
        more = len(self.problems) - 1
        return f"{first} (and {more} more problem{'s' if more > 1 else ''})" if more else first


# --- YAML with positions --------------------------------------------------------------

Marks = dict[tuple[str | int, ...], tuple[int, int]]


MAX_DEPTH = 64
MAX_NODES = 100_000
_STR_TAG = "tag:yaml.org,2002:str"


def parse_yaml(text: str, *, source: str) -> tuple[Any, Marks]:
    """Parse YAML ``text`` and return the data plus ``path -> (line, column)`` marks.

    Lines and columns are 1-based, as editors show them. Raises :class:`ConfigError` on
    a syntax error, a duplicate key, a key that is not a string, nesting deeper than
    ``MAX_DEPTH``, more than ``MAX_NODES`` values, and on anchors and aliases: an alias
    shares one node many times, so a few hundred bytes can stand for gigabytes
    ("billion laughs"), and settings files have no need for them.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        marks: Marks = {}
        if node is not None:
            marks[()] = (node.start_mark.line + 1, node.start_mark.column + 1)
            walker = _Walker(source, marks)
            walker.walk(node, (), 0)
            if walker.problems:
                raise ConfigError(walker.problems)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(
            [Problem(where, "", "", f"invalid YAML: {exc.problem or exc.context}")]
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(source, "", "", f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    return data, marks


class _Walker:
    """Records positions and refuses what settings files must not contain."""

    def __init__(self, source: str, marks: Marks) -> None:
        self.source = source
        self.marks = marks
        self.problems: list[Problem] = []
        self._seen: set[int] = set()

    def _fail(self, node: yaml.Node, path: tuple[str | int, ...], message: str) -> None:
        mark = node.start_mark
        where = f"{self.source}:{mark.line + 1}:{mark.column + 1}"
        self.problems.append(Problem(where, dotted(path), "", message))

    def walk(self, node: yaml.Node, path: tuple[str | int, ...], depth: int) -> None:
        if self.problems:
            return  # one structural problem is enough; the rest may be its echo
        if id(node) in self._seen:
            self._fail(node, path, "YAML anchors and aliases are not supported; write it out")
            return
        self._seen.add(id(node))
        if len(self._seen) > MAX_NODES:
            self._fail(node, path, f"more than {MAX_NODES} values; this is not a settings file")
            return
        if depth > MAX_DEPTH:
            self._fail(node, path, f"nested deeper than {MAX_DEPTH} levels")
            return
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                    shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "..."
                    self._fail(
                        key_node, path, f"key {shown!r} is not a string; quote it or rename it"
                    )
                    return
                key = key_node.value
                child = (*path, key)
                if key in keys:
                    self._fail(key_node, child, "duplicate key; each key may appear once")
                keys.add(key)
                self.marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                self.walk(value_node, child, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, index)
                self.marks[child] = (item.start_mark.line + 1, item.start_mark.column + 1)
                self.walk(item, child, depth + 1)


def dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --- environment ----------------------------------------------------------------------


def env_overrides(
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[tuple[str, ...], str], list[Problem]]:
    """Turn ``RUNNER_AGENT_*`` variables into a nested dict, and remember each one's name.

    Also returns the problems of variables that name no setting.
    """
    data: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    unknown: list[Problem] = []
    if ENV_SOCKET in environ:
        data.setdefault("server", {})["socket_path"] = environ[ENV_SOCKET]
        sources[("server", "socket_path")] = ENV_SOCKET
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in _ENV_OWN:
            continue
        if "__" not in name:
            # A typo such as RUNNER_AGENT_LOGGING_LEVEL must not pass silently.
            unknown.append(
                Problem(
                    f"environment variable {name}",
                    "",
                    "",
                    "not a setting; expected RUNNER_AGENT_<GROUP>__<KEY> (two underscores), "
                    f"or one of {', '.join(sorted(_ENV_OWN))}",
                )
            )
            continue
        parts = tuple(p.lower() for p in name[len(ENV_PREFIX) :].split("__"))
        value: Any = environ[name]
        if value.lstrip().startswith(("[", "{")):
            # On a YAML error the string stays; validation then says what was expected.
            with contextlib.suppress(yaml.YAMLError):
                value = yaml.load(value, Loader=_Loader)  # noqa: S506 - a safe loader
        cursor = data
        for part in parts[:-1]:
            nested = cursor.setdefault(part, {})
            if not isinstance(nested, dict):
                nested = cursor[part] = {}
            cursor = nested
        cursor[parts[-1]] = value
        sources[parts] = name
    return data, sources, unknown


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# --- validation -----------------------------------------------------------------------


def _fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str] | None:
    """The field names allowed at ``loc`` (the parent of an unknown key), if a model."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return list(model.model_fields)


_SHOW = reprlib.Repr()
_SHOW.maxstring = 100
_SHOW.maxother = 100
_SHOW.maxlevel = 2


def show(value: Any) -> str:
    """A bad value as quoted in a message: escaped and short, however big the value."""
    # reprlib bounds the work on huge or deeply nested values; ascii() then escapes the
    # short result so control characters are shown, never written raw into a log line.
    text = ascii(_SHOW.repr(value))[1:-1] if isinstance(value, str) else _SHOW.repr(value)
    text = text if isinstance(value, str) else ascii(text)[1:-1]
    return text if len(text) <= 120 else text[:117] + "..."


_PRIMITIVE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list"})


def _is_union_tag(part: str | int) -> bool:
    # pydantic names each union branch in the location: "str", "int" or a model class.
    # Field names here are snake_case, so a capitalised part is always a branch tag.
    return isinstance(part, str) and (
        part in _PRIMITIVE_TAGS or part[:1].isupper() or part.startswith("function-")
    )


def _wrong_branch(err: Any, exc: ValidationError) -> bool:
    """A union branch the value plainly is not (a mapping given where str is one option).

    Only dropped when another branch has something more useful to say.
    """
    loc = tuple(err["loc"])
    tags = [i for i, part in enumerate(loc) if _is_union_tag(part)]
    if not tags or tags[-1] != len(loc) - 1 or not str(err["type"]).endswith("_type"):
        return False
    parent = loc[: tags[-1]]
    # Another branch got further into the value: its error is the one that helps.
    return any(
        tuple(o["loc"])[: len(parent)] == parent and len(o["loc"]) > len(loc)
        for o in exc.errors(include_url=False)
    )


def problems_from(
    exc: ValidationError,
    *,
    source: str,
    marks: Marks | None = None,
    env_sources: Mapping[tuple[str, ...], str] | None = None,
    model: type[BaseModel] = models.Settings,
) -> list[Problem]:
    """Turn a pydantic error on data from ``source`` into positioned problems."""
    problems = []
    errors = [e for e in exc.errors(include_url=False) if not _wrong_branch(e, exc)]
    locs = [tuple(e["loc"]) for e in errors]
    for err in errors:
        loc = tuple(p for p in err["loc"] if not _is_union_tag(p))
        if err["type"] == "too_short" and any(o[: len(loc)] == loc and o != loc for o in locs):
            continue  # "needs at least 1 item" only echoes the bad items reported below it
        where = locate(loc, source, marks or {}, env_sources or {})
        expected = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            expected = "unknown key" + (
                f"; expected one of: {', '.join(allowed)}" if allowed else ""
            )
        elif err["type"] == "missing":
            expected = "this field is required"
        elif expected.startswith("Value error, "):
            expected = expected[len("Value error, ") :]
        # A whole mapping (a model-level rule) says nothing the message does not.
        bad = err.get("input")
        value = "" if err["type"] == "missing" or isinstance(bad, dict) else show(bad)
        problems.append(Problem(where, dotted(loc), value, expected))
    return problems


def validate(
    data: Any,
    *,
    source: str,
    marks: Marks | None = None,
    env_sources: Mapping[tuple[str, ...], str] | None = None,
) -> models.Settings:
    """Validate merged ``data`` into :class:`~agent.config.models.Settings`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [Problem(source, "", show(data), "expected a mapping of groups at the top level")]
        )
    try:
        return models.Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            problems_from(exc, source=source, marks=marks, env_sources=env_sources)
        ) from exc


def locate(
    loc: tuple[str | int, ...],
    source: str,
    marks: Marks,
    env_sources: Mapping[tuple[str, ...], str] | None = None,
) -> str:
    """Where ``loc`` came from: an environment variable, ``file:line:col`` or the file."""
    # An environment variable wins (it overrode the file); otherwise the deepest marked
    # prefix in the file; otherwise the file as a whole.
    for end in range(len(loc), 0, -1):
        name = (env_sources or {}).get(tuple(str(p) for p in loc[:end]))
        if name:
            return f"environment variable {name}"
    for end in range(len(loc), -1, -1):
        mark = marks.get(loc[:end])
        if mark:
            return f"{source}:{mark[0]}:{mark[1]}"
    return source


MAX_FILE_BYTES = 1024 * 1024


def read_limited(path: Path, *, limit: int = MAX_FILE_BYTES, what: str = "the file") -> str:
    """Read a small text file safely, or raise :class:`ConfigError` saying why not.

    Only regular files are read: a FIFO would block forever and ``/dev/zero`` never ends.
    The file is opened non-blocking (so a FIFO cannot hang the open), checked with
    ``fstat`` and read up to ``limit`` bytes.
    """

    def problem(text: str) -> ConfigError:
        return ConfigError([Problem(str(path), "", "", text)])

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise problem(f"{what} does not exist; check --config or RUNNER_AGENT_CONFIG") from exc
    except PermissionError as exc:
        raise problem(
            f"permission denied reading it; make it readable by uid {os.getuid()}"
        ) from exc
    except IsADirectoryError as exc:
        raise problem("is a directory; expected a file") from exc
    except OSError as exc:
        raise problem(f"cannot be read: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise problem("is a directory; expected a file")
        if not stat.S_ISREG(info.st_mode):
            raise problem("is not a regular file (a pipe or a device?); expected a file")
        if info.st_size > limit:
            raise problem(f"is {info.st_size} bytes; the limit is {limit}")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise problem(f"cannot be read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise problem(f"is over the limit of {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise problem("is not UTF-8 text") from exc


def read_text(path: Path) -> str:
    """Read a config file (see :func:`read_limited`)."""
    return read_limited(path, what="the file")


def load(path: Path | None, *, environ: Mapping[str, str] | None = None) -> models.Settings:
    """Load settings: defaults, then the YAML file at ``path`` (if any), then the env."""
    environ = os.environ if environ is None else environ
    data: Any = {}
    marks: Marks = {}
    source = str(path) if path else "defaults"
    if path is not None:
        data, marks = parse_yaml(read_text(path), source=source)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                [Problem(f"{source}:1:1", "", show(data), "expected a mapping of groups")]
            )
    overrides, env_sources, unknown = env_overrides(environ)
    try:
        settings = validate(
            _merge(data, overrides), source=source, marks=marks, env_sources=env_sources
        )
    except ConfigError as exc:
        raise ConfigError(unknown + exc.problems) from exc
    if unknown:
        raise ConfigError(unknown)
    return settings


def config_path_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file named by ``RUNNER_AGENT_CONFIG``, if set and not empty."""
    value = (os.environ if environ is None else environ).get(ENV_CONFIG, "")
    return Path(value) if value else None
