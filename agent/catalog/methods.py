"""Install methods a manifest may declare, each limited to platforms.

- ``system``: OS packages, per package manager, with optional extra repositories (apt
  sources in deb822 form; .repo files for dnf, yum and zypper);
- ``archive``: a URL template, a sha256 per version and platform or a checksum file,
  ``strip_components`` and the paths to expose; or several component archives that a
  JSON manifest of NVIDIA's redistrib form lists with their sha256 (the CUDA toolkit);
- ``pip``: wheels installed with ``--target`` (wheels that ship their own binary, or
  run through the ``python`` feature);
- ``npm``: packages installed into a prefix;
- ``script``: a script in the feature's folder, run with the Dev Container Features
  environment contract plus PREFIX, VERSION and ARCH.

Policy: every URL is https unless the method opts in with ``allow_insecure``; every
checksum is 64 lowercase hex digits; package names are plain names, never options.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from agent.catalog import findings, patterns
from agent.catalog.values import (
    ComponentName,
    EnvName,
    EnvValue,
    Line,
    LinkTarget,
    PackageManager,
    PackageName,
    Plain,
    RelativePath,
    Sha256,
    option_text,
)


class Env(BaseModel):
    """What to export after install, relative to the install prefix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: tuple[RelativePath, ...] = ()
    vars: dict[EnvName, EnvValue] = Field(
        default_factory=dict, description="Templated; {prefix} is the install prefix."
    )


class Check(BaseModel):
    """A command that proves the install works, and what its output must contain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: tuple[Line, ...] = Field(min_length=1)
    expect: EnvValue = Field(default="{version}", description="Templated substring of the output.")


class _Method(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    platforms: tuple[patterns.Pattern, ...] = Field(
        min_length=1, description="Platforms this method installs on, e.g. linux/x64/glibc."
    )
    env: Env | None = Field(
        default=None, description="Replaces the feature's env where this method applies."
    )
    check: Check | None = Field(
        default=None, description="Replaces the feature's check where this method applies."
    )
    when: dict[str, Annotated[Plain, BeforeValidator(option_text)]] = Field(
        default_factory=dict,
        max_length=4,
        description=(
            "Option values (name: value) this method is for, e.g. {source: npm} for an "
            "opt-in source; a method with no when serves any. The first method whose "
            "platforms, versions and when all match is used."
        ),
    )
    versions: tuple[Plain, ...] = Field(
        default=(),
        max_length=256,
        description=(
            "The feature's versions this method can install (an upstream that publishes "
            "only some of them this way); default all."
        ),
    )


class AptRepository(BaseModel):
    """An extra apt repository (deb822), added before the packages are installed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,63}$")
    uri: Line
    suites: tuple[Line, ...] = Field(min_length=1)
    components: tuple[Line, ...] = ()
    key_url: Line = Field(description="https URL of the repository's signing key (armored).")


class RpmRepository(BaseModel):
    """An extra dnf, yum or zypper repository (a .repo file), added before the install."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,63}$")
    baseurl: Line
    gpgkey: Line = Field(description="https URL of the repository's signing key.")


class SystemMethod(_Method):
    """Packages from the target's package manager."""

    method: Literal["system"]
    packages: dict[PackageManager, tuple[PackageName, ...]] = Field(min_length=1)
    apt_repositories: tuple[AptRepository, ...] = ()
    rpm_repositories: tuple[RpmRepository, ...] = Field(
        default=(), description="Used with dnf, yum and zypper."
    )

    @model_validator(mode="after")
    def _repos_are_https(self) -> SystemMethod:
        found = findings.Findings()
        urls: list[tuple[findings.Loc, str]] = []
        for i, apt in enumerate(self.apt_repositories):
            urls += [(("apt_repositories", i, "uri"), apt.uri)]
            urls += [(("apt_repositories", i, "key_url"), apt.key_url)]
        for i, rpm in enumerate(self.rpm_repositories):
            urls += [(("rpm_repositories", i, "baseurl"), rpm.baseurl)]
            urls += [(("rpm_repositories", i, "gpgkey"), rpm.gpgkey)]
        for loc, url in urls:
            if not url.startswith("https://"):
                found.add(loc, f"{url!r} is not an https URL")
        found.raise_if_any(type(self).__name__)
        return self


ARCHIVE_SUFFIXES = ("tar.gz", "tgz", "tar.xz", "txz", "tar.zst", "tar.bz2", "zip")


def archive_suffix(url: str) -> str | None:
    """The archive suffix of ``url``'s file name; ``None`` for a lone executable."""
    name = url.rsplit("/", 1)[-1].lower()
    return next((s for s in ARCHIVE_SUFFIXES if name.endswith("." + s)), None)


class Components(BaseModel):
    """Component archives that a JSON manifest lists, in the form of NVIDIA's
    ``redistrib_<release>.json``: ``{"<component>": {"<platform>": {"relative_path",
    "sha256", "size"}}}``. Each is downloaded from the method's ``url`` (the base)
    joined with its ``relative_path``, verified against the manifest's sha256, stripped
    of ``strip_components`` and laid into the one prefix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    manifest_url: Line = Field(
        description="URL template of the JSON manifest, e.g. .../redistrib_{version}.json."
    )
    names: tuple[ComponentName, ...] = Field(
        min_length=1, max_length=64, description="Components every release must list."
    )
    optional: tuple[ComponentName, ...] = Field(
        default=(),
        max_length=64,
        description=(
            "Components taken where the release lists them for the platform (CUDA 13 "
            "split cuda_crt and libnvvm out of cuda_nvcc)."
        ),
    )
    links: dict[RelativePath, LinkTarget] = Field(
        default_factory=dict,
        max_length=16,
        description=(
            "Symbolic links made in the prefix once the components are laid in: path -> "
            "target, relative to the link's folder and inside the prefix (the CUDA "
            "toolkit's targets/x86_64-linux/include -> ../../include, where nvcc.profile "
            "looks for headers, as NVIDIA's local installer lays them out)."
        ),
    )

    @model_validator(mode="after")
    def _links_stay_inside(self) -> Components:
        found = findings.Findings()
        for link, target in self.links.items():
            parts = [p for p in link.split("/") if p != "."]
            if not parts:
                found.add(("links", link), "a link needs a path below the prefix, not the prefix")
                continue
            resolved = _resolve(parts[:-1], target)
            # The link itself, a path below it or a folder above it would make a loop.
            shared = min(len(resolved or ()), len(parts))
            if resolved is None or resolved[:shared] == parts[:shared]:
                found.add(
                    ("links", link),
                    f"the target {target!r} of {link!r} leaves the prefix, or is the link, "
                    "below it or a folder above it: a link must point at another path "
                    "inside the prefix",
                )
        found.raise_if_any(type(self).__name__)
        return self


def _resolve(folder: list[str], target: str) -> list[str] | None:
    """The path inside the prefix that ``target``, relative to ``folder``, names; None
    where it climbs above the prefix."""
    at = list(folder)
    for part in target.split("/"):
        if part != "..":
            at.append(part)
        elif not at:
            return None
        else:
            at.pop()
    return at


class ArchiveMethod(_Method):
    """A relocatable archive downloaded and unpacked into the prefix."""

    method: Literal["archive"]
    url: Line = Field(description="URL template of the archive.")
    targets: dict[patterns.Pattern, Plain] = Field(
        default_factory=dict,
        description="The upstream's name for each platform, used as {target} in the URL.",
    )
    sha256: dict[str, dict[patterns.Pattern, Sha256]] = Field(
        default_factory=dict, description="version -> platform -> sha256 of the archive."
    )
    checksum_url: Line | None = Field(
        default=None,
        description=(
            "URL template of a checksum file: '<sha256>  <file name>' lines (GNU or BSD), or "
            "one bare sha256 (a per-file .sha256)."
        ),
    )
    strip_components: int = Field(default=0, ge=0, le=5)
    binary_name: Plain | None = Field(
        default=None,
        description=(
            "For a URL that is a lone executable (no archive suffix): its name in the "
            "prefix, e.g. yq for yq_linux_amd64. Default: the URL's file name."
        ),
    )
    merge: tuple[Line, ...] = Field(
        default=(),
        max_length=32,
        description=(
            "Folders of the archive (after strip_components), templated like url, whose "
            "contents are merged into the prefix, as a component installer does (Rust's "
            "rustc, cargo, rust-std-{target}); the rest of the archive is left out."
        ),
    )
    components: Components | None = Field(
        default=None,
        description=(
            "Several archives listed by a JSON manifest (NVIDIA's redistrib form), each "
            "verified by the sha256 it lists; url is then the base their relative paths "
            "join, ending in /."
        ),
    )
    allow_insecure: bool = Field(
        default=False, description="Allow http:// URLs (only for mirrors you trust)."
    )

    @model_validator(mode="after")
    def _verifiable(self) -> ArchiveMethod:
        found = findings.Findings()
        if self.components is not None:
            self._components(found)
        elif not self.sha256 and not self.checksum_url:
            found.add((), "an archive needs sha256 checksums or a checksum_url")
        if self.merge and (archive_suffix(self.url) is None or any("/" in m for m in self.merge)):
            found.add(
                ("merge",),
                "merge names top-level folders (no /) of an archive; this URL is a lone "
                "executable, or a name has a /",
            )
        if self.binary_name is not None and (
            "/" in self.binary_name or archive_suffix(self.url) is not None
        ):
            found.add(
                ("binary_name",),
                f"binary_name {self.binary_name!r} is for a URL that is a lone executable, "
                "as a plain file name; this URL is an archive, or the name has a /",
            )
        if "{target}" in self.url:
            gaps = [
                repr(p)
                for p in self.platforms
                if not any(patterns.covers(t, p) for t in self.targets)
            ]
            if gaps:  # one cause, one problem: at the targets, or at the url without them
                found.add(
                    ("targets",) if self.targets else ("url",),
                    f"the url uses {{target}} but targets has no entry covering {', '.join(gaps)}",
                )
        manifest_url = self.components.manifest_url if self.components else None
        for key, url in (
            ("url", self.url),
            ("checksum_url", self.checksum_url),
            ("components", manifest_url),
        ):
            if url and not self.allow_insecure and not url.startswith("https://"):
                found.add(
                    (key,),
                    f"{url!r} is not an https URL; use https, or set allow_insecure: true "
                    "for a mirror you trust",
                )
        found.raise_if_any(type(self).__name__)
        return self

    def _components(self, found: findings.Findings) -> None:
        assert self.components is not None
        mixed = [k for k in ("sha256", "checksum_url", "binary_name", "merge") if getattr(self, k)]
        if mixed:
            found.add(
                (mixed[0],),
                f"{', '.join(mixed)} cannot be combined with components: the components' "
                "manifest lists each archive and its sha256",
            )
        if not self.url.endswith("/"):
            found.add(
                ("url",),
                f"with components, url is the base the manifest's relative paths join, "
                f"ending in /; got {self.url!r}",
            )
        gaps = [
            repr(p) for p in self.platforms if not any(patterns.covers(t, p) for t in self.targets)
        ]
        if gaps:
            found.add(
                ("targets",),
                "components are listed per upstream platform: targets needs an entry "
                f"covering {', '.join(gaps)}",
            )
        names = [*self.components.names, *self.components.optional]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            found.add(("components",), f"components listed twice: {', '.join(twice)}")


class PipIndex(BaseModel):
    """A package index the agent's settings name (installer.pip_indexes), for wheels
    that live outside the default index (PyTorch's CUDA builds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[a-z][a-z0-9-]{0,31}$",
        description="The key of installer.pip_indexes whose URL is the index's base.",
    )
    path: Line | None = Field(
        default=None,
        description=(
            "Appended to the base, templated: {version} and the like, and the feature's "
            "options by name (e.g. '{cuda}' for a variant option)."
        ),
    )


class PipMethod(_Method):
    """Wheels installed with pip --target."""

    method: Literal["pip"]
    packages: tuple[PackageName, ...] = Field(
        min_length=1, description="Requirements, templated, e.g. ninja=={version}."
    )
    index: PipIndex | None = Field(
        default=None,
        description=(
            "Install from this named index instead of pip's default one (the URL is a "
            "setting, so a mirror can serve it)."
        ),
    )


class NpmMethod(_Method):
    """npm packages installed into the prefix."""

    method: Literal["npm"]
    packages: tuple[PackageName, ...] = Field(
        min_length=1, description="Package specs, templated, e.g. typescript@{version}."
    )


class ScriptMethod(_Method):
    """A script from the feature's folder (Dev Container Features contract)."""

    method: Literal["script"]
    script: RelativePath = "install.sh"


Method = Annotated[
    SystemMethod | ArchiveMethod | PipMethod | NpmMethod | ScriptMethod,
    Field(discriminator="method"),
]
