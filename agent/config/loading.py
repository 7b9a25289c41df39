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
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agent.config import models, problems, userpaths, yamlmarks

ENV_PREFIX = "RUNNER_AGENT_"
ENV_SOCKET = "RUNNER_AGENT_SOCKET"
ENV_CONFIG = "RUNNER_AGENT_CONFIG"
ENV_ON_CONFIG_ERROR = "RUNNER_AGENT_ON_CONFIG_ERROR"
_ENV_OWN = frozenset({ENV_SOCKET, ENV_CONFIG, ENV_ON_CONFIG_ERROR})

# Loading is where callers meet these; they live beside their own concerns.
ConfigError = problems.ConfigError
Problem = problems.Problem
Marks = problems.Marks
parse_yaml = yamlmarks.parse_yaml
show = problems.show
problems_from = problems.problems_from
locate = problems.locate
dotted = problems.dotted


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
                value = yaml.load(value, Loader=yamlmarks._Loader)  # noqa: S506 - a safe loader
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
    # Without root, the unset paths default to the user's own (agent.config.userpaths).
    merged = _merge(userpaths.defaults(environ), _merge(data, overrides))
    try:
        settings = validate(merged, source=source, marks=marks, env_sources=env_sources)
    except ConfigError as exc:
        raise ConfigError(unknown + exc.problems) from exc
    if unknown:
        raise ConfigError(unknown)
    return settings


def config_path_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file named by ``RUNNER_AGENT_CONFIG``, if set and not empty."""
    value = (os.environ if environ is None else environ).get(ENV_CONFIG, "")
    return Path(value) if value else None
