"""The rules a manifest must keep beyond its schema, each finding every breach it sees.

Policy: each rule names the fields it reads; the manifest runs every rule whose fields
passed the schema, even when others failed, so one load reports a misspelt key, a bad
version and a method outside the feature's platforms together. A rule adds a finding at
the key path of what is wrong (``install[1].platforms[0]``), never at the manifest as a
whole, and goes on. Findings that would only echo another (a default that names a broken
alias) are left to the rule that owns the cause.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.catalog import findings, indexes, methods, patterns, requests, templates, versions
from agent.kits import environ
from agent.platform import model, packagers

if TYPE_CHECKING:
    from agent.catalog.manifest import Feature

Rule = Callable[["Feature", findings.Findings], None]


def option_env_name(name: str) -> str:
    """The Dev Container Features rule: non-word characters to ``_``, upper case."""
    sanitized = re.sub(r"[^\w_]", "_", name, flags=re.ASCII)
    sanitized = re.sub(r"^[\d_]+", "_", sanitized)
    return sanitized.upper()


def var_keys(feature: Feature) -> set[str]:
    """The template names that ``versions`` entries add (a release tag...)."""
    return {k for v in feature.versions if not isinstance(v, str) for k in v.vars}


def _versions(feature: Feature, found: findings.Findings) -> None:
    seen: dict[str, int] = {}
    for i, version in enumerate(feature.version_list()):
        if version in seen:
            found.add(
                ("versions", i), f"{version!r} is listed twice (also versions[{seen[version]}])"
            )
        else:
            seen[version] = i
    keyed = [
        (i, frozenset(v.vars)) for i, v in enumerate(feature.versions) if not isinstance(v, str)
    ]
    if not keyed:
        return
    first, keys = keyed[0]
    for i, entry in enumerate(feature.versions):
        has = frozenset() if isinstance(entry, str) else frozenset(entry.vars)
        if has != keys:
            found.add(
                ("versions", i),
                "every version entry must define the same vars as versions"
                f"[{first}] ({', '.join(sorted(keys)) or 'none'})",
            )


def _aliases(feature: Feature, found: findings.Findings) -> None:
    known = feature.version_list()
    for alias, target in feature.aliases.items():
        loc = ("aliases", alias)
        if not versions.ALIAS_RE.fullmatch(alias):
            found.add(loc, f"alias {alias!a} must be lower-case letters, digits, '-'")
            continue
        try:
            spec = versions.parse_spec(target, allow_ranges=True)
        except ValueError as exc:
            found.add(loc, f"alias {alias!r}: {exc}")
            continue
        if spec.kind == "alias":
            found.add(loc, f"alias {alias!r} points to another alias {target!r}")
        # The same pre-release rule as resolution, so an alias that loads also resolves.
        elif known and versions.best_match(known, [spec]) is None:
            found.add(loc, f"alias {alias!r} -> {target!r} matches no known version")


def _default(feature: Feature, found: findings.Findings) -> None:
    try:
        default = versions.parse_spec(feature.default, allow_ranges=True)
    except ValueError as exc:
        found.add(("default",), str(exc))
        return
    if default.kind == "alias":
        # An alias of the feature is checked where it is defined; "latest" always resolves.
        if default.text not in feature.aliases and default.text != "latest":
            found.add(("default",), f"default {feature.default!r} is not an alias of this feature")
        return
    known = feature.version_list()
    if known and versions.best_match(known, [default]) is None:
        found.add(("default",), f"default {feature.default!r} matches no known version")


def _options(feature: Feature, found: findings.Findings) -> None:
    env_names: dict[str, str] = {}
    for name in feature.options:
        loc = ("options", name)
        if not requests.OPTION_RE.fullmatch(name):
            found.add(loc, f"option name {name!a}: letters, digits and '_' only")
            continue
        env_name = option_env_name(name)
        why = environ.reserved(env_name)
        if why is not None:
            found.add(
                loc,
                f"option {name!r} would set the variable {env_name}, which options may not "
                f"set ({why}); rename the option",
            )
        elif env_name in env_names:
            found.add(
                loc,
                f"options {env_names[env_name]!r} and {name!r} both become {env_name}; rename one",
            )
        env_names.setdefault(env_name, name)


def _method_platforms(feature: Feature, found: findings.Findings) -> None:
    for i, method in enumerate(feature.install):
        for j, pattern in enumerate(method.platforms):
            if not any(patterns.covers(p, pattern) for p in feature.platforms):
                found.add(
                    ("install", i, "platforms", j),
                    f"{method.method} method platform {pattern!r} is not among the feature's "
                    f"platforms ({', '.join(feature.platforms)})",
                )


def _template(found: findings.Findings, loc: findings.Loc, text: str, allowed: set[str]) -> None:
    try:
        templates.check(text, allowed)
    except templates.TemplateError as exc:
        found.add(loc, str(exc))


def _missing_sha256(feature: Feature, method: methods.ArchiveMethod) -> list[str]:
    missing = []
    for version in feature.version_list():
        table = method.sha256.get(version, {})
        gaps = [p for p in method.platforms if not any(patterns.covers(t, p) for t in table)]
        if gaps:
            missing.append(f"{version} on {', '.join(gaps)}")
    return missing


def _selectors(
    feature: Feature,
    method: methods.Method,
    known: list[str],
    at: Callable[..., findings.Loc],
    found: findings.Findings,
) -> None:
    """A method's ``when`` names real options and values; its ``versions`` are known."""
    for name, value in method.when.items():
        option = feature.options.get(name)
        if option is None:
            found.add(
                at("when", name),
                f"when names no option of this feature: {name!r}; its options: "
                f"{', '.join(sorted(feature.options)) or 'none'}",
            )
            continue
        try:
            option.coerce(name, value)
        except ValueError as exc:
            found.add(at("when", name), str(exc))
    unknown = [v for v in method.versions if v not in known]
    if unknown:
        found.add(
            at("versions"),
            f"versions not in the feature's list: {', '.join(unknown)}; a method's versions "
            "are a subset of the feature's",
        )


def _methods(feature: Feature, found: findings.Findings) -> None:
    allowed = set(templates.BUILTIN) | var_keys(feature)
    known = feature.version_list()
    for i, method in enumerate(feature.install):
        at: Callable[..., findings.Loc] = lambda *rest, i=i: ("install", i, *rest)  # noqa: E731
        _selectors(feature, method, known, at, found)
        if isinstance(method, methods.SystemMethod):
            for manager, names in method.packages.items():
                for k, name in enumerate(names):
                    try:
                        packagers.check_package_name(manager, name)
                    except model.PlatformError as exc:
                        found.add(at("packages", manager, k), str(exc))
        elif isinstance(method, methods.ArchiveMethod):
            verified = method.checksum_url or method.components
            missing = _missing_sha256(feature, method) if not verified else []
            if missing:
                shown = "; ".join(missing[:4]) + (
                    f"; and {len(missing) - 4} more" if len(missing) > 4 else ""
                )
                found.add(
                    at("sha256"), f"no sha256 for {shown}, and no checksum_url to fall back on"
                )
            url_allowed = allowed | ({"target"} if method.targets else set())
            _template(found, at("url"), method.url, url_allowed)
            if method.checksum_url:
                _template(found, at("checksum_url"), method.checksum_url, url_allowed)
            if method.components:
                loc = at("components", "manifest_url")
                _template(found, loc, method.components.manifest_url, url_allowed)
            for k, folder in enumerate(method.merge):
                _template(found, at("merge", k), folder, url_allowed)
            for version in method.sha256:
                if version not in known:
                    found.add(
                        at("sha256", version), f"sha256 given for unknown version {version!r}"
                    )
        elif isinstance(method, methods.PipMethod | methods.NpmMethod):
            for k, package in enumerate(method.packages):
                _template(found, at("packages", k), package, allowed)
            index = method.index if isinstance(method, methods.PipMethod) else None
            if index is not None and index.path:
                _template(found, at("index", "path"), index.path, allowed | set(feature.options))


def _relocatable(feature: Feature, found: findings.Findings) -> None:
    movable = [i for i, m in enumerate(feature.install) if m.method != "system"]
    if movable and not feature.versions:
        found.add(
            ("install", movable[0]),
            "a feature with archive, pip, npm or script methods needs versions",
        )
    if not movable and feature.versions:
        found.add(
            ("versions",), "a system-only feature has the distribution's version; drop versions"
        )


def _env_and_check(feature: Feature, found: findings.Findings) -> None:
    base = set(templates.BUILTIN) | {"prefix"} | var_keys(feature)
    places: list[tuple[findings.Loc, Any]] = [((), feature)]
    places += [(("install", i), m) for i, m in enumerate(feature.install)]
    for loc, owner in places:
        if owner.env:
            for name, value in owner.env.vars.items():
                _template(found, (*loc, "env", "vars", name), value, base)
        check = owner.check
        if check is None:
            continue
        where = (*loc, "check", "expect")
        if not feature.versioned and "version" in templates.fields(check.expect):
            found.add(
                where,
                "check.expect uses {version}, but a system package's version is the distribution's",
            )
            continue
        _template(found, where, check.expect, base)


def _gpu(feature: Feature, found: findings.Findings) -> None:
    if feature.gpu is None:
        return
    name = feature.gpu.variant_option
    if name is not None:
        option = feature.options.get(name)
        enum = option.enum if option is not None and option.type == "string" else None
        if (
            not enum
            or "cpu" not in enum
            or any(v != "cpu" and not re.fullmatch(r"cu(?a:\d{2,3})", v) for v in enum)
        ):
            found.add(
                ("gpu", "variant_option"),
                f"gpu.variant_option {name!r} must name a string option whose enum is cpu "
                "and cuXY variants (cu118, cu124, ...)",
            )
    known = feature.version_list()
    cuda = feature.gpu.cuda
    allowed = set(templates.BUILTIN) if known else {"os", "arch", "libc"}
    try:
        templates.check(cuda, allowed)
    except templates.TemplateError as exc:
        found.add(("gpu", "cuda"), str(exc))
        return
    for version in known or ["0"]:
        sample = {
            **templates.version_fields(version),
            "os": "linux",
            "arch": "x64",
            "libc": "glibc",
        }
        rendered = templates.render(cuda, sample)
        if not re.fullmatch(r"(?a:\d+\.\d+(\.\d+)?)", rendered):
            found.add(
                ("gpu", "cuda"),
                f"gpu.cuda {cuda!r} gives {rendered!r} for {version}; expected a CUDA version "
                "such as 12.4",
            )
            return


def _version_index(feature: Feature, found: findings.Findings) -> None:
    index = feature.version_index
    if index is None:
        return
    if not feature.versions:
        found.add(("version_index",), "a version index needs versions: the feature has none")
    if not index.url.startswith("https://"):
        found.add(("version_index", "url"), f"{index.url!r} is not an https URL")
    given = indexes.VARS.get(index.kind, frozenset())
    with_vars = [
        v.version for v in feature.versions if not isinstance(v, str) and set(v.vars) - given
    ]
    if with_vars:
        # A version only the index lists has only the vars the index gives: its URLs
        # could not render.
        found.add(
            ("version_index",),
            f"versions {', '.join(with_vars)} carry vars that a {index.kind} index does not "
            f"give ({', '.join(sorted(given)) or 'it gives none'}): a feature with a version "
            "index needs versions with no other vars",
        )
    # A version only the index lists has no pinned hash: each archive method must verify
    # against the upstream's checksum file (or a components' manifest), not a pin.
    pinned = [
        str(i)
        for i, m in enumerate(feature.install)
        if isinstance(m, methods.ArchiveMethod)
        and not m.versions
        and m.components is None
        and not m.checksum_url
    ]
    if pinned:
        found.add(
            ("version_index",),
            f"install[{', '.join(pinned)}] pins a sha256 per version, which a version only "
            "the index lists lacks: give those methods a checksum_url, or limit them to "
            "their versions",
        )


RULES: tuple[tuple[frozenset[str], Rule], ...] = (
    (frozenset({"versions"}), _versions),
    (frozenset({"aliases", "versions"}), _aliases),
    (frozenset({"default", "aliases", "versions"}), _default),
    (frozenset({"options"}), _options),
    (frozenset({"install", "platforms"}), _method_platforms),
    (frozenset({"install", "versions"}), _methods),
    (frozenset({"install", "versions"}), _relocatable),
    (frozenset({"env", "check", "install", "versions"}), _env_and_check),
    (frozenset({"gpu", "versions", "options"}), _gpu),
    (frozenset({"version_index", "versions", "install"}), _version_index),
)
"""Each rule with the fields it reads: it runs when all of them passed the schema."""
