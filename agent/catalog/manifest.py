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

import functools
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from agent.catalog import findings, indexes, methods, patterns, requests, rules, values, versions
from agent.config import problems

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
EnvName = values.EnvName


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
    vars: dict[EnvName, values.Plain] = Field(default_factory=dict)


class Option(_Strict):
    """A typed option, as in Dev Container Features."""

    type: Literal["boolean", "string"]
    default: bool | str
    description: str = ""
    enum: tuple[str, ...] | None = None
    proposals: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Option:
        found = findings.Findings()
        if self.type == "boolean":
            if not isinstance(self.default, bool):
                found.add(
                    ("default",),
                    f"a boolean option needs a true/false default, not {self.default!r}",
                )
            for key in ("enum", "proposals"):
                if getattr(self, key):
                    found.add((key,), "enum and proposals are for string options")
        else:
            if not isinstance(self.default, str):
                found.add(
                    ("default",), f"a string option needs a string default, not {self.default!r}"
                )
            elif self.enum is not None and self.default not in self.enum:
                found.add(
                    ("default",),
                    f"default {self.default!r} is not one of the enum: {', '.join(self.enum)}",
                )
        found.raise_if_any(type(self).__name__)
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


option_env_name = rules.option_env_name


class Gpu(_Strict):
    """What the feature needs from an NVIDIA GPU at run time (never at install time)."""

    runtime: bool = Field(default=True, description="Needs a GPU when the job runs.")
    cuda: str = Field(
        description="Driver CUDA version needed, templated, e.g. '{major}.{minor}' or '12.1'."
    )
    variant_option: str | None = Field(
        default=None,
        description=(
            "A string option whose enum lists build variants (cpu, cu118, cu124, ...): "
            "unless a request sets it, the resolver picks the highest cuXY variant at or "
            "below the driver's CUDA, and cpu without a GPU (pytorch's wheels)."
        ),
    )


class VersionIndex(_Strict):
    """Where the upstream lists its releases, for versions the catalog does not list
    (``node@19``). Checksums still come from the install method's checksum file, so only
    a feature whose methods need no pinned hash per version may name one."""

    kind: indexes.IndexKind = Field(
        description=(
            "The payload's form: node (dist/index.json), go (dl/?mode=json), pypi (the "
            "JSON API), npm (a packument), github-releases (the REST releases list) or "
            "python-build-standalone (its REST releases list: versions from the asset "
            "names, each with its release tag as the var release)."
        )
    )
    url: values.Line = Field(description="The https URL of the index, fetched through the mirrors.")
    tag_prefix: values.Plain = Field(
        default="v", description="github-releases: what the tags carry before the version."
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
    version_index: VersionIndex | None = None
    writable_homes: dict[EnvName, tuple[values.RelativePath, ...]] = Field(
        default_factory=dict,
        max_length=16,
        description=(
            "Variables that name a home the tool writes into after install (npm i -g: "
            "NPM_CONFIG_PREFIX; gem: GEM_HOME; cargo: CARGO_HOME), each with the folders "
            "below it to put on PATH (e.g. [bin]). The job hook points each at a pod-local "
            "folder, because the entry itself is read-only in the runner."
        ),
    )
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

    @model_validator(mode="wrap")
    @classmethod
    def _whole(cls, data: Any, handler: ModelWrapValidatorHandler[Feature]) -> Feature:
        # Every problem at once: when the schema fails, the rules still run over the
        # fields that passed it, and both come out as one error.
        try:
            feature = handler(data)
        except ValidationError as exc:
            if not isinstance(data, dict):
                raise
            partial, valid = _partial(data, exc)
            found = findings.Findings()
            for needs, rule in rules.RULES:
                if needs <= valid:
                    rule(partial, found)
            if not found.items:
                raise
            raise findings.reraise(cls.__name__, exc, found) from None
        found = findings.Findings()
        for _, rule in rules.RULES:
            rule(feature, found)
        found.raise_if_any(cls.__name__)
        return feature


@functools.cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    field = Feature.model_fields[name]
    # The field's own constraints (min_length...) come with it.
    form: Any = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    return TypeAdapter(form)


def _partial(data: dict[str, Any], exc: ValidationError) -> tuple[Feature, frozenset[str]]:
    """A feature of the fields that passed the schema, and their names (for the rules)."""
    failed = {str(e["loc"][0]) for e in exc.errors(include_url=False) if e["loc"]}
    values: dict[str, Any] = {}
    for name, field in Feature.model_fields.items():
        if name in failed:
            continue
        if name in data:
            try:
                values[name] = _field_adapter(name).validate_python(data[name])
            except ValidationError:
                continue  # reported by the schema already
        elif not field.is_required():
            values[name] = field.get_default(call_default_factory=True)
    return Feature.model_construct(**values), frozenset(values)


SHAPES: problems.Shapes = {
    ("versions", "*"): "a version such as 1.2.3, or a map of version and vars",
    ("aliases",): "a map of alias to version",
    ("options",): "a map of option name to its type, default and description",
    ("options", "*"): "a map of type, default, description, enum and proposals",
    ("install", "*"): "a map with method, platforms and the method's keys",
    ("install", "*", "sha256"): "a map of version to platform to sha256",
    ("install", "*", "sha256", "*"): "a map of platform to sha256",
    ("install", "*", "targets"): "a map of platform to the upstream's name for it",
    ("install", "*", "packages"): "a map of package manager to a list of packages",
    ("env", "vars"): "a map of variable name to value",
    ("writable_homes",): "a map of variable name to a list of folders below it for PATH",
    ("install", "*", "env", "vars"): "a map of variable name to value",
}
"""What the manifest's maps hold, for "expected ..." in a type error."""
