"""Install commands for every package manager, name checks and the family fallback order."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from agent.platform import model, packagers
from agent.platform.packagers import InstallCommand

EXPECTED: dict[model.PackageManager, InstallCommand] = {
    "apt": InstallCommand(
        argv=(
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=300",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "git",
            "curl",
        ),
        env=(
            ("DEBIAN_FRONTEND", "noninteractive"),
            ("NEEDRESTART_MODE", "l"),
            ("NEEDRESTART_SUSPEND", "1"),
        ),
        refresh=("apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-q"),
    ),
    "dnf": InstallCommand(
        argv=("dnf", "install", "-y", "--setopt=install_weak_deps=False", "git", "curl"),
    ),
    "yum": InstallCommand(argv=("yum", "install", "-y", "git", "curl")),
    "zypper": InstallCommand(
        argv=("zypper", "--non-interactive", "install", "--no-recommends", "git", "curl"),
        env=(("ZYPP_LOCK_TIMEOUT", "300"),),
        refresh=("zypper", "--non-interactive", "refresh"),
    ),
    "apk": InstallCommand(argv=("apk", "--no-cache", "--wait", "300", "add", "git", "curl")),
    "pacman": InstallCommand(argv=("pacman", "-S", "--noconfirm", "--needed", "git", "curl")),
    "brew": InstallCommand(
        argv=("brew", "install", "git", "curl"),
        env=(
            ("HOMEBREW_NO_AUTO_UPDATE", "1"),
            ("HOMEBREW_NO_INSTALL_CLEANUP", "1"),
            ("HOMEBREW_NO_ENV_HINTS", "1"),
        ),
        refresh=("brew", "update"),
    ),
    "choco": InstallCommand(argv=("choco", "install", "-y", "--no-progress", "git", "curl")),
}


@pytest.mark.parametrize("manager", sorted(EXPECTED))
def test_each_manager_gets_its_exact_noninteractive_command(
    manager: model.PackageManager,
) -> None:
    assert packagers.install_commands(manager, ["git", "curl"]) == [EXPECTED[manager]]
    assert packagers.install_command(manager, ("git", "curl")) == EXPECTED[manager]


def test_every_manager_has_a_binary_and_an_expected_command() -> None:
    assert set(packagers.BINARIES) == set(model.PACKAGE_MANAGERS)
    assert set(EXPECTED) | {"winget"} == set(model.PACKAGE_MANAGERS)


def test_winget_installs_one_id_per_command() -> None:
    commands = packagers.install_commands("winget", ["Git.Git", "Notepad++.Notepad++"])
    assert [command.argv for command in commands] == [
        (
            "winget",
            "install",
            "--exact",
            "--id",
            package,
            "--silent",
            "--accept-package-agreements",
            "--accept-source-agreements",
            "--disable-interactivity",
        )
        for package in ("Git.Git", "Notepad++.Notepad++")
    ]
    assert all(command.env == () and command.refresh is None for command in commands)


def test_a_single_command_for_several_winget_ids_is_refused() -> None:
    assert packagers.install_command("winget", ["Git.Git"]).argv[4] == "Git.Git"
    with pytest.raises(model.PlatformError, match=r"one package per run.*install_commands"):
        packagers.install_command("winget", ["Git.Git", "Kitware.CMake"])


@pytest.mark.parametrize(
    ("manager", "timeout", "argv_part", "env_part"),
    [
        ("apt", 45, "DPkg::Lock::Timeout=45", None),
        ("apt", 0, "DPkg::Lock::Timeout=0", None),
        ("zypper", 45, None, ("ZYPP_LOCK_TIMEOUT", "45")),
        ("apk", 45, "45", None),
    ],
)
def test_the_lock_timeout_reaches_the_managers_that_can_wait(
    manager: model.PackageManager,
    timeout: int,
    argv_part: str | None,
    env_part: tuple[str, str] | None,
) -> None:
    command = packagers.install_command(manager, ["git"], lock_timeout_s=timeout)
    if argv_part is not None:
        assert argv_part in command.argv
        assert command.refresh is None or argv_part in command.refresh
    if env_part is not None:
        assert env_part in command.env


@pytest.mark.parametrize("timeout", [-1, True, 1.5, "300"])
def test_a_lock_timeout_that_is_not_whole_non_negative_seconds_is_refused(
    timeout: object,
) -> None:
    with pytest.raises(model.PlatformError, match=r"lock_timeout_s .* whole number of seconds"):
        packagers.install_commands("apt", ["git"], lock_timeout_s=timeout)  # type: ignore[arg-type]


BAD_NAMES = [
    "--allow-unauthenticated",
    "-y",
    "a b",
    "x;rm -rf /",
    "",
    "git\x00",
    "git\n",
    " git",
    "$(reboot)",
    "`reboot`",
    "a|b",
    "/tmp/evil.deb",
    "./evil.apk",
    "x" * 201,
]


@pytest.mark.parametrize("manager", model.PACKAGE_MANAGERS)
@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(name)[:24] for name in BAD_NAMES])
def test_a_name_that_could_be_an_option_or_a_second_command_is_refused(
    manager: model.PackageManager, name: str
) -> None:
    with pytest.raises(model.PlatformError) as error:
        packagers.install_commands(manager, ["git", name])
    assert f"package name {name!r} is not acceptable for {manager}" in str(error.value)


@pytest.mark.parametrize(
    ("manager", "name"),
    [
        ("apt", "libssl-dev"),
        ("apt", "g++"),
        ("apt", "hello=2.10-3"),
        ("apt", "libfoo=1:2.0~rc1-1"),
        ("apt", "libc6:arm64"),
        ("apt", "git/bookworm-backports"),
        ("dnf", "gcc-c++"),
        ("dnf", "@development-tools"),
        ("dnf", "python3.11"),
        ("yum", "@core"),
        ("zypper", "pattern:devel_basis"),
        ("zypper", "git=2.43"),
        ("apk", "py3-pip"),
        ("apk", "git@edge"),
        ("apk", "curl=8.9.1-r0"),
        ("pacman", "extra/git"),
        ("brew", "python@3.12"),
        ("brew", "hashicorp/tap/terraform"),
        ("choco", "nodejs-lts"),
        ("winget", "Microsoft.PowerShell"),
        ("winget", "Notepad++.Notepad++"),
        ("winget", "x" * 200),
    ],
)
def test_the_spellings_each_manager_needs_are_accepted(
    manager: model.PackageManager, name: str
) -> None:
    assert packagers.check_package_name(manager, name) == name


@pytest.mark.parametrize(
    ("manager", "name"),
    [("apt", "@core"), ("choco", "a/b"), ("winget", "a:b"), ("apk", "a/b"), ("pacman", "a=1")],
)
def test_characters_a_manager_does_not_need_are_refused(
    manager: model.PackageManager, name: str
) -> None:
    with pytest.raises(model.PlatformError, match=rf"{name!r} is not acceptable for {manager}"):
        packagers.check_package_name(manager, name)


def test_a_bare_string_of_packages_is_refused_rather_than_split_into_letters() -> None:
    with pytest.raises(model.PlatformError, match=r"'git' must be a list of names"):
        packagers.install_commands("apt", "git")


def test_an_empty_package_list_is_refused() -> None:
    with pytest.raises(model.PlatformError, match=r"no packages given to install with apt"):
        packagers.install_commands("apt", [])


def test_an_unknown_manager_is_refused() -> None:
    with pytest.raises(model.PlatformError, match=r"'npm' is not one of: apt, dnf"):
        packagers.install_commands("npm", ["git"])  # type: ignore[arg-type]


def test_the_command_environment_is_added_on_top_of_the_base() -> None:
    command = packagers.install_command("apt", ["git"])
    env = command.environ({"PATH": "/usr/bin", "DEBIAN_FRONTEND": "dialog"})
    assert env == {
        "PATH": "/usr/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "NEEDRESTART_MODE": "l",
        "NEEDRESTART_SUSPEND": "1",
    }


@pytest.mark.parametrize(
    ("family", "version_id", "manager"),
    [
        ("debian", "12", "apt"),
        ("rhel", "9.4", "dnf"),
        ("rhel", "8", "dnf"),
        ("rhel", "7.9", "yum"),
        ("rhel", "7", "yum"),
        ("rhel", None, "dnf"),
        ("rhel", "stream", "dnf"),
        ("fedora", "40", "dnf"),
        ("amazon", "2", "yum"),
        ("amazon", "2018.03", "yum"),
        ("amazon", "2023", "dnf"),
        ("amazon", None, "dnf"),
        ("suse", "15.6", "zypper"),
        ("alpine", "3.20.3", "apk"),
        ("arch", None, "pacman"),
        ("unknown", None, None),
        ("gentoo", None, None),
    ],
)
def test_linux_families_map_to_their_manager(
    family: str, version_id: str | None, manager: str | None
) -> None:
    assert packagers.manager_for(family, os="linux", version_id=version_id) == manager


def test_macos_and_windows_managers_do_not_depend_on_a_family() -> None:
    assert packagers.manager_for("unknown", os="darwin") == "brew"
    assert packagers.manager_for("unknown", os="windows") == "winget"


@pytest.mark.parametrize(
    ("family", "os_name", "version_id", "order"),
    [
        ("rhel", "linux", "9.4", ("dnf", "yum")),
        ("rhel", "linux", "7", ("yum", "dnf")),
        ("amazon", "linux", "2", ("yum", "dnf")),
        ("debian", "linux", None, ("apt",)),
        ("unknown", "linux", None, ("apt", "dnf", "yum", "zypper", "apk", "pacman")),
        ("unknown", "windows", None, ("winget", "choco")),
        ("debian", "darwin", None, ("brew",)),
    ],
)
def test_detection_probes_managers_in_the_documented_order(
    family: str, os_name: model.OS, version_id: str | None, order: tuple[str, ...]
) -> None:
    assert packagers.probe_order(family, os=os_name, version_id=version_id) == order


def _simulate(argv: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*argv, "-s"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (Debian/Ubuntu)")
def test_apt_accepts_the_generated_install_command_in_simulation() -> None:
    # -s only plans the transaction: nothing is downloaded or installed and no lock is
    # taken, so this runs unprivileged. "apt" is installed wherever apt-get is, so the plan
    # needs no package lists; what is checked is that apt-get accepts every option we pass
    # (it exits 100 on one it does not understand, as the misspelt control shows).
    command = packagers.install_command("apt", ["apt"])
    env = command.environ(os.environ)
    result = _simulate(command.argv, env)
    assert result.returncode == 0, result.stderr

    misspelt = tuple(
        "--no-install-recomends" if arg == "--no-install-recommends" else arg
        for arg in command.argv
    )
    control = _simulate(misspelt, env)
    assert control.returncode == 100
    assert "--no-install-recomends is not understood" in control.stderr
