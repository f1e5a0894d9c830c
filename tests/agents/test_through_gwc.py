"""The real agents through gwc: each finishes a turn, and gwc counts it as any request.

Claude Code speaks Messages: to an Anthropic upstream its request goes as it
wrote it, to an OpenAI one it is translated. Codex speaks Responses, with
hosted tools (`web_search`) that only OpenAI runs, so it goes to an OpenAI
upstream, as it wrote it. The gateways are test_limits',
in front of its fakes, with virtual keys and a budget, so the test reads the
route, the cost and the budget's charge the way an operator would.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.agents import harness
from tests.runtime import test_limits

run, upstreams = test_limits.run, test_limits.upstreams  # the limits tests' gateway fixtures

POLICY = """
model claude-plain { provider = an; name = "plain"; input = $3/1M; output = $15/1M }
route {
  when model == "claude-sonnet-4-5" -> claude-plain
  when model == "gpt-for-claude"    -> ok
  when model == "gpt-for-codex"     -> ok
}
budget per key { limit = $10 per day }
"""


@pytest.mark.parametrize(("model", "answered_by", "bearer"), [
    ("claude-sonnet-4-5", "claude-plain", True),  # passed through to Anthropic
    ("gpt-for-claude", "ok", False),  # translated to chat completions
])
def test_claude_code_finishes_a_turn_through_gwc(agents: harness.Installed, run: Any,
                                                  model: str, answered_by: str,
                                                  bearer: bool) -> None:
    with run(POLICY) as gw:
        _, key = gw.new_key("agents")
        done = harness.claude_code(agents, gw.url, key, "Say hello.", model=model,
                                   bearer=bearer)
        assert done.exit_code == 0, done.describe()
        assert "hello from" in done.stdout, done.describe()
        [line] = [line for line in gw.lines() if line["path"] == "/v1/messages"]
        assert line["status"] == 200 and line["model"] == answered_by
        rule = next(n for n, text in enumerate(gw.policy.read_text().splitlines(), start=1)
                    if f'"{model}"' in text)
        assert line["rule"] == f"policy.gw:{rule}"
        assert line["cost"] > 0
        assert list(gw.charged().values()) == [pytest.approx(line["cost"])]


def test_codex_finishes_a_turn_through_gwc(agents: harness.Installed, run: Any) -> None:
    with run(POLICY) as gw:
        _, key = gw.new_key("agents")
        done = harness.codex(agents, gw.url + "/v1", key, "Say hello.", model="gpt-for-codex")
        assert done.exit_code == 0, done.describe()
        assert "hello from ok" in done.stdout, done.describe()
        lines = [line for line in gw.lines() if line["path"] == "/v1/responses"]
        assert lines and all(line["status"] == 200 and line["model"] == "ok"
                             for line in lines)
        rule = next(n for n, text in enumerate(gw.policy.read_text().splitlines(), start=1)
                    if '"gpt-for-codex"' in text)
        assert {line["rule"] for line in lines} == {f"policy.gw:{rule}"}
        assert all(line["cost"] > 0 for line in lines)
        assert list(gw.charged().values()) == [pytest.approx(sum(line["cost"]
                                                                 for line in lines))]
