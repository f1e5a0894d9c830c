"""Hypothesis feeds the adapters junk from both sides.

From upstream: answers, stream events, error bodies and whole HTTP responses
that are anything at all, or nearly the right shape. Nothing may leave an
adapter but an answer or `UpstreamError` (the parsing functions may raise
only `Malformed`, which the adapter turns into one). From the client: odd
but valid chat bodies, as the gateway's check lets them through; a
translation either succeeds, with a request that encodes, or is a 400 that
names the field.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.compiled import Model, Provider, Timeouts
from runtime.errors import GatewayError, UpstreamError
from runtime.formats import messages as anthropic_format
from runtime.providers import ADAPTERS, gemini
from runtime.providers.base import Adapter, Body, Decoder
from runtime.providers.openai import Chunks as OpenAIChunks
from runtime.providers.openai import OpenAI, expected_choices, read_completion, read_embeddings
from runtime.providers.sse import Parser
from runtime.providers.wire import Malformed
from runtime.schemas import ChatRequest, parse
from tests.fakes import API_KEY
from tests.fakes.faults import Faults, serving_faults

MODEL = Model("m", "up", "m-upstream")
FIELDS = [
    # OpenAI
    "choices", "message", "delta", "content", "role", "index", "finish_reason", "usage",
    "prompt_tokens", "completion_tokens", "total_tokens", "error", "code", "data", "object",
    # Anthropic
    "type", "text", "id", "name", "input", "stop_reason", "model", "content_block",
    "partial_json", "input_tokens", "output_tokens", "cache_read_input_tokens",
    # Gemini
    "candidates", "parts", "functionCall", "args", "finishReason", "usageMetadata",
    "promptTokenCount", "candidatesTokenCount", "totalTokenCount", "promptFeedback",
    "blockReason", "responseId", "modelVersion", "thought", "status", "details", "retryDelay",
    "embeddings", "values", "message", "innererror", "content_filter_result", "filtered"]
WORDS = ["text", "tool_use", "message_start", "content_block_start", "content_block_delta",
         "message_delta", "message_stop", "error", "ping", "text_delta", "input_json_delta",
         "overloaded_error", "STOP", "SAFETY", "MAX_TOKENS", "stop", "assistant",
         "content_filter", "context_length_exceeded", "[DONE]", "30s", "function"]

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
scalars = st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | \
    st.floats(allow_nan=False, allow_infinity=False) | text | st.sampled_from(WORDS)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) |
    st.dictionaries(st.sampled_from(FIELDS) | text, inner, max_size=5), max_leaves=25)
objects = st.dictionaries(st.sampled_from(FIELDS) | text, json_values, max_size=6)


class Named(Adapter):
    """An adapter for the parsing functions that want one: no session, no calls."""

    async def complete(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        raise NotImplementedError

    def stream(self, model: Model, body: Body, timeouts: Timeouts) -> Any:
        raise NotImplementedError


NAMED = Named(Provider("up", "openai", api_key="sk-secret-0123456789"), None, {})


def encodes(value: Any) -> None:
    orjson.dumps(value)  # what the gateway does with every answer and chunk


# ------------------------------------------------------------------ answers


@given(objects)
def test_a_completion_is_checked_or_malformed(data: Body) -> None:
    for read in (read_completion, read_embeddings):
        with contextlib.suppress(Malformed):
            encodes(read(data))


@given(objects)
def test_an_anthropic_message_is_translated_or_malformed(data: Body) -> None:
    try:
        answer = anthropic_format.chat_answer(data, MODEL)
    except Malformed:
        return
    encodes(answer)
    assert answer["choices"][0]["message"]["role"] == "assistant"


@given(objects)
def test_a_gemini_response_is_translated_malformed_or_a_refusal(data: Body) -> None:
    try:
        answer = gemini.from_response(data, MODEL, NAMED)
    except Malformed:
        return
    except UpstreamError as refusal:
        assert refusal.code == "content_filter"
        return
    encodes(answer)


def events() -> st.SearchStrategy[tuple[str, bytes]]:
    data = objects.map(orjson.dumps) | json_values.map(orjson.dumps) | st.binary(max_size=40) \
        | st.just(b"[DONE]")
    return st.tuples(st.sampled_from(["", "message", "error", *WORDS]), data)


def decoders() -> list[Decoder]:
    return [OpenAIChunks(NAMED, 1, True), anthropic_format.Events(NAMED, MODEL),
            gemini.Responses(NAMED, MODEL, 1)]


@given(st.lists(events(), max_size=12))
def test_stream_events_make_chunks_or_malformed(stream: list[tuple[str, bytes]]) -> None:
    for decoder in decoders():
        for name, data in stream:
            try:
                chunk = decoder.event(name, data)
            except Malformed:
                continue
            except UpstreamError as failure:
                assert failure.kind == "status" and failure.status is not None
                break
            if chunk is not None:
                encodes(chunk)
                assert isinstance(chunk["choices"], list)
        last = decoder.end()
        if last is not None:
            encodes(last)


@given(st.integers(100, 599), st.binary(max_size=60) | objects.map(orjson.dumps),
       st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms", "x-other"]),
                       text | st.sampled_from(["1", "-3", "1e999", "nan", "inf",
                                               "Wed, 21 Oct 2015 07:28:00 GMT",
                                               "Mon, 99 Foo 2015"]), max_size=3))
def test_an_error_answer_is_sorted_whatever_its_body(status: int, raw: bytes,
                                                     headers: dict[str, str]) -> None:
    failure = NAMED.failure(status, raw, headers)
    assert failure.kind == "status" and failure.status in (status, 400)
    assert failure.retry_after is None or failure.retry_after >= 0
    assert "sk-secret-0123456789" not in failure.message


@given(st.binary(max_size=200), st.lists(st.integers(1, 50), max_size=10))
def test_sse_framing_does_not_depend_on_how_bytes_arrive(raw: bytes, cuts: list[int]) -> None:
    whole = Parser()
    expected = whole.feed(raw) + whole.end()
    pieces, at = [], 0
    for size in cuts:
        pieces.append(raw[at:at + size])
        at += size
    pieces.append(raw[at:])
    parser = Parser()
    got = [event for piece in pieces if piece for event in parser.feed(piece)] + parser.end()
    assert got == expected


# ------------------------------------------------- whole answers on the wire


@pytest.fixture(scope="module")
def wire() -> Iterator[tuple[str, Faults]]:
    with serving_faults(Faults()) as served:
        yield served


def sse(events: list[bytes]) -> bytes:
    return b"".join(b"data: " + e + b"\n\n" for e in events)


def responses() -> st.SearchStrategy[bytes]:
    status = st.sampled_from([200, 200, 200, 400, 429, 500, 529])
    kind = st.sampled_from([b"application/json", b"text/event-stream", b"text/html"])
    body = st.binary(max_size=80) | objects.map(orjson.dumps) | \
        st.lists(objects.map(orjson.dumps) | st.binary(max_size=20) | st.just(b"[DONE]"),
                 max_size=6).map(sse)
    retry = st.sampled_from([b"", b"retry-after: 2\r\n", b"retry-after: soon\r\n"])
    return st.builds(lambda s, k, b, r: b"HTTP/1.1 %d Whatever\r\ncontent-type: %s\r\n%s"
                     b"connection: close\r\n\r\n%s" % (s, k, r, b), status, kind, body, retry)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(responses())
def test_whatever_comes_back_leaves_as_an_answer_or_an_upstream_error(
        wire: tuple[str, Faults], raw: bytes) -> None:
    url, faults = wire
    faults.raw = raw
    timeouts = Timeouts(connect=1.0, first_byte=1.0, idle=1.0, total=1.0)

    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            for kind, base in (("openai", url + "/v1"), ("anthropic", url),
                               ("gemini", url + "/v1")):
                adapter = ADAPTERS[kind](Provider("up", kind, base_url=base, api_key=API_KEY),
                                         session, {})
                with contextlib.suppress(UpstreamError):
                    encodes(await adapter.complete(MODEL, {"messages": [
                        {"role": "user", "content": "hi"}]}, timeouts))
                try:
                    async for chunk in adapter.stream(MODEL, {"messages": [
                            {"role": "user", "content": "hi"}]}, timeouts):
                        encodes(chunk)
                except UpstreamError:
                    pass
    try:
        asyncio.run(go())
    finally:
        faults.raw = None


# ------------------------------------------------------------ from the client


def parts() -> st.SearchStrategy[Any]:
    part = st.fixed_dictionaries({"type": st.sampled_from(
        ["text", "image_url", "refusal", "input_audio", "file"]) | json_values}, optional={
        "text": json_values | text, "refusal": json_values,
        "image_url": json_values | st.fixed_dictionaries({"url": json_values | st.sampled_from(
            ["https://x/y.png", "data:image/png;base64,AAAA", "data:;base64,", ""])})})
    return st.lists(part | objects, max_size=3)


def calls() -> st.SearchStrategy[Any]:
    function = st.fixed_dictionaries({}, optional={
        "name": json_values | st.sampled_from(["f", "g"]),
        "arguments": json_values | st.sampled_from(['{"a": 1}', "{", "[1]", '"s"', "null"])})
    call = st.fixed_dictionaries({}, optional={"id": json_values | st.sampled_from(["c1", "c2"]),
                                               "type": json_values, "function": function |
                                               json_values})
    return st.lists(call | json_values, max_size=3) | json_values


def messages() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({
        "role": st.sampled_from(["system", "developer", "user", "assistant", "tool",
                                 "function"]),
        "content": st.none() | text | parts()}, optional={
        "tool_calls": calls(), "tool_call_id": json_values | st.sampled_from(["c1", "c2"]),
        "name": json_values})


def tools() -> st.SearchStrategy[Any]:
    function = st.fixed_dictionaries({}, optional={
        "name": json_values | st.just("f"), "description": json_values,
        "parameters": json_values | st.just({"type": "object"})})
    return st.lists(st.fixed_dictionaries({}, optional={
        "type": st.just("function") | json_values, "function": function | json_values}) |
        objects, max_size=3)


bodies = st.fixed_dictionaries({  # what the schema checks is valid; the rest is anything
    "model": st.just("m"), "messages": st.lists(messages(), min_size=1, max_size=5)}, optional={
    "stop": json_values | st.just(["a", "b"]), "tools": tools(),
    "tool_choice": json_values | st.sampled_from(["auto", "none", "required", {
        "type": "function", "function": {"name": "f"}}]),
    "temperature": st.floats(0, 2) | st.integers(0, 2), "top_p": json_values | st.floats(0, 1),
    "max_tokens": st.integers(1, 10_000), "max_completion_tokens": st.integers(1, 10_000),
    "n": json_values | st.integers(1, 3), "user": json_values, "stream_options": json_values,
    "stream": st.booleans(), "response_format": json_values,
    "metadata": st.dictionaries(text, text, max_size=2)})


def acceptable(body: Body) -> bool:
    """Whether the gateway's own check lets the body through to a provider."""
    try:
        parse(ChatRequest, body)
    except GatewayError:
        return False
    return True


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(bodies.filter(acceptable))
def test_a_translation_succeeds_or_names_the_field(body: Body) -> None:
    openai = OpenAI(Provider("up", "openai_compatible"), None, {})
    for translate in (lambda: anthropic_format.request(body, MODEL),
                      lambda: gemini.to_request(body),
                      lambda: openai.payload(Model("m", "up", "m", prefill=True), body)):
        try:
            encodes(translate())
        except GatewayError as refused:
            assert refused.status == 400 and refused.param
            assert refused.code == "invalid_value"
    assert expected_choices(body) >= 1
