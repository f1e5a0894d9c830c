"""Cost as providers bill it, end to end: cached and reasoning tokens, plain and streamed.

The fakes answer the model `cached` with a usage that has every detail a
bill depends on (tests/fakes: `CACHED_USAGE`): OpenAI's cached tokens inside
`prompt_tokens` and reasoning tokens inside `completion_tokens`; Anthropic's
cache reads and writes beside `input_tokens`. Each figure below is worked out
by hand from the model's prices in tests/runtime/test_limits.py.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.fakes import API_KEY
from tests.runtime import test_limits as harness
from tests.runtime.test_limits import ROUTE, Upstreams

run, upstreams = harness.run, harness.upstreams  # the harness's fixtures, used here too

# gpt-cached: $2/1M fresh input, $0.5/1M cached, $8/1M output (reasoning is output)
OPENAI_BILL = (2000 - 1500) * 2e-6 + 1500 * 0.5e-6 + 300 * 8e-6
# claude-cached: $3/1M input, $0.3/1M cache read, $3.75/1M cache write, $15/1M output
ANTHROPIC_BILL = 50 * 3e-6 + 3000 * 0.3e-6 + 1000 * 3.75e-6 + 400 * 15e-6
MESSAGES = [{"role": "user", "content": "what is in the cache?"}]


def test_the_sdks_read_the_fakes_cache_and_reasoning_usage(upstreams: Upstreams) -> None:
    o = openai.OpenAI(base_url=upstreams.openai + "/v1", api_key=API_KEY, max_retries=0)
    usage = o.chat.completions.create(model="cached", messages=MESSAGES).usage  # type: ignore[arg-type]
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.completion_tokens_details is not None
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens,
            usage.completion_tokens, usage.completion_tokens_details.reasoning_tokens) == \
        (2000, 1500, 300, 200)
    a = anthropic.Anthropic(base_url=upstreams.anthropic, api_key=API_KEY, max_retries=0)
    with a.messages.stream(model="cached", max_tokens=500, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message().usage
    assert (final.input_tokens, final.cache_read_input_tokens,
            final.cache_creation_input_tokens, final.output_tokens) == (50, 3000, 1000, 400)


@pytest.mark.parametrize(("model", "bill", "prompt", "cached"), [
    ("gpt-cached", OPENAI_BILL, 2000, 1500),
    ("claude-cached", ANTHROPIC_BILL, 50 + 3000 + 1000, 3000)])
def test_a_plain_answer_is_charged_as_the_provider_bills_it(
        run: Any, model: str, bill: float, prompt: int, cached: int) -> None:
    with run(ROUTE, auth="none") as gw:
        reply = gw.chat(model=model, max_tokens=500)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-gw-cost"] == f"{bill:.8f}"
        [row] = gw.spend()
        assert (row["prompt"], row["cached"]) == (prompt, cached)
        assert row["usd"] == pytest.approx(bill, rel=1e-12)


@pytest.mark.parametrize(("model", "bill"), [("gpt-cached", OPENAI_BILL),
                                             ("claude-cached", ANTHROPIC_BILL)])
def test_a_streamed_answer_is_charged_as_the_provider_bills_it(
        run: Any, model: str, bill: float) -> None:
    with run(ROUTE + "budget global { limit = $1 per day }\n", auth="none") as gw:
        status, events = gw.stream(model=model, stream_options={"include_usage": True})
        assert status == 200 and events.endswith("data: [DONE]\n\n")
        [line] = gw.lines()
        assert line["cost"] == pytest.approx(bill, rel=1e-12)
        [row] = gw.spend()
        assert row["usd"] == pytest.approx(bill, rel=1e-12)
        [counter] = gw.charged()
        assert gw.spent_on(counter, 1.0) == pytest.approx(bill, rel=1e-9)

