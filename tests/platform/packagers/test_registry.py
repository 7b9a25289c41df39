"""The registry: every manager the platform model names has a module, and a new manager
is one file plus one registry line."""

from __future__ import annotations

import types

import pytest

from agent.platform import model, packagers
from agent.platform.packagers import base, registry


def test_the_registry_covers_every_manager_the_model_names() -> None:
    assert registry.names() == model.PACKAGE_MANAGERS
    for name in model.PACKAGE_MANAGERS:
        packager = packagers.get(name)
        assert packager.name == name
        assert packager.oses == model.MANAGER_OSES[name]
        assert packagers.BINARIES[name] == packager.binary


def test_each_registry_entry_is_the_managers_own_module() -> None:
    for name, entry in registry.MANAGERS.items():
        assert entry == f"agent.platform.packagers.{name}"


class _Fake(base.Packager):
    name = "fakepm"
    binary = "fakepm"
    oses = ("linux",)
    name_chars = ".-"

    def install_commands(
        self, names: tuple[str, ...], lock_timeout_s: int
    ) -> list[base.InstallCommand]:
        return [base.InstallCommand(argv=("fakepm", "get", *names))]

    def installed_queries(self, names: tuple[str, ...]) -> list[base.Query]:
        return [base.Query(argv=("fakepm", "has", *names), names=names)]


def test_a_new_manager_is_one_module_and_one_registry_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = types.ModuleType("fakepm")
    module.PACKAGER = _Fake()  # type: ignore[attr-defined]
    monkeypatch.setitem(registry.MANAGERS, "fakepm", module)

    assert packagers.get("fakepm") is module.PACKAGER  # type: ignore[attr-defined]
    assert "fakepm" in registry.names()
    # The shared entry points take it with no other change: name checks included.
    commands = packagers.install_commands("fakepm", ["tool-1.2"])  # type: ignore[arg-type]
    assert commands == [base.InstallCommand(argv=("fakepm", "get", "tool-1.2"))]
    with pytest.raises(model.PlatformError, match=r"'a/b' is not acceptable for fakepm"):
        packagers.check_package_name("fakepm", "a/b")  # type: ignore[arg-type]


def test_a_registered_import_string_is_imported_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(registry.MANAGERS, "apt2", "agent.platform.packagers.apt")
    with pytest.raises(TypeError, match=r"registered as package manager 'apt2'"):
        registry.get("apt2")


def test_a_module_without_a_packager_is_a_mistake_in_the_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(registry.MANAGERS, "empty", types.ModuleType("empty"))
    with pytest.raises(TypeError, match=r"PACKAGER is None"):
        registry.get("empty")


@pytest.mark.parametrize("name", ["npm", "", "APT", None, 3])
def test_an_unknown_manager_is_refused_with_the_known_ones(name: object) -> None:
    with pytest.raises(model.PlatformError, match=r"is not one of: apt, dnf, yum, zypper"):
        registry.get(name)  # type: ignore[arg-type]


def test_every_manager_speaks_through_the_base_class() -> None:
    # Nothing outside a manager's module needs to know which one it is.
    for name in registry.names():
        assert isinstance(packagers.get(name), base.Packager)
