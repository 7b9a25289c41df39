"""CUDA-aware resolution: what the target's NVIDIA driver can run decides a GPU
feature's version and build variant.

Policy (the driver's CUDA version is ``nvmlSystemGetCudaDriverVersion``: 13000 is 13.0;
the GPU engine puts it in the local platform as ``cuda_driver``):
- a newer driver runs older toolkits. A feature that needs a CUDA major above the
  driver's is an error at resolution (the job's start), not at install; a minor above
  the driver's, within its major, is a warning (minor-version compatibility);
- with no version asked, a GPU feature takes the highest catalog version whose CUDA the
  driver runs without that warning (within what its dependents require), else the
  highest of the driver's own major (which runs with the warning); without a driver
  (no GPU: compiling needs none) the catalog default stands;
- a feature whose ``gpu.variant_option`` names a string option of build variants
  (``cpu``, ``cu118``, ``cu124``, ...) gets, unless the request set that option, the
  highest ``cuXY[Z]`` variant at or below the driver's CUDA, and ``cpu`` without a GPU;
  its CUDA need is then the variant's, and ``cpu`` needs none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from packaging.version import Version

from agent.catalog import manifest, requests, templates, versions
from agent.platform import model

_VARIANT = re.compile(r"cu(?a:(\d+)(\d))")
"""cu118 is CUDA 11.8, cu124 12.4, cu130 13.0: the last digit is the minor."""


def variant_cuda(variant: str) -> tuple[int, int] | None:
    """The CUDA version a ``cuXYZ`` variant is built for; ``None`` for any other."""
    match = _VARIANT.fullmatch(variant)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _driver(target: model.Platform) -> tuple[int, int] | None:
    if target.cuda_driver is None:
        return None
    release = Version(target.cuda_driver).release
    return release[0], (release[1] if len(release) > 1 else 0)


def needed(feature: manifest.Feature, version: str, target: model.Platform) -> str:
    """The CUDA version ``feature`` at ``version`` is built for (its ``gpu.cuda``)."""
    assert feature.gpu is not None
    values = templates.version_fields(version) if version != "system" else {}
    return templates.render(
        feature.gpu.cuda,
        {**values, "os": target.os, "arch": target.arch, "libc": target.libc or ""},
    )


def _major(need: str) -> int:
    return Version(need).release[0]


def _runs(need: str, driver: tuple[int, int]) -> bool:
    release = (*Version(need).release, 0)
    return (release[0], release[1]) <= driver


def default_version(
    feature: manifest.Feature,
    known: Sequence[str],
    default: versions.Spec | None,
    specs: Sequence[versions.Spec],
    target: model.Platform,
) -> str | None:
    """The version a GPU feature takes when nobody asked for one: the highest the driver
    runs, or ``None`` to leave the manifest's default (no driver, no GPU runtime, or the
    default already runs)."""
    driver = _driver(target)
    if feature.gpu is None or not feature.gpu.runtime or driver is None:
        return None
    if feature.gpu.variant_option is not None:
        return None  # the variant, not the version, follows the driver
    clean = [v for v in known if _runs(needed(feature, v, target), driver)]
    best = versions.best_match(clean, list(specs)) if clean else None
    if best is None:
        # Nothing that fits the specs runs cleanly (a 12.2 driver and toolkits 12.6+, or a
        # 12.6 driver and a dependent wanting >=12.8): a release of the driver's own major
        # still runs through minor-version compatibility (a warning), where a higher major
        # (the plain latest) cannot run at all.
        same = [v for v in known if _major(needed(feature, v, target)) == driver[0]]
        best = versions.best_match(same, list(specs)) if same else None
    return best


def variant(
    feature: manifest.Feature, request: requests.Request | None, target: model.Platform
) -> tuple[str, bool] | None:
    """The build variant to install and whether the request named it: the request's,
    else the one the driver runs best (``None``: the feature has no variants)."""
    gpu = feature.gpu
    if gpu is None or gpu.variant_option is None:
        return None
    if request is not None:
        for name, value in request.options:
            if name == gpu.variant_option:
                return str(value), True  # the request's own: checked against the driver
    option = feature.options[gpu.variant_option]
    choices = option.enum or ()
    driver = _driver(target)
    if driver is None:
        return "cpu", False
    builds = [(cuda, v) for v in choices if (cuda := variant_cuda(v)) is not None]
    fitting = [b for b in builds if b[0] <= driver]
    return (max(fitting)[1] if fitting else "cpu"), False


def check(
    feature: manifest.Feature,
    version: str,
    chosen_variant: tuple[str, bool] | None,
    target: model.Platform,
    problems: list[str],
    warnings: list[str],
) -> None:
    """Whether the target's driver runs ``feature`` (see the module)."""
    gpu = feature.gpu
    assert gpu is not None
    if not gpu.runtime:
        return
    if gpu.variant_option is not None and chosen_variant is not None:
        build, asked = chosen_variant
        if build == "cpu":
            if target.cuda_driver is not None and not asked:
                warnings.append(
                    f"{feature.id} {version}: no {gpu.variant_option} build runs on the "
                    f"driver's CUDA {target.cuda_driver}; installing the cpu build"
                )
            return
        cuda = variant_cuda(build)
        need = f"{cuda[0]}.{cuda[1]}" if cuda else needed(feature, version, target)
        what = f"{feature.id} {version} ({gpu.variant_option} {build})"
    else:
        need = needed(feature, version, target)
        what = f"{feature.id} {version}"
    if target.cuda_driver is None:
        warnings.append(
            f"{what} needs an NVIDIA GPU with a driver for CUDA {need} at run time; the "
            "target declares none (installing anyway: compiling needs no GPU)"
        )
        return
    want, have = (*Version(need).release, 0), (*Version(target.cuda_driver).release, 0)
    if have[0] < want[0]:
        problems.append(
            f"{what} needs a driver for CUDA {need}; the target's driver supports CUDA "
            f"{target.cuda_driver} (an older major version): upgrade the driver or pick an "
            f"older {feature.id}"
        )
    elif have[:2] < want[:2]:
        warnings.append(
            f"{what} is built for CUDA {need}; the driver supports {target.cuda_driver}: this "
            "works through CUDA minor-version compatibility, except for features that need "
            "the newer driver"
        )
