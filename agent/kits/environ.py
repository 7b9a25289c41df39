"""The clean environment for every command the agent runs (pip, npm, build scripts,
checks, the host's package manager).

Policy: a command never inherits the agent's environment (tokens, the daemon's own
settings, whatever the service manager set). It gets only the variables listed in
:data:`KEEP` and :data:`KEEP_PREFIXES` below, taken from the agent's environment where
set, plus what the caller adds; this module is the one place that list lives. Commands
that run as root on the host itself (the package manager, its maintainer scripts, a
host check) get the narrower :data:`HOST_KEEP`: no home, no scratch folder and no
pip/npm settings, which may carry registry credentials and which a job-controlled
TMPDIR would turn into root writing where the job says. Callers that parse a command's
messages ask for a fixed locale, so the words they match are the same on every host.
Standard library only: the job hook may reuse it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

HOST_KEEP: tuple[str, ...] = (
    # Programs (PATH; DEFAULT_PATH when unset) and the locale, unless the caller fixes
    # one (see clean's fixed_locale).
    "PATH",
    "LANG",
    "LC_ALL",
    # Proxies, in both spellings: curl and apt read the lower-case ones, some tools only
    # the upper-case ones.
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)
"""What the host's package manager, its scripts and host checks get (run as root on
the host, they take trust from the host's own configuration)."""

KEEP: tuple[str, ...] = (
    *HOST_KEEP,
    # A home, where pip, npm, git and Homebrew keep per-user configuration and caches,
    # and TMPDIR for scratch files.
    "HOME",
    "TMPDIR",
    # Extra trusted CAs: OpenSSL (SSL_CERT_*), requests/pip, curl, Node/npm.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    # Per-user configuration folder (pip's and npm's configuration files).
    "XDG_CONFIG_HOME",
)
"""What builds (pip, npm, scripts) and their checks get, with :data:`KEEP_PREFIXES`."""

KEEP_PREFIXES: tuple[str, ...] = (
    # pip's and npm's own settings (PIP_INDEX_URL, NPM_CONFIG_REGISTRY, npm_config_cache):
    # how an operator points installs at a mirror.
    "PIP_",
    "NPM_CONFIG_",
    "npm_config_",
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FIXED_LOCALE = "C.UTF-8"


def clean(
    extra: Mapping[str, str] | None = None,
    *,
    base: Mapping[str, str] | None = None,
    fixed_locale: bool = False,
    host: bool = False,
) -> dict[str, str]:
    """The kept variables of ``base`` (default ``os.environ``), then ``extra`` on top;
    with ``host``, only :data:`HOST_KEEP` (a command run as root on the host).

    With ``fixed_locale`` the command speaks ``C.UTF-8`` whatever the agent's locale is
    (``LANG`` set, ``LC_ALL`` dropped): for commands whose messages are matched, such as
    a package manager's errors or a check's expected output.
    """
    source = os.environ if base is None else base
    if host:
        env = {k: v for k, v in source.items() if k in HOST_KEEP}
    else:
        env = {k: v for k, v in source.items() if k in KEEP or k.startswith(KEEP_PREFIXES)}
    env.setdefault("PATH", DEFAULT_PATH)
    if fixed_locale:
        env.pop("LC_ALL", None)
        env["LANG"] = FIXED_LOCALE
    env.update(extra or {})
    return env


RESERVED_NAMES: frozenset[str] = frozenset(
    {
        # What install steps set themselves (the Dev Container Features contract).
        "PREFIX",
        "VERSION",
        "ARCH",
        "TARGET_OS",
        "TARGET_LIBC",
        "_REMOTE_USER",
        "_REMOTE_USER_HOME",
        "_CONTAINER_USER",
        "_CONTAINER_USER_HOME",
        # The shell: where it looks for programs, what it runs at start, how it splits
        # and traces words.
        "PATH",
        "HOME",
        "IFS",
        "PS4",
        "ENV",
        "BASH_ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "CDPATH",
        "GLOBIGNORE",
        "PROMPT_COMMAND",
        "SHELL",
        "USER",
        "LOGNAME",
        "PWD",
        "OLDPWD",
        "TMPDIR",
        "TMP",
        "TEMP",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERMINFO",
        # The C library and the resolver.
        "GCONV_PATH",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "NLSPATH",
        "RES_OPTIONS",
        # Trust and proxies (KEEP: the operator's, never a label's).
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "FTP_PROXY",
        # Interpreters that read code or options from a variable.
        "PERL5LIB",
        "PERL5OPT",
        "PERLLIB",
        "RUBYOPT",
        "RUBYLIB",
        "CLASSPATH",
        "JAVA_TOOL_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "_JAVA_OPTIONS",
        "GOFLAGS",
        "GOPATH",
        "GOROOT",
        "GOPROXY",
        "GOTOOLCHAIN",
        "GOENV",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "MAKEFLAGS",
        # Compilers and their flags (node-gyp, pip sdists, make): a label must not
        # choose what compiles an entry other jobs will run.
        "CC",
        "CXX",
        "CPP",
        "LD",
        "AR",
        "CFLAGS",
        "CXXFLAGS",
        "CPPFLAGS",
        "LDFLAGS",
        "LDLIBS",
        # More that programs read code, files or commands from.
        "SSLKEYLOGFILE",
        "LOCPATH",
        "TZDIR",
        "TERMINFO_DIRS",
        "PHPRC",
        "SSH_ASKPASS",
        "EDITOR",
        "VISUAL",
        "PAGER",
    }
)
"""Environment names no feature option may become: an option reaches its steps as an
upper-case variable (``node_options`` -> ``NODE_OPTIONS``), so a label could otherwise
set what a loader, interpreter, shell or package manager reads (``--inspect-brk`` in
``NODE_OPTIONS``, a library in ``LD_PRELOAD``, an index in ``PIP_INDEX_URL``)."""

RESERVED_PREFIXES: tuple[str, ...] = (
    "LD_",  # the dynamic loader (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT)
    "DYLD_",
    "MALLOC_",
    "GLIBC_",
    "LC_",
    "XDG_",
    "PYTHON",  # PYTHONPATH, PYTHONSTARTUP, PYTHONHOME, ...
    "PIP_",
    "UV_",
    "CONDA_",
    "NODE_",  # NODE_OPTIONS, NODE_PATH, NODE_EXTRA_CA_CERTS
    "NPM_",  # NPM_CONFIG_* and npm's own
    "YARN_",
    "PNPM_",
    "COREPACK_",
    "NVM_",
    "GIT_",  # GIT_SSH_COMMAND, GIT_CONFIG_*, GIT_EXEC_PATH
    "BASH_",  # BASH_ENV, BASH_FUNC_*, BASH_XTRACEFD, BASH_LOADABLES_PATH
    "PKG_CONFIG_",
    "CMAKE_",
    "LUA_",
    "SSL_",
    "OPENSSL_",
    "CURL_",
    "WGET",
    "GEM_",
    "BUNDLE_",
    "CARGO_",
    "RUSTUP_",
    "DOTNET_",
    "COREHOST_",
    "RUNNER_AGENT_",
    "GITHUB_",
    "ACTIONS_",
    "RUNNER_",
)


def reserved(name: str) -> str | None:
    """Why no option may set the variable ``name``, or ``None`` when it may."""
    if name in RESERVED_NAMES:
        return f"{name} is read by install steps, shells or loaders"
    for prefix in RESERVED_PREFIXES:
        if name.startswith(prefix):
            return f"names starting {prefix} are read by loaders, interpreters or package managers"
    return None
