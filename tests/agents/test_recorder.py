"""The recorder is honest: the official SDKs read its answers and it keeps what they sent.

The agents are built on these SDKs' wire formats (Claude Code on Anthropic's
TypeScript SDK, Codex on its own Responses client), so an answer the Python
SDKs can't parse, or that lacks a field their types require, would be a
recorder that an agent might accept today by luck and refuse tomorrow.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.agents.recorder import (
    ANSWER,
    MESSAGES_USAGE,
    RESPONSES_USAGE,
    Recording,
    message,
    message_events,
    response,
    response_events,
)

HI: list[Any] = [{"role": "user", "content": "hi"}]


def _data(events: list[bytes]) -> list[dict[str, Any]]:
    """The JSON of each SSE event, checked to repeat its `event:` name as `type`."""
    parsed = []
    for raw in events:
        name, data = raw.decode().strip().split("\n")
        body = json.loads(data.removeprefix("data: "))
        assert name == f"event: {body['type']}"
        parsed.append(body)
    return parsed


def test_each_messages_event_is_one_of_anthropics_types_strictly() -> None:
    # The SDKs build their models without validating; a strict check finds a
    # field missing that a stricter client (Claude Code's) might need.
    adapter: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
    events = _data(message_events("m"))
    assert [e["type"] for e in events] == [
        "message_start", "content_block_start", "ping", *["content_block_delta"] * 4,
        "content_block_stop", "message_delta", "message_stop"]
    for event in events:
        if event["type"] != "ping":  # a keep-alive, outside the typed union
            adapter.validate_python(event)
    Message.model_validate(message("m"))


def test_each_responses_event_is_one_of_openais_types_strictly() -> None:
    # The union's discriminator is in an annotation pydantic doesn't read, so each
    # event is checked against the one type its `type` names.
    members = typing.get_args(typing.get_args(ResponseStreamEvent)[0])
    by_type = {typing.get_args(m.model_fields["type"].annotation)[0]: m for m in members}
    events = _data(response_events({"model": "m", "stream": True}))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * 4,
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        by_type[event["type"]].model_validate(event)
    Response.model_validate(response({"model": "m"}))


def test_the_anthropic_sdk_reads_it_plain_and_streamed(
        recorder: tuple[str, Recording]) -> None:
    url, recording = recorder
    client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    reply = client.messages.create(model="m", max_tokens=10, messages=HI)
    assert [b.text for b in reply.content if b.type == "text"] == [ANSWER]
    assert reply.usage.input_tokens == MESSAGES_USAGE["input_tokens"]
    with client.messages.stream(model="m", max_tokens=10, messages=HI) as stream:
        assert "".join(stream.text_stream) == ANSWER
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == \
        (MESSAGES_USAGE["input_tokens"], MESSAGES_USAGE["output_tokens"])
    counted = client.messages.count_tokens(model="m", messages=HI)
    assert counted.input_tokens == MESSAGES_USAGE["input_tokens"]
    kept = recording.find("POST", "/v1/messages")
    assert [r.body.get("stream", False) for r in kept] == [False, True]
    # anthropic 2.x sends its api_key as a Bearer token, not in x-api-key
    headers = kept[0].headers
    assert headers.get("x-api-key") == "k" or headers.get("authorization") == "Bearer k"
    assert kept[0].headers["anthropic-version"]
    assert recording.calls()[-1] == "POST /v1/messages/count_tokens"
    client.close()


def test_the_openai_sdk_reads_it_plain_and_streamed(recorder: tuple[str, Recording]) -> None:
    url, recording = recorder
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    reply = client.responses.create(model="m", input="hi")
    assert reply.output_text == ANSWER
    assert reply.usage is not None and reply.usage.total_tokens == RESPONSES_USAGE["total_tokens"]
    with client.responses.create(model="m", input="hi", stream=True) as streamed:
        events = list(streamed)
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == ANSWER
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == ANSWER
    assert completed.response.usage is not None
    assert completed.response.usage.input_tokens == RESPONSES_USAGE["input_tokens"]
    with client.responses.stream(model="m", input="hi") as stream:  # the SDK's accumulator
        assert stream.get_final_response().output_text == ANSWER
    kept = recording.find("POST", "/v1/responses")
    assert [r.body.get("stream", False) for r in kept] == [False, True, True]
    assert kept[0].headers["authorization"] == "Bearer k"
    client.close()


def test_it_keeps_any_other_call_and_answers_the_connectivity_check(
        recorder: tuple[str, Recording]) -> None:
    url, recording = recorder
    assert httpx.head(url + "/").status_code == 200
    missing = httpx.post(url + "/api/hello?x=1", content=b"not json")
    assert missing.status_code == 404
    assert missing.json()["type"] == "error"
    with anthropic.Anthropic(base_url=url, api_key="k", max_retries=0) as client, \
            pytest.raises(anthropic.NotFoundError):
        client.models.list()
    assert recording.calls() == ["HEAD /", "POST /api/hello?x=1", "GET /v1/models"]
    assert recording.snapshot()[1].body == "not json"
