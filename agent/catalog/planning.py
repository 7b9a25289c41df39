"""One step of a plan: a chosen feature, version and method made into install actions,
with the prefix it installs into, what it exports and how it is checked.

Policy: pure, like the resolver that calls it. The prefix is the tool cache's
``<name>/<version>/<arch>``; musl builds and installs whose options reach the install
get folders of their own. A lock file's entry for the step (by feature, version and
:func:`lock_key`) pins its artifacts (:func:`agent.catalog.steps.build`).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.catalog import (
    indexes,
    loading,
    lockfile,
    manifest,
    methods,
    requests,
    steps,
    templates,
)
from agent.platform import model
from agent.platform import plans as wire


@dataclass(frozen=True)
class Asked:
    """What the requests asked of one feature."""

    request: requests.Request | None
    variant: str | None
    """The build variant CUDA-aware resolution chose (agent.catalog.cuda)."""
    requested_by: Sequence[str]


def step(
    catalog: loading.Catalog,
    ident: str,
    version: str,
    method: methods.Method,
    want: Asked,
    target: model.Platform,
    number: int,
    store_root: str,
    python: tuple[str, str] | None = None,
    lock: lockfile.Lock | None = None,
    warnings: list[str] | None = None,
    index_vars: Mapping[str, str] | None = None,
    lock_only: bool = False,
    lock_artifacts: bool = True,
) -> wire.Step:
    """The plan step that installs ``ident`` at ``version`` with ``method`` for ``target``
    in round ``number``, pinned by ``lock``'s entry for it when there is one;
    ``index_vars`` are the template vars a version index (or the lock, writing down an
    index's) gave ``version``: only the names the feature's index kind gives are taken,
    and the catalog's own, for a version it lists, win. ``lock_only``: the catalog does
    not list ``version``, nor did an index: the lock's word alone (see the module)."""
    feature = catalog.features[ident]
    option_env = _options(feature, want.request, want.variant)
    entry = None
    if lock is not None and lock_artifacts and version in lock.versions(ident):
        key = _lock_key(feature, option_env, target)
        entry = lock.entry(ident, version, key)
        if entry is None and warnings is not None and isinstance(method, methods.ArchiveMethod):
            warnings.append(
                f"{ident} {version} is locked, but not for {key}: its artifacts are verified "
                "as the catalog says, not by the lock; run runner-agent features lock "
                f"--platform {target.triple} to add it"
            )
    values = {
        **(templates.version_fields(version) if version != "system" else {"version": version}),
        "os": target.os,
        "arch": target.arch,
        "libc": target.libc or "",
        **_index_vars(feature, index_vars),
        **feature.version_vars(version),
    }
    env = method.env or feature.env
    check = method.check or feature.check
    if isinstance(method, methods.SystemMethod):
        fill = {**values, "prefix": ""}
        return {
            "id": ident,
            "name": feature.name,
            "version": version,
            "method": method.method,
            "round": number,
            "prefix": None,
            "toolcache_name": feature.toolcache_name,
            "requested_by": sorted(set(want.requested_by)),
            "options": option_env,
            "actions": steps.system(method, target),
            "env": {"path": [], "vars": _vars(env, fill)},
            "check": _check(check, fill),
        }
    # musl builds get a folder of their own: an Alpine job and a glibc job share the
    # volume, and neither can run the other's binaries (setup-* looks up <arch> only,
    # which is the glibc build).
    leaf: str = target.arch if target.libc in (None, "glibc") else f"{target.arch}-{target.libc}"
    if option_env != _options(feature, None) and isinstance(
        method, methods.PipMethod | methods.NpmMethod | methods.ScriptMethod
    ):
        # Options that reach the install change what is installed: such an install
        # gets its own folder, which setup-* (looking for <arch>) never picks up.
        digest = hashlib.sha256(json.dumps(option_env, sort_keys=True).encode()).hexdigest()
        leaf = f"{target.arch}-{digest[:12]}"
    if lock_only and entry is not None and entry.artifacts and not _verified_upstream(method):
        # Nothing but the lock vouches for these bytes (a pin the catalog dropped): an
        # entry of their own, named by their hash, which no other step ever finds.
        leaf += f"-lock-{entry.artifacts[0].sha256[:12]}"
    prefix = posixpath.join(store_root, feature.toolcache_name or feature.id, version, leaf)
    actions = steps.build(
        feature,
        method,
        version=version,
        target=target,
        prefix=prefix,
        values=values,
        option_env=option_env,
        folder=str(catalog.folders[ident]),
        python=python,
        locked=entry,
    )
    fill = {**values, "prefix": prefix}
    return {
        "id": ident,
        "name": feature.name,
        "version": version,
        "method": method.method,
        "round": number,
        "prefix": prefix,
        "toolcache_name": feature.toolcache_name,
        "requested_by": sorted(set(want.requested_by)),
        "options": option_env,
        "actions": actions,
        "env": {
            "path": [posixpath.normpath(posixpath.join(prefix, p)) for p in env.path],
            "vars": _vars(env, fill),
        },
        "check": _check(check, fill),
    }


def _verified_upstream(method: methods.Method) -> bool:
    """Whether the upstream's checksum file (or components' manifest) verifies what
    ``method`` downloads for any version, lock or not."""
    return isinstance(method, methods.ArchiveMethod) and bool(
        method.checksum_url or method.components is not None
    )


def _index_vars(feature: manifest.Feature, given: Mapping[str, str] | None) -> dict[str, str]:
    """The vars an index (or the lock) gave, limited to the names the feature's index
    kind gives: no other name (``version``, ``os``...) can be replaced."""
    if not given or feature.version_index is None:
        return {}
    allowed = indexes.VARS.get(feature.version_index.kind, frozenset())
    return {k: v for k, v in given.items() if k in allowed}


def lock_key(catalog: loading.Catalog, step: wire.Step, target: model.Platform) -> str:
    """The lock's platform key for ``step`` of a plan for ``target``."""
    return _lock_key(catalog.features[step["id"]], step["options"], target)


def _lock_key(
    feature: manifest.Feature, option_env: Mapping[str, str], target: model.Platform
) -> str:
    defaults = _options(feature, None)
    changed = {k: v for k, v in option_env.items() if defaults.get(k) != v}
    return lockfile.platform_key(target.triple, changed)


def _vars(env: methods.Env, fill: dict[str, str]) -> dict[str, str]:
    return {k: templates.render(v, fill) for k, v in env.vars.items()}


def _check(check: methods.Check | None, fill: dict[str, str]) -> wire.Check | None:
    if check is None:
        return None
    return {"argv": list(check.command), "expect": templates.render(check.expect, fill)}


def _options(
    feature: manifest.Feature, request: requests.Request | None, variant: str | None = None
) -> dict[str, str]:
    chosen = {name: opt.default_text() for name, opt in feature.options.items()}
    if variant is not None and feature.gpu is not None and feature.gpu.variant_option:
        chosen[feature.gpu.variant_option] = variant
    for name, value in request.options if request else ():
        option = feature.options.get(name)
        if option is None:
            known = ", ".join(sorted(feature.options)) or "none"
            raise ValueError(f"no option {name!r}; its options: {known}")
        chosen[name] = option.coerce(name, value)
    return {manifest.option_env_name(k): v for k, v in sorted(chosen.items())}
