"""Quotas, budgets, the cache and the ledger on the Messages and Responses routes, as on chat.

The gateways of test_limits, in front of its OpenAI and Anthropic fakes, with
virtual keys presented as Claude Code presents them (`x-api-key`).
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.runtime import test_limits
from tests.runtime.test_limits import ROUTE, Running

run, upstreams = test_limits.run, test_limits.upstreams  # the limits tests' gateway fixtures


def sdk(gw: Running, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def ask(client: anthropic.Anthropic, model: str = "ok", **extra: Any) -> Any:
    return client.messages.with_raw_response.create(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "hello there"}],
        **extra)


def test_a_requests_quota_counts_messages_and_refuses_in_anthropics_shape(run: Any) -> None:
    with run(ROUTE + 'quota per key when endpoint == "messages" { requests = 2 per minute }\n'
             ) as gw:
        _, key = gw.new_key()
        client = sdk(gw, key)
        first = ask(client)
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        ask(client, "claude-cached")
        with pytest.raises(anthropic.RateLimitError) as refused:
            ask(client)
        assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert refused.value.response.headers["retry-after"]
        assert gw.chat(key).status_code == 200  # chat is not in this quota


def test_spend_is_priced_from_each_apis_own_usage(run: Any) -> None:
    with run(ROUTE + "budget per key { limit = $100 per day }\n") as gw:
        _, key = gw.new_key()
        client = sdk(gw, key)
        ask(client, "claude-cached")  # native: Anthropic's cache reads and writes
        with client.messages.stream(model="claude-cached", max_tokens=50, messages=[
                {"role": "user", "content": "hello"}]) as stream:
            stream.get_final_message()
        ask(client, "ok")  # translated: OpenAI's usage, back as Anthropic's
        rows = gw.spend()
        assert [(r["model"], r["endpoint"]) for r in rows] == [
            ("claude-cached", "messages"), ("claude-cached", "messages"), ("ok", "messages")]
        # 50 fresh + 1,000 written + 3,000 read at $3, $3.75, $0.3; 400 out at $15 (per 1M)
        claude = (50 * 3 + 1000 * 3.75 + 3000 * 0.3 + 400 * 15) / 1e6
        assert rows[0]["usd"] == pytest.approx(claude) and rows[1]["usd"] == pytest.approx(claude)
        assert rows[0]["cached"] == 3000 and rows[0]["prompt"] == 4050
        assert rows[2]["usd"] > 0
        charged = gw.charged()
        assert list(charged.values()) == [pytest.approx(sum(r["usd"] for r in rows))], charged


@pytest.mark.parametrize("model", ["claude-cached", "ok"])
def test_a_cached_message_is_served_again_plain_and_streamed(run: Any, upstreams: Any,
                                                             model: str) -> None:
    policy = ROUTE + 'cache when endpoint == "messages" { mode = exact; ttl = 10m }\n'
    with run(policy) as gw:
        _, key = gw.new_key()
        client = sdk(gw, key)
        calls = sum(s for script in upstreams.scripts for s in script.calls.values())
        first = ask(client, model)
        again = ask(client, model)
        assert first.headers["x-gw-cache"] == "miss" and again.headers["x-gw-cache"] == "hit"
        kept, served = first.parse(), again.parse()
        assert served.content == kept.content and served.id != kept.id
        with client.messages.stream(model=model, max_tokens=50, messages=[
                {"role": "user", "content": "hello there"}]) as stream:
            replayed = stream.get_final_message()
        assert [b.model_dump()["text"] for b in replayed.content] == \
            [b.model_dump()["text"] for b in kept.content]
        assert sum(s for script in upstreams.scripts for s in script.calls.values()) \
            == calls + 1
        assert [line["cache"] for line in gw.lines()] == ["miss", "hit", "hit"]
        count = client.messages.count_tokens(model=model, messages=[
            {"role": "user", "content": "hello there"}])
        assert count.input_tokens > 0  # counted, never served from the cache


def test_responses_are_counted_priced_and_cached_as_chat_is(run: Any, upstreams: Any) -> None:
    policy = ROUTE + 'quota per key when endpoint == "responses" { requests = 3 per minute }\n' \
        + 'cache when endpoint == "responses" { mode = exact; ttl = 10m }\n'
    with run(policy) as gw:
        _, key = gw.new_key()
        with openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as client:
            calls = sum(upstreams.scripts[0].calls.values())
            first = client.responses.with_raw_response.create(model="ok", input="hello")
            again = client.responses.with_raw_response.create(model="ok", input="hello")
            assert first.headers["x-gw-cache"] == "miss" and again.headers["x-gw-cache"] == "hit"
            assert again.parse().output_text == first.parse().output_text
            assert again.parse().id != first.parse().id
            with client.responses.stream(model="ok", input="hello") as stream:
                assert stream.get_final_response().output_text == first.parse().output_text
            assert sum(upstreams.scripts[0].calls.values()) == calls + 1
            with pytest.raises(openai.RateLimitError):
                client.responses.create(model="ok", input="hello")
        [row] = gw.spend()
        assert row["endpoint"] == "responses" and row["usd"] > 0
        assert [line["cache"] for line in gw.lines()] == ["miss", "hit", "hit", "bypass"]
