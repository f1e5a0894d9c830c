"""Ground truth: what the pinned agents send, saved as JSON for the conversion tests.

Each sample is one request as the recorder got it from a real agent's
one-turn run, with the key, the host's port and the run's temporary paths
replaced by placeholders, so that a converter can be unit-tested on exactly
what Claude Code or Codex sends without installing either:

    body = samples.load("claude_code_messages")["body"]

Files are named AGENT_ROUTE[_VARIANT].json: the variant is how the agent was
run (`named_model`: the user named a model, as one of a gateway's would be;
without it, the agent's own default model). `test_agents.py` checks that a
live run still has each sample's shape; after bumping the pins, re-record
them all with `.venv/bin/python -m tests.agents.samples`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.agents import harness
from tests.agents.recorder import Recorded, recording

SAMPLES = Path(__file__).resolve().parent / "samples"
KEY = "sk-agent-test-0123456789"  # what the recorded runs are given, replaced in the samples
PROMPT = "Say hello."
NAMED_MODEL = "gwc-test-model"  # the name a gateway's policy would give its model
REDACTED = "<redacted>"
SECRET_HEADERS = frozenset({"x-api-key", "authorization", "api-key"})
# Headers whose values are of the run, not of the agent: the recorder's port
# and the body's length (which the placeholders change anyway).
RUN_HEADERS = {"host": "127.0.0.1:<port>", "content-length": "<length>"}


@dataclass(frozen=True)
class Variant:
    """One way of running an agent; its samples are named PREFIX_ROUTE SUFFIX."""

    prefix: str
    agent: str
    model: str | None
    suffix: str = ""

    @property
    def name(self) -> str:
        return self.prefix + self.suffix

    def run(self, installed: harness.Installed, url: str) -> harness.Run:
        if self.agent == "claude-code":
            return harness.claude_code(installed, url, KEY, PROMPT, model=self.model)
        return harness.codex(installed, url + "/v1", KEY, PROMPT, model=self.model)


VARIANTS = (
    Variant("claude_code", "claude-code", None),
    Variant("claude_code", "claude-code", NAMED_MODEL, "_named_model"),
    Variant("codex", "codex", None),
    Variant("codex", "codex", NAMED_MODEL, "_named_model"),
)


def record(variant: Variant, installed: harness.Installed) -> tuple[harness.Run, list[Recorded]]:
    """One run of the agent against a recorder of its own."""
    with recording() as (url, kept):
        run = variant.run(installed, url)
        return run, kept.snapshot()


def file_names(variant: Variant, requests: list[Recorded]) -> list[str]:
    """A sample's name for each request: agent, route, then variant; a route
    called twice gets _2, _3, ..."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for request in requests:
        route = request.path.split("?")[0].strip("/").removeprefix("v1/").replace("/", "_")
        stem = f"{variant.prefix}_{route or 'root'}"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem + (f"_{seen[stem]}" if seen[stem] > 1 else "") + variant.suffix)
    return names


def scrub(request: Recorded, run: harness.Run) -> dict[str, Any]:
    """The request with the key, the port and the run's own paths replaced."""
    headers = {name: REDACTED if name in SECRET_HEADERS else RUN_HEADERS.get(name, value)
               for name, value in request.headers.items()}
    replace = _replacer({KEY: REDACTED, str(run.workdir): "<workdir>", str(run.home): "<home>",
                         # Claude Code's name for the folder's project: every mark a dash
                         re.sub(r"[^A-Za-z0-9]", "-", str(run.workdir)): "<workdir-name>"})
    scrubbed: dict[str, Any] = _walk({"method": request.method, "path": request.path,
                                      "headers": headers, "body": request.body}, replace)
    return scrubbed


def _replacer(table: dict[str, str]) -> Callable[[str], str]:
    pattern = re.compile("|".join(re.escape(k) for k in sorted(table, key=len, reverse=True)))
    return lambda text: pattern.sub(lambda m: table[m.group(0)], text)


def _walk(value: Any, replace: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return replace(value)
    if isinstance(value, list):
        return [_walk(v, replace) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, replace) for k, v in value.items()}
    return value


def save(variant: Variant, run: harness.Run, requests: list[Recorded],
         installed: harness.Installed) -> list[Path]:
    """Write one sample per request, with how it was recorded."""
    SAMPLES.mkdir(exist_ok=True)
    version = installed.versions.get("claude" if variant.agent == "claude-code" else "codex")
    written = []
    names = file_names(variant, requests)
    for order, (name, request) in enumerate(zip(names, requests, strict=True)):
        command = [Path(run.command[0]).name, *run.command[1:]]
        sample = {"recorded_with": {"agent": variant.agent, "version": version,
                                    "command": command, "model": variant.model,
                                    "variant": variant.name, "order": order},
                  **scrub(request, run)}
        path = SAMPLES / f"{name}.json"
        path.write_text(json.dumps(sample, indent=1, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def load(name: str) -> dict[str, Any]:
    """A sample by name (no .json): method, path, headers, body, recorded_with."""
    loaded: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return loaded


def of(variant: Variant) -> list[dict[str, Any]]:
    """The samples of one variant's run, in the order the agent sent them."""
    found = [json.loads(path.read_text()) for path in SAMPLES.glob("*.json")]
    return sorted((s for s in found if s["recorded_with"]["variant"] == variant.name),
                  key=lambda s: int(s["recorded_with"]["order"]))


def shape(request: dict[str, Any]) -> dict[str, Any]:
    """What must not change between two runs of the same release: the route, the
    header names, the body's keys, its message roles and its tools' names (the
    texts hold dates, ids and paths)."""
    body: dict[str, Any] = request["body"] if isinstance(request["body"], dict) else {}
    turns: list[Any] = body.get("messages") or body.get("input") or []
    return {
        "route": f"{request['method']} {request['path']}",
        "headers": sorted(request["headers"]),
        "body": sorted(body),
        "roles": [m.get("role", m.get("type")) for m in turns if isinstance(m, dict)],
        "tools": _tool_names(body.get("tools", [])),
    }


def _tool_names(tools: list[Any]) -> list[str]:
    names = []
    for tool in tools:
        name = tool.get("name") or tool.get("type", "?")
        if tool.get("type") == "namespace":
            names += [f"{name}.{n}" for n in _tool_names(tool.get("tools", []))]
        else:
            names.append(name)
    return names


def main() -> int:
    """Re-record every sample from the pinned agents."""
    try:
        installed = harness.install()
    except harness.AgentsUnavailable as exc:
        print(f"samples: {exc}", file=sys.stderr)
        return 1
    for old in SAMPLES.glob("*.json"):
        old.unlink()
    for variant in VARIANTS:
        run, requests = record(variant, installed)
        if run.exit_code != 0:
            print(f"samples: {variant.name}: {run.describe()}", file=sys.stderr)
            return 1
        for path in save(variant, run, requests, installed):
            print(f"samples: {path.relative_to(harness.ROOT)} ({run.seconds:.1f}s run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
