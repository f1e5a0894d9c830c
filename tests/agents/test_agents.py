"""The real agents finish a turn against the recorder, and still send what the samples show.

The samples are the ground truth the conversion tests are written against; if
a run of the pinned release no longer has a sample's shape (its routes, header
names, body keys, roles and tools), the samples are stale and so are the tests
built on them.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.agents import harness, samples
from tests.agents.recorder import ANSWER, Recording


@pytest.mark.parametrize("variant", samples.VARIANTS, ids=lambda v: v.name)
def test_the_agent_finishes_a_turn_and_sends_what_its_samples_show(
        variant: samples.Variant, agents: harness.Installed) -> None:
    run, requests = samples.record(variant, agents)
    assert run.exit_code == 0, run.describe()
    assert ANSWER in run.stdout, run.describe()
    live = [samples.shape(samples.scrub(r, run)) for r in requests]
    saved = [samples.shape(s) for s in samples.of(variant)]
    assert live == saved, "the samples are stale: python -m tests.agents.samples"


def test_claude_code_sends_a_bearer_token_and_nothing_of_the_machines(
        agents: harness.Installed, recorder: tuple[str, Recording],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A gateway's virtual key arrives as ANTHROPIC_AUTH_TOKEN; keys and URLs set
    # on this machine must not reach the run.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-the-machines-own")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    url, recording = recorder
    run = harness.claude_code(agents, url, "gwc-virtual-key", "Say hello.", bearer=True)
    assert run.exit_code == 0, run.describe()
    sent = recording.find("POST", "/v1/messages")[0].headers
    assert sent["authorization"] == "Bearer gwc-virtual-key"
    assert "x-api-key" not in sent


def test_a_run_that_gets_no_answer_ends_at_its_timeout(agents: harness.Installed) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        run = harness.codex(agents, url + "/v1", "k", "Say hello.", timeout=2)
    assert run.exit_code is None
    assert 2 <= run.seconds < 15


@pytest.mark.parametrize("agent", ["claude-code", "codex"])
def test_the_agent_connects_to_nothing_but_the_server_it_is_given(
        agent: str, agents: harness.Installed, recorder: tuple[str, Recording],
        tmp_path: Path) -> None:
    # The fence (a dead proxy) would turn a call home into a connection to
    # 127.0.0.1:9, so every connection but the recorder's is a failure here.
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    if subprocess.run(["strace", "-o", "/dev/null", "true"], capture_output=True).returncode:
        pytest.skip("strace may not trace here (ptrace is not permitted)")
    url, _ = recorder
    trace = tmp_path / "connect.trace"
    wrap = ("strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace))
    if agent == "claude-code":
        run = harness.claude_code(agents, url, "k", "Say hello.", wrap=wrap)
    else:
        run = harness.codex(agents, url + "/v1", "k", "Say hello.", wrap=wrap)
    assert run.exit_code == 0, run.describe()
    port = url.rsplit(":", 1)[1]
    inet = re.findall(r"connect\(\d+, \{sa_family=AF_INET6?, (.*?)\}", trace.read_text())
    assert inet, "strace saw no connection at all"
    elsewhere = [a for a in inet if f"htons({port})" not in a or "127.0.0.1" not in a]
    assert not elsewhere, elsewhere
