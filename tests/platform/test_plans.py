"""The plan types themselves: they match the data they describe, their unions can be told
apart by one key, and the module stays importable on old Pythons."""

from __future__ import annotations

import ast
import inspect
from typing import get_args, get_type_hints

from agent.platform import model
from agent.platform import plans as wire


def _keys(cls: type) -> set[str]:
    return set(get_type_hints(cls))


def _tags(union: object, key: str) -> list[set[str]]:
    return [set(get_args(get_type_hints(member)[key])) for member in get_args(union)]


def test_the_platform_in_a_plan_is_every_field_of_a_platform_sorted() -> None:
    data = model.Platform(os="linux", arch="x64", libc="glibc", distro_like=("debian",)).to_json()
    assert list(data) == sorted(data)
    assert set(data) == _keys(wire.PlatformData) == set(wire.PlatformData.__required_keys__)


def test_each_union_is_told_apart_by_one_key() -> None:
    for union, key in ((wire.Event, "event"), (wire.ToolAction, "action"), (wire.Step, "method")):
        tags = _tags(union, key)
        assert all(tags), f"{union}: every member names its {key} as a Literal"
        assert sum(len(t) for t in tags) == len(set().union(*tags)), f"{union}: {key} overlaps"


def test_steps_share_the_common_keys() -> None:
    common = _keys(wire.StepBase)
    assert common < _keys(wire.ToolStep)
    assert common < _keys(wire.SystemStep)
    assert _keys(wire.ToolStep) - _keys(wire.SystemStep) == {"platform"}
    assert set(wire.ToolStep.__optional_keys__) == {"platform"}


def test_a_system_report_lands_in_its_feature_result() -> None:
    assert _keys(wire.SystemReport) <= _keys(wire.FeatureResult) | {"id", "version"}


def test_the_module_evaluates_no_new_syntax_at_import() -> None:
    # Annotations are strings (from __future__); what runs at import must not use
    # ``X | Y`` or ``list[...]``, so the module keeps importing on Python 3.8.
    tree = ast.parse(inspect.getsource(wire))
    builtins = {"list", "dict", "tuple", "set", "frozenset", "type"}
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        for part in ast.walk(node.value):
            assert not (isinstance(part, ast.BinOp) and isinstance(part.op, ast.BitOr)), (
                ast.unparse(node)
            )
            assert not (
                isinstance(part, ast.Subscript)
                and isinstance(part.value, ast.Name)
                and part.value.id in builtins
            ), ast.unparse(node)
