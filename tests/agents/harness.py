"""The real coding agents, installed from npm and run for one turn against a URL.

Claude Code and Codex CLI are what people point at a gateway most, and what
they send changes with each release; a gateway tested only with SDKs would
miss that. So the tests install the pinned releases below with npm into
`.agents/` at the repository's root (git ignores it), once per clone: a stamp
records what was installed, and a lock keeps pytest-xdist's workers from
installing twice at once.

Each run gets a HOME, CODEX_HOME and XDG folders of its own under a temporary
folder, and an environment built from nothing but PATH and the agent's own
variables, so no run reads or writes this machine's real configuration or
keys, and no proxy or key set on the machine leaks in. As a second fence,
HTTP(S)_PROXY point at a closed loopback port with loopback exempt: a request
an agent might make to anywhere but loopback fails there instead of leaving
the machine.

Only the standard library is used, so `.ci/run` can install before the venv
exists: `python3 -m tests.agents.harness` installs and prints the versions.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".agents"

# The releases the samples were recorded from; bump together with
# `python -m tests.agents.samples` (which re-records them) and README.md.
CLAUDE_CODE = ("@anthropic-ai/claude-code", "2.1.332")
CODEX = ("@openai/codex", "0.171.0")
PINS = dict([CLAUDE_CODE, CODEX])

INSTALL_TIMEOUT = 900  # s: ~800 MB of native binaries on a cold npm cache
RUN_TIMEOUT = 120  # s: a turn against loopback takes about one
# Where a request off loopback goes instead: port 9 (discard) is closed here.
DEAD_PROXY = "http://127.0.0.1:9"
LOOPBACK = "127.0.0.1,localhost,::1"


class AgentsUnavailable(Exception):
    """npm is missing, or the registry can't be reached, or the install is broken."""


@dataclass(frozen=True)
class Installed:
    """The binaries of one install, and the versions they report."""

    claude: Path
    codex: Path
    versions: dict[str, str]


@dataclass(frozen=True)
class Run:
    """One agent process: what it was given and what it did."""

    agent: str
    command: list[str]
    exit_code: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float
    # Its working folder and HOME, gone once the run is over: kept so that
    # samples can put placeholders where the agent sent these paths.
    workdir: Path = field(repr=False)
    home: Path = field(repr=False)

    def describe(self) -> str:
        """For an assertion message: enough of the output to see what went wrong."""
        ended = "timed out" if self.exit_code is None else f"exit {self.exit_code}"
        return (f"{self.agent} {ended} after {self.seconds:.1f}s\n"
                f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}")


def install(cache: Path = CACHE) -> Installed:
    """The pinned agents, installing them first unless the stamp says they are there.

    Raises AgentsUnavailable with the reason when npm can't do it."""
    cache.mkdir(exist_ok=True)
    with _locked(cache / ".lock"):
        found = _stamped(cache)
        if found is not None:
            return found
        npm = shutil.which("npm")
        if npm is None:
            raise AgentsUnavailable("npm is not installed (apt-get install nodejs npm)")
        (cache / "package.json").write_text(json.dumps(
            {"name": "gwc-test-agents", "private": True, "dependencies": PINS}, indent=2) + "\n")
        (cache / ".stamp.json").unlink(missing_ok=True)
        command = [npm, "install", "--no-audit", "--no-fund", "--no-update-notifier",
                   "--loglevel=error", "--fetch-retries=1", "--fetch-timeout=60000"]
        try:
            done = subprocess.run(command, cwd=cache, capture_output=True, text=True,
                                  timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "NPM_CONFIG_UPDATE_NOTIFIER": "false"})
        except subprocess.TimeoutExpired as exc:
            raise AgentsUnavailable(f"npm install took over {INSTALL_TIMEOUT}s") from exc
        if done.returncode != 0:
            raise AgentsUnavailable(f"npm install failed ({done.returncode}): "
                                    + _npm_reason(done.stderr or done.stdout))
        _postinstall(cache)
        installed = _check(cache)
        (cache / ".stamp.json").write_text(json.dumps(
            {"pins": PINS, "versions": installed.versions}, indent=2) + "\n")
        return installed


def _stamped(cache: Path) -> Installed | None:
    """The install the stamp describes, if it is of today's pins and still there."""
    try:
        stamp = json.loads((cache / ".stamp.json").read_text())
    except (OSError, ValueError):
        return None
    installed = _binaries(cache, stamp.get("versions", {}))
    if stamp.get("pins") != PINS or not (installed.claude.exists() and installed.codex.exists()):
        return None
    return installed


def _binaries(cache: Path, versions: dict[str, str]) -> Installed:
    bin_ = cache / "node_modules" / ".bin"
    return Installed(bin_ / "claude", bin_ / "codex", versions)


def _postinstall(cache: Path) -> None:
    """Put Claude Code's native binary in place if npm didn't: its postinstall
    script does that, and an npm that ignores scripts (`ignore-scripts`, or a
    release that holds back scripts `allowScripts` does not name: npm 11 already
    warns) leaves a stub that only prints how to run the script by hand."""
    package = cache / "node_modules" / "@anthropic-ai" / "claude-code"
    stub = package / "bin" / "claude.exe"
    if stub.exists() and stub.stat().st_size < 1 << 20 and shutil.which("node"):
        subprocess.run(["node", "install.cjs"], cwd=package, capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL)


def _check(cache: Path) -> Installed:
    """Each binary runs and is the pinned release, not a stub or a stray copy."""
    installed = _binaries(cache, {})
    versions = {}
    for name, binary, (_, pinned) in (("claude", installed.claude, CLAUDE_CODE),
                                      ("codex", installed.codex, CODEX)):
        try:
            with tempfile.TemporaryDirectory(prefix="gwc-agent-") as home:
                done = subprocess.run([str(binary), "--version"], capture_output=True,
                                      text=True, timeout=60, stdin=subprocess.DEVNULL,
                                      env=_base_env(Path(home)))
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AgentsUnavailable(f"{name} --version did not run: {exc}") from exc
        version = done.stdout.strip()
        if done.returncode != 0 or pinned not in version:
            raise AgentsUnavailable(f"{name} --version said {_tail(version + done.stderr)!r}, "
                                    f"expected {pinned}")
        versions[name] = version
    return Installed(installed.claude, installed.codex, versions)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _npm_reason(text: str) -> str:
    """npm's error in a line: its first lines (code, then the cause) without the
    stack and the advice that follow."""
    lines = [line.removeprefix("npm error").strip() for line in text.splitlines()]
    said = [line for line in lines if line and not line.startswith(("at ", "{", "}"))]
    return " | ".join(said[:4]) or "no output"


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def _base_env(home: Path) -> dict[str, str]:
    """What every agent process gets: PATH (for node), a HOME and XDG folders of
    its own, loopback-only proxies, and nothing else from this machine."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8", "TERM": "dumb", "NO_COLOR": "1",
        "HOME": str(home), "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "ALL_PROXY": DEAD_PROXY,
        "http_proxy": DEAD_PROXY, "https_proxy": DEAD_PROXY, "all_proxy": DEAD_PROXY,
        "NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK,
    }


def claude_code(installed: Installed, base_url: str, key: str, prompt: str, *,
                model: str | None = None, bearer: bool = False,
                env: dict[str, str] | None = None, args: tuple[str, ...] = (),
                timeout: float = RUN_TIMEOUT, wrap: tuple[str, ...] = ()) -> Run:
    """`claude -p PROMPT` against `base_url` (the server's root: Claude Code adds
    /v1/messages). The key goes in x-api-key, or in `Authorization: Bearer` when
    `bearer` (ANTHROPIC_AUTH_TOKEN, as for a gateway's own keys); `model` is
    passed as `--model`, as a user naming the gateway's model would."""
    with tempfile.TemporaryDirectory(prefix="gwc-claude-") as folder:
        home, work = _folders(Path(folder))
        agent_env = {
            **_base_env(home),
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_AUTH_TOKEN" if bearer else "ANTHROPIC_API_KEY": key,
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
            **(env or {}),
        }
        command = [*wrap, str(installed.claude), "-p", prompt,
                   *(["--model", model] if model else []), *args]
        return _run("claude-code", command, agent_env, work, home, timeout)


def codex(installed: Installed, base_url: str, key: str, prompt: str, *,
          model: str | None = None, env: dict[str, str] | None = None,
          args: tuple[str, ...] = (), config: str = "", timeout: float = RUN_TIMEOUT,
          wrap: tuple[str, ...] = ()) -> Run:
    """`codex exec PROMPT` with `base_url` (up to and including /v1) as its model
    provider, speaking Responses, the key read from the variable its `env_key`
    names. `model` unset leaves Codex's own default; `config` is more TOML for
    config.toml. Retries are off so a failing server fails the run at once
    instead of after Codex's backoff."""
    with tempfile.TemporaryDirectory(prefix="gwc-codex-") as folder:
        home, work = _folders(Path(folder))
        codex_home = home / ".codex"
        codex_home.mkdir()
        (codex_home / "config.toml").write_text(
            (f"model = {json.dumps(model)}\n" if model else "")
            + 'model_provider = "gwc"\n'
            + config + "\n"
            + "[model_providers.gwc]\n"
            + 'name = "gwc"\n'
            + f"base_url = {json.dumps(base_url)}\n"
            + 'env_key = "GWC_AGENT_KEY"\n'
            + 'wire_api = "responses"\n'
            + "request_max_retries = 0\n"
            + "stream_max_retries = 0\n")
        agent_env = {**_base_env(home), "CODEX_HOME": str(codex_home), "GWC_AGENT_KEY": key,
                     **(env or {})}
        command = [*wrap, str(installed.codex), "exec", "--skip-git-repo-check",
                   "--disable", "plugins", "--disable", "remote_plugin", "--disable", "apps",
                   "-c", "analytics.enabled=false", *args, prompt]
        return _run("codex", command, agent_env, work, home, timeout)


def _folders(folder: Path) -> tuple[Path, Path]:
    """A HOME and an empty working folder, the agent's whole world."""
    home, work = folder / "home", folder / "work"
    home.mkdir()
    work.mkdir()
    return home, work


def _run(agent: str, command: list[str], env: dict[str, str], work: Path, home: Path,
         timeout: float) -> Run:
    """Run to the end or to the timeout; at the timeout the agent's whole process
    group goes (Codex's node wrapper starts the real binary as a child)."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        code = None
    return Run(agent, command, code, stdout, stderr, time.monotonic() - started, work, home)


def main() -> int:
    """Install (or find) the pinned agents and say which; 1 with the reason if not."""
    try:
        installed = install()
    except AgentsUnavailable as exc:
        print(f"agents: {exc}", file=sys.stderr)
        return 1
    for name, version in installed.versions.items():
        print(f"agents: {name} {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
