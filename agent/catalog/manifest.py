"""The feature manifest: ``features/<id>/feature.yaml``.

Modelled on Dev Container Features (id, name, options that reach install steps as
environment variables, hard ``requires`` and soft ``installs_after``), plus what a
runner needs: known versions and aliases, platforms, install methods per platform, GPU
needs, the environment to export and a check to run after install.

Policy: a manifest is validated whole when the catalog loads: every template
placeholder, checksum, URL, option default and version is checked then, so a plan built
from a loaded catalog cannot fail for a reason the manifest could have shown.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ByteSize, ConfigDict, Field, model_validator

from agent.catalog import methods, patterns, requests, templates, versions
from agent.kits import environ
from agent.platform import model, packagers

_TOOLCACHE_RE = re.compile(r"(?a:[A-Za-z0-9][A-Za-z0-9._-]{0,63})")


def _check_id(value: str) -> str:
    if not requests.ID_RE.fullmatch(value):
        raise ValueError(f"{value!a} is not a feature id: lower-case letters, digits, '-'")
    return value


def _check_version(value: str) -> str:
    if not versions.VERSION_RE.fullmatch(value):
        raise ValueError(f"{value!a} is not a concrete version such as 20.11.1")
    versions.parse_version(value)
    return value


def _check_requirement(value: str) -> str:
    parse_requirement(value)
    return value


def _check_toolcache(value: str) -> str:
    if not _TOOLCACHE_RE.fullmatch(value):
        raise ValueError(f"{value!a} is not a tool cache name such as node or Python")
    return value


_Spec = versions.Spec  # the Feature model has a field named "versions"


FeatureId = Annotated[str, AfterValidator(_check_id)]
ConcreteVersion = Annotated[str, AfterValidator(_check_version)]
Requirement = Annotated[str, AfterValidator(_check_requirement)]
EnvName = methods.EnvName


def parse_requirement(text: str) -> requests.Request:
    """``python``, ``python>=3.10``, ``python@3.12`` or ``python>=3.10,<3.13``."""
    match = re.fullmatch(r"(?a:([a-z0-9][a-z0-9-]*)\s*(@?)(.*))", text.strip())
    if not match:
        raise ValueError(f"{text!a} is not a requirement such as python>=3.10")
    ident, _, spec = match.groups()
    try:
        return requests.parse(
            ident + (f"@{spec}" if spec else ""), allow_ranges=True, source="requires"
        )
    except requests.RequestError as exc:
        raise ValueError(str(exc)) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VersionEntry(_Strict):
    """A version with the extra template values its URLs need (e.g. a release tag)."""

    version: ConcreteVersion
    vars: dict[EnvName, methods.Plain] = Field(default_factory=dict)


class Option(_Strict):
    """A typed option, as in Dev Container Features."""

    type: Literal["boolean", "string"]
    default: bool | str
    description: str = ""
    enum: tuple[str, ...] | None = None
    proposals: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Option:
        if self.type == "boolean":
            if not isinstance(self.default, bool):
                raise ValueError(
                    f"a boolean option needs a true/false default, not {self.default!r}"
                )
            if self.enum or self.proposals:
                raise ValueError("enum and proposals are for string options")
        else:
            if not isinstance(self.default, str):
                raise ValueError(f"a string option needs a string default, not {self.default!r}")
            if self.enum is not None and self.default not in self.enum:
                raise ValueError(
                    f"default {self.default!r} is not one of the enum: {', '.join(self.enum)}"
                )
        return self

    def coerce(self, name: str, value: str) -> str:
        """Validate a requested value; return it as the environment will see it."""
        if self.type == "boolean":
            if value.lower() not in ("true", "false"):
                raise ValueError(f"option {name}={value!r}: expected true or false")
            return value.lower()
        if self.enum is not None and value not in self.enum:
            raise ValueError(f"option {name}={value!r}: expected one of {', '.join(self.enum)}")
        return value

    def default_text(self) -> str:
        """The default as the environment sees it."""
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return self.default


def option_env_name(name: str) -> str:
    """The Dev Container Features rule: non-word characters to ``_``, upper case."""
    sanitized = re.sub(r"[^\w_]", "_", name, flags=re.ASCII)
    sanitized = re.sub(r"^[\d_]+", "_", sanitized)
    return sanitized.upper()


class Gpu(_Strict):
    """What the feature needs from an NVIDIA GPU at run time (never at install time)."""

    runtime: bool = Field(default=True, description="Needs a GPU when the job runs.")
    cuda: str = Field(
        description="Driver CUDA version needed, templated, e.g. '{major}.{minor}' or '12.1'."
    )


class Feature(_Strict):
    """One feature manifest."""

    id: FeatureId
    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    documentation_url: str | None = None
    versions: tuple[ConcreteVersion | VersionEntry, ...] = ()
    aliases: dict[str, str] = Field(default_factory=dict)
    default: str = "latest"
    options: dict[str, Option] = Field(default_factory=dict)
    requires: tuple[Requirement, ...] = ()
    installs_after: tuple[FeatureId, ...] = ()
    platforms: tuple[patterns.Pattern, ...] = Field(min_length=1)
    gpu: Gpu | None = None
    install: tuple[methods.Method, ...] = Field(min_length=1)
    env: methods.Env = Field(default_factory=methods.Env)
    check: methods.Check | None = None
    toolcache_name: Annotated[str, AfterValidator(_check_toolcache)] | None = None
    max_entry_bytes: ByteSize | None = Field(
        default=None,
        ge=1024**2,
        le=1024**5,
        description=(
            "This feature's own limit on what one install step may stage (e.g. 64GiB for a "
            "CUDA toolkit), instead of installer.max_entry_bytes."
        ),
    )
    network: Literal["none"] | None = Field(
        default=None,
        description=(
            "none: the install script brings its own files and needs no network; it runs "
            "with loopback only, whatever installer.script_network says."
        ),
    )

    # --- derived -----------------------------------------------------------------------

    def version_list(self) -> list[str]:
        """The known versions, as strings."""
        return [v if isinstance(v, str) else v.version for v in self.versions]

    def version_vars(self, version: str) -> dict[str, str]:
        """The extra template values of ``version``."""
        for entry in self.versions:
            if isinstance(entry, VersionEntry) and entry.version == version:
                return dict(entry.vars)
        return {}

    @property
    def versioned(self) -> bool:
        """Whether the feature has versions to choose (system-only features do not)."""
        return bool(self.versions)

    def expand(self, spec: _Spec | None) -> _Spec | None:
        """Replace an alias (or no spec: the default) by what it stands for."""
        if spec is None:
            spec = versions.parse_spec(self.default, allow_ranges=True)
        if spec.kind != "alias":
            return spec
        target = self.aliases.get(spec.text)
        if target is None:
            if spec.text == "latest":
                return None  # the highest final release
            known = ", ".join(sorted({*self.aliases, "latest"}))
            raise versions.VersionSpecError(
                f"{self.id} has no version alias {spec.text!r}; known: {known}"
            )
        return versions.parse_spec(target, allow_ranges=True)

    # --- validation --------------------------------------------------------------------

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        known = self.version_list()
        if len(set(known)) != len(known):
            raise ValueError("versions lists a version twice")
        var_keys = {frozenset(v.vars) for v in self.versions if isinstance(v, VersionEntry)}
        if len(var_keys) > 1 or (var_keys and any(isinstance(v, str) for v in self.versions)):
            raise ValueError("every version entry must define the same vars")
        for alias, target in self.aliases.items():
            if not versions.ALIAS_RE.fullmatch(alias):
                raise ValueError(f"alias {alias!a} must be lower-case letters, digits, '-'")
            spec = versions.parse_spec(target, allow_ranges=True)
            if spec.kind == "alias":
                raise ValueError(f"alias {alias!r} points to another alias {target!r}")
            # The same pre-release rule as resolution, so an alias that loads also resolves.
            if known and versions.best_match(known, [spec]) is None:
                raise ValueError(f"alias {alias!r} -> {target!r} matches no known version")
        default = versions.parse_spec(self.default, allow_ranges=True)
        if (
            default.kind == "alias"
            and default.text not in self.aliases
            and default.text != "latest"
        ):
            raise ValueError(f"default {self.default!r} is not an alias of this feature")
        expanded = self.expand(None)
        if known and expanded is not None and versions.best_match(known, [expanded]) is None:
            raise ValueError(f"default {self.default!r} matches no known version")
        env_names: dict[str, str] = {}
        for name in self.options:
            if not requests.OPTION_RE.fullmatch(name):
                raise ValueError(f"option name {name!a}: letters, digits and '_' only")
            env_name = option_env_name(name)
            why = environ.reserved(env_name)
            if why is not None:
                raise ValueError(
                    f"option {name!r} would set the variable {env_name}, which options may "
                    f"not set ({why}); rename the option"
                )
            if env_name in env_names:
                raise ValueError(
                    f"options {env_names[env_name]!r} and {name!r} both become {env_name}; "
                    "rename one"
                )
            env_names[env_name] = name
        for method in self.install:
            for pattern in method.platforms:
                if not any(patterns.covers(p, pattern) for p in self.platforms):
                    raise ValueError(
                        f"{method.method} method platform {pattern!r} is not among the "
                        f"feature's platforms ({', '.join(self.platforms)})"
                    )
            self._check_method(method, var_keys)
        relocatable = any(m.method != "system" for m in self.install)
        if relocatable and not known:
            raise ValueError("a feature with archive, pip, npm or script methods needs versions")
        if not relocatable and known:
            raise ValueError("a system-only feature has the distribution's version; drop versions")
        base = templates.BUILTIN | {"prefix"} | {k for keys in var_keys for k in keys}
        envs = [("", self.env, self.check)] + [
            (f"{m.method} method ", m.env, m.check) for m in self.install
        ]
        for where, env, check in envs:
            for name, value in env.vars.items() if env else ():
                templates.check(value, base, where=f"{where}env.vars.{name}")
            if check:
                if not self.versioned and "version" in templates.fields(check.expect):
                    raise ValueError(
                        f"{where}check.expect uses {{version}}, but a system package's version "
                        "is the distribution's"
                    )
                templates.check(check.expect, base, where=f"{where}check.expect")
        if self.gpu:
            self._check_gpu(self.gpu, known)
        return self

    def _check_gpu(self, gpu: Gpu, known: list[str]) -> None:
        allowed = templates.BUILTIN if known else {"os", "arch", "libc"}
        templates.check(gpu.cuda, allowed, where="gpu.cuda")
        for version in known or ["0"]:
            sample = {
                **templates.version_fields(version),
                "os": "linux",
                "arch": "x64",
                "libc": "glibc",
            }
            rendered = templates.render(gpu.cuda, sample)
            if not re.fullmatch(r"(?a:\d+\.\d+(\.\d+)?)", rendered):
                raise ValueError(
                    f"gpu.cuda {gpu.cuda!r} gives {rendered!r} for {version}; expected a CUDA "
                    "version such as 12.4"
                )

    def _check_method(self, method: Any, var_keys: set[frozenset[str]]) -> None:
        allowed = templates.BUILTIN | {k for keys in var_keys for k in keys}
        where = f"{method.method} method"
        if isinstance(method, methods.SystemMethod):
            for manager, names in method.packages.items():
                for name in names:
                    try:
                        packagers.check_package_name(manager, name)
                    except model.PlatformError as exc:
                        raise ValueError(str(exc)) from None
        if isinstance(method, methods.ArchiveMethod):
            if not method.checksum_url:
                for version in self.version_list():
                    table = method.sha256.get(version, {})
                    for pattern in method.platforms:
                        if not any(patterns.covers(p, pattern) for p in table):
                            raise ValueError(
                                f"{where}: no sha256 for {version} on {pattern} and no "
                                "checksum_url to fall back on"
                            )
            url_allowed = allowed | ({"target"} if method.targets else set())
            templates.check(method.url, url_allowed, where=f"{where} url")
            if method.checksum_url:
                templates.check(method.checksum_url, url_allowed, where=f"{where} checksum_url")
            for version in method.sha256:
                if version not in self.version_list():
                    raise ValueError(f"{where}: sha256 given for unknown version {version!r}")
        elif isinstance(method, methods.PipMethod | methods.NpmMethod):
            for package in method.packages:
                templates.check(package, allowed, where=f"{where} package")
