"""The adapters at their boundary, against loopback fakes and fed junk directly.

Whatever an upstream sends leaves an adapter as `UpstreamError` (sorted into
status, timeout, connect and malformed) or as an answer; whatever a client
sends that a translation cannot express leaves as a 400 naming the field.
The four time bounds are kept: connect, a stream's first byte and idle gaps,
a plain call's total.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest

from compiler.compiled import Model, Provider, Timeouts
from runtime.errors import GatewayError, UpstreamError
from runtime.formats import messages as anthropic_format
from runtime.providers import ADAPTERS, gemini
from runtime.providers.base import Body
from runtime.providers.mock import Mock
from tests.fakes import API_KEY, Script, anthropic_fake, free_port, gemini_fake, serving
from tests.fakes.faults import Faults, resume_text, serving_faults

HI: Body = {"messages": [{"role": "user", "content": "hi"}]}
FAST = Timeouts(connect=1.0, first_byte=1.0, idle=1.0, total=2.0)


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[str, Faults]]:
    with serving_faults(Faults(first_token_delay=0.4, stall_after=2, hold=5)) as served:
        yield served


@pytest.fixture(scope="module")
def claude() -> Iterator[str]:
    with serving(anthropic_fake.app(Script())) as url:
        yield url


@pytest.fixture(scope="module")
def google() -> Iterator[str]:
    with serving(gemini_fake.app(Script())) as url:
        yield url + "/v1beta"


@dataclass
class Streamed:
    chunks: list[Body] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # since the call began
    error: UpstreamError | None = None
    failed_at: float = 0.0

    @property
    def text(self) -> str:
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in self.chunks
                       if c["choices"])


def provider(kind: str, url: str, **settings: Any) -> Provider:
    return Provider("up", kind, **{"base_url": url, "api_key": API_KEY, **settings})


def complete(kind: str, url: str, model: str, body: Body = HI, timeouts: Timeouts = FAST,
             **settings: Any) -> Body:
    async def go() -> Body:
        async with aiohttp.ClientSession() as session:
            adapter = ADAPTERS[kind](provider(kind, url, **settings), session, {})
            return await adapter.complete(Model(model, "up", model), body, timeouts)
    return asyncio.run(go())


def stream(kind: str, url: str, model: str, body: Body = HI, timeouts: Timeouts = FAST,
           pause: float = 0.0, prefill: bool = False, **settings: Any) -> Streamed:
    """Read a stream to its end or its failure; `pause` is how long the consumer holds
    each chunk (a slow client)."""
    out = Streamed()

    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            adapter = ADAPTERS[kind](provider(kind, url, **settings), session, {})
            began = time.monotonic()
            chunks = adapter.stream(Model(model, "up", model, prefill=prefill), body, timeouts)
            try:
                async for chunk in chunks:
                    out.chunks.append(chunk)
                    out.times.append(time.monotonic() - began)
                    if pause:
                        await asyncio.sleep(pause)
            except UpstreamError as failure:
                out.error, out.failed_at = failure, time.monotonic() - began
    asyncio.run(go())
    return out


def failure_of(kind: str, url: str, model: str, body: Body = HI, timeouts: Timeouts = FAST,
               **settings: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as failed:
        complete(kind, url, model, body, timeouts, **settings)
    return failed.value


# ------------------------------------------------------------ OpenAI, every fault


def test_an_ordinary_answer_plain_and_streamed(fake: tuple[str, Faults]) -> None:
    url = fake[0] + "/v1"
    answer = complete("openai", url, "ok")
    assert answer["choices"][0]["message"]["content"] == "hello from ok"
    streamed = stream("openai", url, "ok")
    assert streamed.error is None and streamed.text == "hello from ok"
    assert streamed.chunks[-1]["usage"]["total_tokens"] == 12
    assert fake[1].calls[-1].body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(("model", "status", "retry_after"), [
    ("429-retry-after", 429, 1.0), ("429", 429, None), ("500-once", 500, None),
    ("503", 503, None),
])
def test_error_statuses(fake: tuple[str, Faults], model: str, status: int,
                        retry_after: float | None) -> None:
    failure = failure_of("openai", fake[0] + "/v1", model)
    assert (failure.kind, failure.status, failure.retry_after) == ("status", status, retry_after)
    assert failure.worth_falling_back and failure.counts_against_upstream


def test_retry_after_as_an_http_date(fake: tuple[str, Faults]) -> None:
    failure = failure_of("openai", fake[0] + "/v1", "429-retry-after-date")
    assert failure.retry_after is not None and 0 <= failure.retry_after <= 2


def test_a_reset_before_the_headers_is_connect(fake: tuple[str, Faults]) -> None:
    assert failure_of("openai", fake[0] + "/v1", "reset").kind == "connect"
    assert stream("openai", fake[0] + "/v1", "reset").error.kind == "connect"  # type: ignore[union-attr]


def test_a_refused_connection_is_connect() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert failure_of("openai", url, "ok").kind == "connect"
    assert stream("openai", url, "ok").error.kind == "connect"  # type: ignore[union-attr]


def test_a_silent_upstream_times_out_within_total_or_first_byte(
        fake: tuple[str, Faults]) -> None:
    started = time.monotonic()
    failure = failure_of("openai", fake[0] + "/v1", "silent",
                         timeouts=Timeouts(connect=1, first_byte=5, idle=5, total=0.3))
    assert failure.kind == "timeout" and 0.3 <= time.monotonic() - started < 1
    streamed = stream("openai", fake[0] + "/v1", "silent",
                      timeouts=Timeouts(connect=1, first_byte=0.3, idle=5, total=5))
    assert streamed.error is not None and streamed.error.kind == "timeout"
    assert 0.3 <= streamed.failed_at < 1


def test_a_plain_answer_that_stalls_in_its_body_times_out_within_total(
        fake: tuple[str, Faults]) -> None:
    started = time.monotonic()
    failure = failure_of("openai", fake[0] + "/v1", "stall",
                         timeouts=Timeouts(connect=1, first_byte=5, idle=5, total=0.3))
    assert failure.kind == "timeout" and time.monotonic() - started < 1


def test_the_first_event_is_bounded_by_first_byte(fake: tuple[str, Faults]) -> None:
    late = stream("openai", fake[0] + "/v1", "late",
                  timeouts=Timeouts(connect=1, first_byte=0.2, idle=5, total=5))
    assert late.error is not None and late.error.kind == "timeout" and not late.chunks
    assert 0.2 <= late.failed_at < 0.4  # the headers came at once; the first event did not
    patient = stream("openai", fake[0] + "/v1", "late",
                     timeouts=Timeouts(connect=1, first_byte=1, idle=0.1, total=5))
    assert patient.error is None and patient.text == "hello from late"
    assert patient.times[0] >= 0.4  # idle starts only after the first event


def test_a_stream_that_stalls_fails_within_the_idle_bound(fake: tuple[str, Faults]) -> None:
    streamed = stream("openai", fake[0] + "/v1", "stall",
                      timeouts=Timeouts(connect=1, first_byte=5, idle=0.25, total=60))
    assert len(streamed.chunks) == 2 and streamed.text == "hello"
    assert streamed.error is not None and streamed.error.kind == "timeout"
    assert 0.25 <= streamed.failed_at - streamed.times[-1] < 0.5
    assert "next event" in streamed.error.message


def test_a_slow_consumer_is_not_the_upstream_stalling(fake: tuple[str, Faults]) -> None:
    streamed = stream("openai", fake[0] + "/v1", "ok", pause=0.15,
                      timeouts=Timeouts(connect=1, first_byte=1, idle=0.1, total=5))
    assert streamed.error is None and streamed.text == "hello from ok"


def test_a_malformed_chunk_mid_stream_is_skipped(fake: tuple[str, Faults]) -> None:
    streamed = stream("openai", fake[0] + "/v1", "bad-chunk")
    assert streamed.error is None and streamed.text == "hello from bad-chunk"
    assert streamed.chunks[-1]["usage"]["completion_tokens"] == 3


def test_a_stream_without_done_ends_cleanly_after_finish_and_usage(
        fake: tuple[str, Faults]) -> None:
    streamed = stream("openai", fake[0] + "/v1", "no-done")
    assert streamed.error is None and streamed.text == "hello from no-done"
    assert streamed.chunks[-1]["usage"]["total_tokens"] == 12
    assert streamed.times[-1] < 0.5


def test_a_stream_cut_before_its_finish_is_still_a_failure(fake: tuple[str, Faults]) -> None:
    streamed = stream("openai", fake[0] + "/v1", "resume-cut")
    assert streamed.text == resume_text(40)
    assert streamed.error is not None and streamed.error.kind == "connect"


def test_a_context_overflow_and_a_content_filter(fake: tuple[str, Faults]) -> None:
    too_long = failure_of("openai", fake[0] + "/v1", "too-long")
    assert (too_long.status, too_long.code) == (400, "context_length_exceeded")
    assert too_long.too_long and too_long.worth_falling_back
    assert not too_long.counts_against_upstream
    refused = failure_of("openai", fake[0] + "/v1", "filtered")
    assert (refused.status, refused.code) == (400, "content_filter")
    assert "violence" in refused.message and "content management policy" in refused.message
    assert not refused.worth_falling_back


def test_an_echoed_key_is_scrubbed(fake: tuple[str, Faults]) -> None:
    failure = failure_of("openai", fake[0] + "/v1", "leak-key")
    assert failure.status == 401 and API_KEY not in failure.message
    assert "[REDACTED]" in failure.message
    wrong = failure_of("openai", fake[0] + "/v1", "ok",
                       api_key="sk-live-0123456789abcdefghijklmnop")
    assert "sk-" not in wrong.message and "[REDACTED]" in wrong.message


@pytest.mark.parametrize("model", ["junk-text", "junk-truncated", "junk-array",
                                   "junk-object"])
def test_junk_answers_are_malformed(fake: tuple[str, Faults], model: str) -> None:
    failure = failure_of("openai", fake[0] + "/v1", model)
    assert failure.kind == "malformed" and failure.worth_falling_back


def test_a_stream_without_a_valid_event_is_malformed(fake: tuple[str, Faults]) -> None:
    streamed = stream("openai", fake[0] + "/v1", "junk-sse")
    assert not streamed.chunks
    assert streamed.error is not None and streamed.error.kind == "malformed"


def test_a_prefill_model_is_asked_to_continue_the_assistant_message(
        fake: tuple[str, Faults]) -> None:
    prefix = resume_text(40)
    body = {"messages": [*HI["messages"], {"role": "assistant", "content": prefix}]}
    streamed = stream("openai_compatible", fake[0] + "/v1", "resume-continue", body,
                      prefill=True)
    assert streamed.error is None and prefix + streamed.text == resume_text()
    assert fake[1].calls[-1].body["continue_final_message"] is True
    assert fake[1].calls[-1].body["add_generation_prompt"] is False
    assert "stream_options" not in fake[1].calls[-1].body  # not every compatible server takes it
    plain = stream("openai_compatible", fake[0] + "/v1", "resume-continue", body)
    assert plain.text == resume_text()  # without prefill, a new answer
    assert "continue_final_message" not in fake[1].calls[-1].body


def test_health_checks_follow_the_upstream(fake: tuple[str, Faults]) -> None:
    async def check(url: str, name: str = "ok") -> None:
        async with aiohttp.ClientSession() as session:
            await ADAPTERS["openai"](provider("openai", url), session, {}).check_health(
                Model(name, "up", name), 1.0)
    asyncio.run(check(fake[0] + "/v1"))
    fake[1].take_down("flappy")
    try:
        with pytest.raises(UpstreamError) as down:  # the check asks about the model itself
            asyncio.run(check(fake[0] + "/v1", "flappy"))
        assert down.value.status == 503
        asyncio.run(check(fake[0] + "/v1"))
    finally:
        fake[1].bring_back()
    with pytest.raises(UpstreamError) as refused:
        asyncio.run(check(f"http://127.0.0.1:{free_port()}/v1"))
    assert refused.value.kind == "connect"


# ------------------------------------------------------------- Anthropic, Gemini


def test_anthropic_sorts_its_errors(claude: str) -> None:
    too_long = failure_of("anthropic", claude, "too-long")
    assert (too_long.status, too_long.code) == (400, "context_length_exceeded")
    overloaded = failure_of("anthropic", claude, "overloaded")
    assert overloaded.status == 529 and overloaded.worth_falling_back
    assert failure_of("anthropic", claude, "junk").kind == "malformed"


def test_anthropic_streams_without_message_stop_and_past_a_bad_event(claude: str) -> None:
    unstopped = stream("anthropic", claude, "no-stop")
    assert unstopped.error is None and unstopped.text == "hello from no-stop"
    assert unstopped.chunks[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 6,
                                             "total_tokens": 18}
    bad = stream("anthropic", claude, "bad-event")
    assert bad.error is None and bad.text == "hello from bad-event"
    cut = stream("anthropic", claude, "cut")
    assert cut.error is not None and cut.error.kind == "connect"


def test_gemini_sorts_its_errors(google: str) -> None:
    too_long = failure_of("gemini", google, "too-long")
    assert (too_long.status, too_long.code) == (400, "context_length_exceeded")
    blocked = failure_of("gemini", google, "blocked")
    assert (blocked.status, blocked.code) == (400, "content_filter")
    assert "SAFETY" in blocked.message and not blocked.worth_falling_back
    streamed_block = stream("gemini", google, "blocked")
    assert streamed_block.error is not None and streamed_block.error.code == "content_filter"
    exhausted = failure_of("gemini", google, "exhausted")
    assert exhausted.status == 429 and exhausted.retry_after == 7.0


def test_gemini_streams_cut_after_their_finish_and_past_a_bad_event(google: str) -> None:
    finished = stream("gemini", google, "cut-after-finish")
    assert finished.error is None and finished.text == "hello from cut-after-finish"
    assert finished.chunks[-1]["usage"]["total_tokens"] == 12
    bad = stream("gemini", google, "bad-event")
    assert bad.error is None and bad.text == "hello from bad-event"
    cut = stream("gemini", google, "cut")
    assert cut.error is not None and cut.error.kind == "connect"


# ------------------------------------------------------------------ the mock


def test_the_mock_keeps_the_bounds() -> None:
    async def go(timeouts: Timeouts) -> tuple[str | None, str | None]:
        mock = Mock(Provider("m", "mock", latency=0.2), None, {})
        model = Model("a", "m", "a")
        outcomes: list[str | None] = []
        for call in (lambda: mock.complete(model, HI, timeouts),
                     lambda: anext(mock.stream(model, HI, timeouts))):
            try:
                await call()
                outcomes.append(None)
            except UpstreamError as failure:
                outcomes.append(failure.kind)
        return outcomes[0], outcomes[1]
    assert asyncio.run(go(Timeouts(connect=1, first_byte=0.05, idle=1, total=1))) == \
        (None, "timeout")
    assert asyncio.run(go(Timeouts(connect=1, first_byte=1, idle=1, total=0.05))) == \
        ("timeout", None)


# ------------------------------------------------------ client fields that cannot go


@pytest.mark.parametrize(("translate", "body", "param"), [
    ("gemini", {"stop": 5}, "stop"),
    ("gemini", {"messages": [{"role": "user", "content": "hi"},
                             {"role": "assistant", "tool_calls": ["oops"]}]},
     "messages[1].tool_calls[0]"),
    ("anthropic", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": "https://example.com/cat.png"}]}]},
     "messages[0].content[0].image_url"),
    ("anthropic", {"tools": [{"type": "function", "function": "weather"}]}, "tools[0].function"),
    ("anthropic", {"tools": [{"type": "function", "function": {"parameters": {}}}]},
     "tools[0].function.name"),
    ("gemini", {"tools": [{"type": "function", "function": {"name": ""}}]},
     "tools[0].function.name"),
    ("anthropic", {"messages": [{"role": "tool", "content": "sunny"}]},
     "messages[0].tool_call_id"),
    ("gemini", {"top_p": "high"}, "top_p"),
    ("anthropic", {"tool_choice": {"type": "function", "function": "weather"}},
     "tool_choice.function.name"),
    ("gemini", {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "messages[0].content[0].type"),
])
def test_fields_a_translation_cannot_express_are_a_400(translate: str, body: Body,
                                                       param: str) -> None:
    model = Model("m", "up", "m")
    request = {**HI, **body}
    with pytest.raises(GatewayError) as refused:
        if translate == "gemini":
            gemini.to_request(request)
        else:
            anthropic_format.request(request, model)
    assert (refused.value.status, refused.value.param) == (400, param)
    assert param in refused.value.message


def test_a_400_from_a_translation_leaves_the_adapter_before_any_call(
        fake: tuple[str, Faults]) -> None:
    before = len(fake[1].calls)
    with pytest.raises(GatewayError):
        stream("anthropic", fake[0], "ok", {**HI, "stop": [1]})
    with pytest.raises(GatewayError):
        complete("gemini", fake[0], "ok", {**HI, "stop": {"a": 1}})
    assert len(fake[1].calls) == before


def test_translations_still_carry_what_they_can() -> None:
    body = {"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url",
                                      "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "look", "arguments": '{"at": "it"}'}},
            {"id": "c2", "type": "function", "function": {"name": "cut", "arguments": '{"a'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"seen": "a cat"}'},
        {"role": "tool", "tool_call_id": "c2", "content": "nothing"}],
        "stop": "END", "max_tokens": 50, "temperature": 1.5, "top_p": 1,
        "tools": [{"type": "function", "function": {"name": "look"}}],
        "tool_choice": {"type": "function", "function": {"name": "look"}}, "user": "u1"}
    claude = anthropic_format.request(body, Model("m", "up", "claude-x"))
    assert claude["system"] == "be brief" and claude["temperature"] == 1.0
    assert claude["messages"][0]["content"][1]["source"] == {
        "type": "base64", "media_type": "image/png", "data": "AAAA"}
    assert [b["input"] for b in claude["messages"][1]["content"]] == [{"at": "it"}, {}]
    assert claude["tool_choice"] == {"type": "tool", "name": "look"}
    assert claude["tools"][0]["input_schema"] == {"type": "object", "properties": {}}
    google = gemini.to_request(body)
    assert google["generationConfig"] == {"temperature": 1.5, "topP": 1.0,
                                          "maxOutputTokens": 50, "stopSequences": ["END"]}
    assert google["contents"][2]["parts"] == [
        {"functionResponse": {"name": "look", "response": {"seen": "a cat"}}},
        {"functionResponse": {"name": "cut", "response": {"result": "nothing"}}}]
    assert orjson.loads(orjson.dumps(google)) == google
