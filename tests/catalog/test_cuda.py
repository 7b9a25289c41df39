"""CUDA-aware resolution on test manifests: the driver's CUDA picks an unversioned
toolkit and a pytorch-like feature's build variant; a toolkit major above the driver's
is an error at resolution, a minor above it a warning, and no GPU means the default
toolkit and the cpu build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.catalog import cuda, loading, requests, resolver
from agent.platform import model
from tests.catalog import factories


def target(driver: str | None) -> model.Platform:
    return model.Platform(os="linux", arch="x64", libc="glibc", cuda_driver=driver)


@pytest.fixture
def catalog(tmp_path: Path) -> loading.Catalog:
    toolkit = factories.archive_feature(
        "cuda", versions=["11.8.0", "12.4.1", "12.8.0", "13.0.1"], default="12.8"
    )
    toolkit["gpu"] = {"cuda": "{major}.{minor}"}
    torch = factories.archive_feature("torch", versions=["2.7.1"])
    # pip, as pytorch's wheels are: options that reach a pip install get their own folder.
    torch["install"] = [{"method": "pip", "platforms": ["linux"], "packages": ["torch=={version}"]}]
    torch["options"] = {
        "cuda": {
            "type": "string",
            "default": "cpu",
            "enum": ["cpu", "cu118", "cu121", "cu124", "cu126", "cu128", "cu130"],
            "description": "the wheel variant",
        }
    }
    torch["gpu"] = {"cuda": "12.8", "variant_option": "cuda"}
    return factories.catalog_of(tmp_path, toolkit, torch)


def plan(catalog: loading.Catalog, label: str, driver: str | None) -> dict[str, Any]:
    wanted = [requests.parse(label, allow_ranges=True)]
    return resolver.resolve(wanted, catalog, target(driver), store_root="/s").to_data()


@pytest.mark.parametrize(
    ("driver", "version"),
    [(None, "12.8.0"), ("13.0", "13.0.1"), ("13.2", "13.0.1"), ("12.9", "12.8.0"),
     ("12.6", "12.4.1"), ("12.4", "12.4.1"), ("11.8", "11.8.0")],
)  # fmt: skip
def test_an_unversioned_toolkit_is_the_highest_the_driver_runs(
    catalog: loading.Catalog, driver: str | None, version: str
) -> None:
    data = plan(catalog, "feature:cuda", driver)
    assert data["features"][0]["version"] == version
    if driver is not None:
        assert data["warnings"] == []


def test_a_driver_older_than_every_toolkit_keeps_the_default_and_says_why(
    catalog: loading.Catalog,
) -> None:
    with pytest.raises(resolver.ResolutionError) as info:
        plan(catalog, "feature:cuda", "10.2")
    assert "older major version" in info.value.problems[0]


def test_the_driver_rules_for_a_requested_toolkit(catalog: loading.Catalog) -> None:
    # 12.2 driver, 12.4 asked: minor-version compatibility, a warning.
    data = plan(catalog, "feature:cuda@12.4", "12.2")
    assert "minor-version compatibility" in data["warnings"][0]
    # 11.8 driver, 12.x asked: an error at resolution, naming the fix.
    with pytest.raises(resolver.ResolutionError) as info:
        plan(catalog, "feature:cuda@12", "11.8")
    assert "needs a driver for CUDA 12.8" in info.value.problems[0]
    assert "upgrade the driver" in info.value.problems[0]
    # 13.0 driver, 12.4 asked: fine.
    assert plan(catalog, "feature:cuda@12.4", "13.0")["warnings"] == []


@pytest.mark.parametrize(
    ("driver", "build"),
    [(None, "cpu"), ("13.0", "cu130"), ("12.6", "cu126"), ("12.5", "cu124"), ("11.8", "cu118")],
)
def test_the_torch_build_is_the_highest_at_or_below_the_drivers_cuda(
    catalog: loading.Catalog, driver: str | None, build: str
) -> None:
    data = plan(catalog, "feature:torch", driver)
    [feature] = data["features"]
    assert feature["options"]["CUDA"] == build
    if build != "cpu":
        assert data["warnings"] == []
        assert feature["prefix"].startswith("/s/torch/2.7.1/x64-")  # not the cpu build's
    else:
        assert feature["prefix"] == "/s/torch/2.7.1/x64"


def test_an_old_driver_gets_the_cpu_build_with_a_warning(catalog: loading.Catalog) -> None:
    data = plan(catalog, "feature:torch", "11.2")
    assert data["features"][0]["options"]["CUDA"] == "cpu"
    assert "installing the cpu build" in data["warnings"][0]


def test_a_variant_the_request_names_is_kept_and_checked(catalog: loading.Catalog) -> None:
    # Checked against the variant's own CUDA, not the manifest's gpu.cuda (12.8).
    data = plan(catalog, "feature:torch;cuda=cu128", "12.4")
    assert data["features"][0]["options"]["CUDA"] == "cu128"
    assert "minor-version compatibility" in data["warnings"][0]
    assert plan(catalog, "feature:torch;cuda=cu118", "11.8")["warnings"] == []
    assert plan(catalog, "feature:torch;cuda=cpu", "11.8")["warnings"] == []
    assert plan(catalog, "feature:torch;cuda=cpu", None)["warnings"] == []
    with pytest.raises(resolver.ResolutionError) as info:
        plan(catalog, "feature:torch;cuda=cu130", "12.4")
    assert "needs a driver for CUDA 13.0" in info.value.problems[0]


def test_variant_names() -> None:
    assert cuda.variant_cuda("cu118") == (11, 8)
    assert cuda.variant_cuda("cu130") == (13, 0)
    assert cuda.variant_cuda("cpu") is None
    assert cuda.variant_cuda("rocm6.2") is None


def test_a_variant_option_without_cpu_and_cu_values_is_refused(tmp_path: Path) -> None:
    torch = factories.archive_feature("torch", versions=["2.7.1"])
    torch["options"] = {"cuda": {"type": "string", "default": "x", "enum": ["x", "cu124"]}}
    torch["gpu"] = {"cuda": "12.4", "variant_option": "cuda"}
    catalog = factories.catalog_of(tmp_path, torch)
    assert "torch" not in catalog.features
    assert "gpu.variant_option 'cuda' must name a string option" in str(catalog.problems[0])
