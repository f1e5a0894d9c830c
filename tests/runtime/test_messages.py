"""`POST /v1/messages` end to end: the official anthropic SDK against the running gateway.

The same Messages request goes to an Anthropic fake (passed through as the
client wrote it), and to OpenAI, OpenAI-compatible and Gemini ones (translated
through chat),
plain and streamed; each fake is driven by its own provider's SDK in
test_fakes.py, so all three speak today's wire formats.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.fakes import API_KEY
from tests.runtime.conftest import Stack

TARGETS = ["claude", "ok", "on-vllm", "gemini"]  # Anthropic (native); the rest translated
WEATHER = {"name": "weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.fixture
def sdk(stack: Stack) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=stack.url, api_key="unused", max_retries=0) as client:
        yield client


def ask(**extra: Any) -> dict[str, Any]:
    return {"max_tokens": 100, "messages": [{"role": "user", "content": "hello"}], **extra}


@pytest.mark.parametrize("model", TARGETS)
def test_a_message_is_answered_by_every_provider_family(sdk: anthropic.Anthropic,
                                                        model: str) -> None:
    raw = sdk.messages.with_raw_response.create(model=model, **ask())
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and "hello from" in message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-gw-model"] == model and float(raw.headers["x-gw-cost"]) >= 0


@pytest.mark.parametrize("model", TARGETS)
def test_a_streamed_message_has_its_events_in_order(sdk: anthropic.Anthropic, model: str) -> None:
    with sdk.messages.stream(model=model, **ask()) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_start" in events and "content_block_stop" in events
    assert final.content[0].type == "text" and final.content[0].text.startswith("hello from")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["claude", "gemini"])
@pytest.mark.parametrize("streamed", [False, True])
def test_a_tool_is_called_and_its_result_answered(sdk: anthropic.Anthropic, model: str,
                                                  streamed: bool) -> None:
    messages = sdk.messages
    first: Any
    if streamed:
        with messages.stream(model=model, tools=[WEATHER], **ask()) as stream:
            first = stream.get_final_message()
    else:
        first = messages.create(model=model, tools=[WEATHER], **ask())
    use = next(block for block in first.content if block.type == "tool_use")
    assert first.stop_reason == "tool_use" and use.name == "weather"
    assert use.input == {"city": "Paris"}
    turns = [{"role": "user", "content": "weather in Paris?"},
             {"role": "assistant", "content": [block.model_dump() for block in first.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                           "content": "sunny"}]}]
    second = messages.create(model=model, max_tokens=100, tools=[WEATHER], messages=turns)
    assert second.content[0].type == "text" and second.stop_reason == "end_turn"


def test_to_anthropic_the_request_goes_as_written(stack: Stack, sdk: anthropic.Anthropic) -> None:
    system = [{"type": "text", "text": "You are terse."},
              {"type": "text", "text": "Answer in English.", "cache_control": {
                  "type": "ephemeral"}}]
    beta = "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14"
    sdk.with_options(default_headers={"anthropic-beta": beta}).messages.create(
        model="claude", system=system, metadata={"user_id": "u-1"},  # type: ignore[arg-type]
        **ask(messages=[{"role": "user", "content": "hi"},
                        {"role": "system", "content": "Now be polite."},
                        {"role": "user", "content": "hello"}]))
    sent, headers = stack.anthropic.bodies[-1], stack.anthropic.headers[-1]
    assert sent["system"] == system and sent["metadata"] == {"user_id": "u-1"}
    assert sent["messages"][1] == {"role": "system", "content": "Now be polite."}
    assert sent["model"] == "ok"  # the deployment's upstream name
    assert headers["anthropic-beta"] == beta and headers["anthropic-version"]
    assert headers["x-api-key"] == API_KEY  # the provider's key, never the client's


def test_thinking_blocks_come_back_whole_from_anthropic(sdk: anthropic.Anthropic) -> None:
    plain = sdk.messages.create(model="claude-think", **ask())
    with sdk.messages.stream(model="claude-think", **ask()) as stream:
        streamed = stream.get_final_message()
    for message in (plain, streamed):
        thought, said = message.content
        assert thought.type == "thinking" and thought.signature == "sig-fake"
        assert said.type == "text" and said.text == "hello from thinking"


def test_to_openai_the_system_prompt_and_turns_are_translated(stack: Stack,
                                                              sdk: anthropic.Anthropic) -> None:
    sdk.messages.create(
        model="ok", system=[{"type": "text", "text": "Be terse.",
                             "cache_control": {"type": "ephemeral"}}],
        stop_sequences=["END"], **ask(messages=[
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Now be polite."},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]}]))
    sent = stack.openai.bodies[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
        {"role": "system", "content": "Now be polite."},
        {"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert sent["stop"] == ["END"] and sent["max_tokens"] == 100


def test_claude_codes_model_names_are_routed_by_the_policy(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(model="claude-sonnet-4-5-20250929", **ask())
    assert message.content[0].text == "hello from ok"  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["claude", "ok"])
def test_tokens_are_counted(sdk: anthropic.Anthropic, model: str) -> None:
    counted = sdk.messages.count_tokens(
        model=model, messages=[{"role": "user", "content": "how many tokens is this"}])
    assert counted.input_tokens > 0


def test_errors_come_back_in_anthropics_shape(stack: Stack, sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.messages.create(model="nowhere", **ask())
    assert missing.value.body == {"type": "error", "error": {
        "type": "not_found_error", "message": "no route for model 'nowhere'"}}
    with pytest.raises(anthropic.PermissionDeniedError):
        sdk.messages.create(model="forbidden", **ask())
    raw = httpx.post(stack.url + "/v1/messages", json={"model": "claude", "messages": []})
    assert raw.status_code == 400
    assert raw.json()["type"] == "error"
    assert raw.json()["error"]["type"] == "invalid_request_error"
    wrong = httpx.get(stack.url + "/v1/messages")
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError) as server_tool:  # chat has no server tools
        sdk.messages.create(model="ok", tools=[{
            "type": "web_search_20250305", "name": "web_search"}], **ask())
    assert "tools[0].type" in str(server_tool.value)


@pytest.mark.parametrize("model", ["claude-cut", "cut"])
def test_a_stream_that_breaks_ends_with_an_error_event(stack: Stack, model: str) -> None:
    with httpx.stream("POST", stack.url + "/v1/messages", json={
            "model": model, "stream": True, **ask()}) as answer:
        lines = []
        with pytest.raises(httpx.RemoteProtocolError):  # the connection is dropped too
            for line in answer.iter_lines():
                lines.append(line)
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert events[0]["type"] == "message_start"
    assert events[-1]["type"] == "error"
    assert "message_stop" not in [event["type"] for event in events]
    stack.gateway.log.flush()
    logged = json.loads((stack.policy.parent / "access.log").read_text().splitlines()[-1])
    # charged for what it delivered ("hello", 2 tokens at 4 characters a token), not only
    # the one token Anthropic's message_start counts
    assert logged["status"] == 502 and logged["tokens"]["completion_tokens"] == 2
    assert logged["tokens"]["estimated"] is True


def test_every_message_is_logged_with_its_route_and_cost(stack: Stack,
                                                         sdk: anthropic.Anthropic) -> None:
    sdk.messages.create(model="claude", **ask())
    stack.gateway.log.flush()
    lines = [json.loads(line) for line in
             (stack.policy.parent / "access.log").read_text().splitlines()]
    line = next(line for line in reversed(lines) if line.get("path") == "/v1/messages")
    assert line["model"] == "claude" and line["provider"] == "claude"
    assert line["tokens"]["prompt_tokens"] == 12 and line["tokens"]["completion_tokens"] == 6
    assert line["rule"] is not None and line["cost"] is not None
