"""The real agents through gwc: each finishes a turn, and gwc counts it as any request.

Claude Code speaks Messages: to an Anthropic upstream its request goes as it
wrote it, to an OpenAI one it is translated. The gateways are test_limits',
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
