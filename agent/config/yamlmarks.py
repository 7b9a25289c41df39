"""YAML with positions: parse a settings-like file and remember where every key stood.

Policy: anchors and aliases, keys that are not strings, nesting deeper than ``MAX_DEPTH``
and more than ``MAX_NODES`` values are refused before anything is constructed: an alias
shares one node many times, so a few hundred bytes can stand for gigabytes ("billion
laughs"), and settings files have no need for any of these.
"""

from __future__ import annotations

from typing import Any

import yaml

from agent.config import problems

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_DEPTH = 64
MAX_NODES = 100_000
_STR_TAG = "tag:yaml.org,2002:str"


def parse_yaml(text: str, *, source: str) -> tuple[Any, problems.Marks]:
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
        marks: problems.Marks = {}
        if node is not None:
            marks[()] = (node.start_mark.line + 1, node.start_mark.column + 1)
            walker = _Walker(source, marks)
            walker.walk(node, (), 0)
            if walker.found:
                raise problems.ConfigError(walker.found)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise problems.ConfigError(
            [problems.Problem(where, "", "", f"invalid YAML: {exc.problem or exc.context}")]
        ) from exc
    except yaml.YAMLError as exc:
        raise problems.ConfigError(
            [problems.Problem(source, "", "", f"invalid YAML: {exc}")]
        ) from exc
    finally:
        loader.dispose()
    return data, marks


class _Walker:
    """Records positions and refuses what settings files must not contain."""

    def __init__(self, source: str, marks: problems.Marks) -> None:
        self.source = source
        self.marks = marks
        self.found: list[problems.Problem] = []
        self._seen: set[int] = set()

    def _fail(self, node: yaml.Node, path: tuple[str | int, ...], message: str) -> None:
        mark = node.start_mark
        where = f"{self.source}:{mark.line + 1}:{mark.column + 1}"
        self.found.append(problems.Problem(where, problems.dotted(path), "", message))

    def walk(self, node: yaml.Node, path: tuple[str | int, ...], depth: int) -> None:
        if self.found:
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
