"""Turning one resolved feature into install actions for a target platform.

Actions are JSON data (typed in :mod:`agent.platform.plans`), in order:

- ``{"action": "run", "argv": [...], "env": {...}}``: a command, as an argv list;
- ``{"action": "download", "url", "sha256" | "checksum_url", "file"}``: fetch and verify;
- ``{"action": "extract", "file", "dest", "strip_components"}``: unpack into the prefix;
- ``{"action": "components", "manifest_url", "base_url", "platform", "names", ...}``:
  several archives a JSON manifest lists, each verified and laid into the prefix;
- ``{"action": "write_file", "path", "content"}`` and ``{"action": "download", ..., "dest"}``
  for the extra apt repositories a system method declares.

Policy: argv lists only, never shell strings; every value placed in an argv or env
comes from a validated manifest or a request that passed the label grammar. ``python3``
and ``npm`` in argv[0] name the tools; the executor may substitute its own interpreter.
pip installs for another platform use ``--platform`` tags with ``--only-binary=:all:``
(manylinux_2_28 covers glibc 2.28 and newer: Debian 10, Ubuntu 20.04, RHEL 8 onwards).
"""

from __future__ import annotations

import posixpath
import re

from agent.catalog import lockfile, manifest, methods, patterns, templates
from agent.kits import urls
from agent.platform import model, packagers
from agent.platform import plans as wire

_FILE_RE = re.compile(r"(?a:[A-Za-z0-9._+-]{1,200})")
_PIP_ARCH = {
    "x64": "x86_64",
    "arm64": "aarch64",
    "arm": "armv7l",
    "ppc64": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "ia32": "i686",
}


_NPM_OS = {"windows": "win32"}


def pip_platform_tags(target: model.Platform) -> list[str]:
    """The wheel platform tags pip should accept for ``target``."""
    if target.os == "linux":
        arch = _PIP_ARCH[target.arch]
        if target.libc is None:
            raise ValueError("the target's libc is unknown, so no wheel can be chosen; give libc")
        if target.libc == "musl":
            return [f"musllinux_1_2_{arch}", f"musllinux_1_1_{arch}"]
        return [f"manylinux_2_28_{arch}", f"manylinux2014_{arch}"]
    if target.os == "darwin":
        # 11.0 also admits the older universal2 wheels (10.9+) that many projects ship.
        return ["macosx_11_0_arm64"] if target.arch == "arm64" else ["macosx_11_0_x86_64"]
    return {"x64": ["win_amd64"], "arm64": ["win_arm64"], "ia32": ["win32"]}.get(target.arch, [])


def archive_format(url: str) -> str:
    """The archive format, from the URL's file name."""
    suffix = methods.archive_suffix(url)
    if suffix is None:
        return "binary"
    return {"tgz": "tar.gz", "txz": "tar.xz"}.get(suffix, suffix)


ToolMethod = methods.ArchiveMethod | methods.PipMethod | methods.NpmMethod | methods.ScriptMethod
"""The methods that install into the store (:func:`build`); ``system`` has :func:`system`."""


def build(
    feature: manifest.Feature,
    method: ToolMethod,
    *,
    version: str,
    target: model.Platform,
    prefix: str,
    values: dict[str, str],
    option_env: dict[str, str],
    folder: str,
    python: tuple[str, str] | None = None,
    locked: lockfile.Entry | None = None,
) -> list[wire.ToolAction]:
    """The actions that install ``feature`` at ``version`` with ``method`` into ``prefix``.

    ``python`` is the (version, prefix) of the ``python`` feature this one requires, for
    pip features that run on an interpreter: their wheels are chosen for that Python and
    installed with it, not with the agent's. ``locked`` is the lock's entry for this
    version and target: an archive is then verified by the lock's hash and size as well
    as the catalog's, from the same URL (:func:`_same_url`).
    """
    if locked is not None and locked.method != method.method:
        raise lockfile.LockMismatch(
            f"the lock installs {feature.id} {version} by {locked.method}, the catalog now by "
            f"{method.method}: run runner-agent features lock --upgrade {feature.id}"
        )
    if isinstance(method, methods.ArchiveMethod):
        return _archive(
            feature,
            method,
            version=version,
            target=target,
            prefix=prefix,
            values=values,
            locked=locked,
        )
    if isinstance(method, methods.PipMethod):
        argv = [
            "python3",
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
            prefix,
            "--only-binary=:all:",
        ]
        for tag in pip_platform_tags(target):
            argv += ["--platform", tag]
        action: wire.RunAction = {"action": "run", "argv": argv, "env": dict(option_env)}
        if python is None:
            # Wheels that carry their own binary: any CPython runs pip for them, and
            # their tags say py3-none-<platform>.
            argv += ["--implementation", "py", "--abi", "none"]
        else:
            short = ".".join(python[0].split(".")[:2])
            abi = "cp" + short.replace(".", "")
            argv += ["--python-version", short, "--implementation", "cp"]
            argv += ["--abi", abi, "--abi", "abi3", "--abi", "none"]
            action["interpreter"] = posixpath.join(python[1], "bin", "python3")
        argv += [templates.render(p, values) for p in method.packages]
        if method.index is not None:
            by_name = {
                name: option_env[manifest.option_env_name(name)]
                for name in feature.options
                if manifest.option_env_name(name) in option_env
            }
            path = method.index.path
            rendered = templates.render(path, {**values, **by_name}) if path else ""
            action["index"] = {"name": method.index.name, "path": rendered}
        return [_own_limits(feature, action)]
    if isinstance(method, methods.NpmMethod):
        argv = ["npm", "install", "--global", "--prefix", prefix, "--no-audit", "--no-fund"]
        # npm (>= 10.4) picks optional platform packages (esbuild's, swc's) by these.
        argv += [f"--os={_NPM_OS.get(target.os, target.os)}", f"--cpu={target.arch}"]
        if target.libc is not None:
            argv.append(f"--libc={target.libc}")
        argv += [templates.render(p, values) for p in method.packages]
        return [_own_limits(feature, {"action": "run", "argv": argv, "env": dict(option_env)})]
    # The contract's own names last: no option can replace them (the manifest also
    # refuses options that would).
    env = {
        **option_env,
        "PREFIX": prefix,
        "VERSION": version,
        "ARCH": target.arch,
        "TARGET_OS": target.os,
        "TARGET_LIBC": target.libc or "",
    }
    script: wire.RunAction = {
        "action": "run",
        "argv": ["bash", posixpath.join(folder, method.script)],
        "env": env,
    }
    if feature.network == "none":  # it brings its own files: loopback only
        script["network"] = "none"
    return [_own_limits(feature, script)]


def _own_limits(feature: manifest.Feature, action: wire.RunAction) -> wire.RunAction:
    """The manifest's own size limit on a step, for the executor
    (:mod:`agent.install.watching`)."""
    if feature.max_entry_bytes is not None:
        action["max_entry_bytes"] = int(feature.max_entry_bytes)
    return action


def _archive(
    feature: manifest.Feature,
    method: methods.ArchiveMethod,
    *,
    version: str,
    target: model.Platform,
    prefix: str,
    values: dict[str, str],
    locked: lockfile.Entry | None = None,
) -> list[wire.ToolAction]:
    fill = dict(values)
    upstream = patterns.lookup(method.targets, target)
    if upstream is not None:
        fill["target"] = upstream
    url = templates.render(method.url, fill)
    artifact = _pin(feature, version, locked)
    if method.components is not None:
        assert upstream is not None  # the method's validator requires targets for each
        components: wire.ComponentsAction = {
            "action": "components",
            "manifest_url": templates.render(method.components.manifest_url, fill),
            "base_url": url,
            "platform": upstream,
            "names": list(method.components.names),
            "optional": list(method.components.optional),
            "dest": prefix,
            "strip_components": method.strip_components,
        }
        if method.components.links:
            components["links"] = dict(sorted(method.components.links.items()))
        if artifact is not None:
            _same_url(feature, version, target, artifact, components["manifest_url"])
            # The manifest pins each component's hash: pinning the manifest pins them all.
            components["manifest_sha256"] = artifact.sha256
        return [components]
    file = url.rsplit("/", 1)[-1].split("?", 1)[0]
    if not _FILE_RE.fullmatch(file) or file in (".", ".."):
        raise ValueError(f"the archive URL {url!r} does not end in a file name")
    download: wire.DownloadAction = {"action": "download", "url": url, "file": file}
    pinned = patterns.lookup(method.sha256.get(version, {}), target)
    if artifact is not None:
        _same_url(feature, version, target, artifact, url)
        if pinned is not None and pinned != artifact.sha256:
            raise lockfile.LockMismatch(
                f"the lock pins sha256 {artifact.sha256} for {feature.id} {version} on "
                f"{target.triple}, the catalog {pinned}: one of them was changed; if the "
                f"upstream republished it, run runner-agent features lock --upgrade {feature.id}"
            )
        download["sha256"] = artifact.sha256
        download["size"] = artifact.size
        download["locked"] = True
        if pinned is None and method.checksum_url:
            # Both must agree: the lock narrows what the catalog accepts, never widens it.
            download["checksum_url"] = templates.render(method.checksum_url, fill)
    elif pinned is not None:
        download["sha256"] = pinned
    elif method.checksum_url:
        download["checksum_url"] = templates.render(method.checksum_url, fill)
    else:
        raise ValueError(f"{feature.id} {version} has no checksum for {target.triple}")
    extract: wire.ExtractAction = {
        "action": "extract",
        "file": file,
        "format": archive_format(url),
        "dest": prefix,
        "strip_components": method.strip_components,
    }
    if method.binary_name is not None:
        extract["name"] = method.binary_name
    if method.merge:
        extract["merge"] = [templates.render(m, fill) for m in method.merge]
    return [download, extract]


def _pin(
    feature: manifest.Feature, version: str, locked: lockfile.Entry | None
) -> lockfile.Artifact | None:
    """The one artifact an archive step installs from, as the lock records it."""
    if locked is None:
        return None
    if len(locked.artifacts) != 1:
        raise lockfile.LockMismatch(
            f"the lock lists {len(locked.artifacts)} artifacts for {feature.id} {version}; an "
            "archive installs from exactly one (a file, or a components' manifest): run "
            f"runner-agent features lock --upgrade {feature.id}"
        )
    return locked.artifacts[0]


def _same_url(
    feature: manifest.Feature,
    version: str,
    target: model.Platform,
    artifact: lockfile.Artifact,
    url: str,
) -> None:
    """A lock names what to expect, never where to fetch it from: the entry it fills is
    shared with every repository's jobs, so its bytes come from the catalog's URL."""
    if artifact.url != url:
        raise lockfile.LockMismatch(
            f"the lock downloads {feature.id} {version} on {target.triple} from "
            f"{urls.hide_url(artifact.url)}, the catalog from {url}; a lock cannot move "
            f"where an artifact comes from: run runner-agent features lock --upgrade "
            f"{feature.id}"
        )


def system(method: methods.SystemMethod, target: model.Platform) -> list[wire.SystemAction]:
    """The actions that install a ``system`` method's packages with the target's package
    manager (the resolver chose the method because the target has one it covers)."""
    manager = target.package_manager
    assert manager is not None
    assert manager in method.packages
    actions: list[wire.SystemAction] = []
    if manager == "apt":
        for repo in method.apt_repositories:
            key = f"/etc/apt/keyrings/{repo.name}.asc"
            actions.append({"action": "download", "url": repo.key_url, "dest": key})
            lines = [
                "Types: deb",
                f"URIs: {repo.uri}",
                f"Suites: {' '.join(repo.suites)}",
                *([f"Components: {' '.join(repo.components)}"] if repo.components else []),
                f"Signed-By: {key}",
            ]
            actions.append(
                {
                    "action": "write_file",
                    "path": f"/etc/apt/sources.list.d/{repo.name}.sources",
                    "content": "\n".join(lines) + "\n",
                }
            )
    if manager in ("dnf", "yum", "zypper"):
        folder = "/etc/zypp/repos.d" if manager == "zypper" else "/etc/yum.repos.d"
        for rpm in method.rpm_repositories:
            lines = [
                f"[{rpm.name}]",
                f"name={rpm.name}",
                f"baseurl={rpm.baseurl}",
                "enabled=1",
                "gpgcheck=1",
                f"gpgkey={rpm.gpgkey}",
            ]
            actions.append(
                {
                    "action": "write_file",
                    "path": f"{folder}/{rpm.name}.repo",
                    "content": "\n".join(lines) + "\n",
                }
            )
    commands = packagers.install_commands(manager, list(method.packages[manager]))
    refreshed = False
    for command in commands:
        # "purpose" and "manager" let the host executor keep the manager's download cache
        # on the shared volume and refresh the index at most once per interval.
        if command.refresh and not refreshed:
            actions.append(
                {
                    "action": "run",
                    "argv": list(command.refresh),
                    "env": dict(command.env),
                    "purpose": "refresh",
                    "manager": manager,
                }
            )
            refreshed = True
        actions.append(
            {
                "action": "run",
                "argv": list(command.argv),
                "env": dict(command.env),
                "purpose": "install",
                "manager": manager,
                "packages": list(method.packages[manager]),
            }
        )
    return actions
