"""The Messages format's conversions without a server: replays, translations, junk."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import GatewayError
from runtime.formats import messages
from runtime.formats.base import renamed
from runtime.formats.messages import MESSAGES

ANSWER = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
          "content": [{"type": "thinking", "thinking": "Let me see.", "signature": "s1"},
                      {"type": "text", "text": "Calling the tool."},
                      {"type": "tool_use", "id": "toolu_1", "name": "weather",
                       "input": {"city": "Paris", "days": [1, 2]}}],
          "stop_reason": "tool_use", "stop_sequence": None,
          "usage": {"input_tokens": 10, "output_tokens": 7}}


def replayed(answer: dict[str, Any]) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event async for event in MESSAGES.replay(answer, include_usage=False)]
    return asyncio.run(collect())


def test_a_replayed_message_is_the_message_it_was_assembled_from() -> None:
    events = replayed(ANSWER)
    assert [e["index"] for e in events if e["type"] == "content_block_start"] == [0, 1, 2]
    assert MESSAGES.assembled(events, {}) == ANSWER


def test_chat_chunks_become_blocks_with_anthropics_indices_and_stop_reason() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "c", "model": "gpt", "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish}]}
    chunks = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Let me"}),
              chunk({"content": " check."}),
              chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {
                  "name": "weather", "arguments": '{"city":'}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
              chunk({}, "tool_calls"),
              {"id": "c", "model": "gpt", "choices": [], "usage": {
                  "prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
                  "prompt_tokens_details": {"cached_tokens": 5}}}]
    stream, events = messages.Stream(), []
    for i, one in enumerate(chunks):
        events += [*stream.start(one), *stream.chunk(one)] if i == 0 else stream.chunk(one)
    events += stream.end()
    assert [(e["type"], e.get("index")) for e in events] == [
        ("message_start", None), ("content_block_start", 0), ("content_block_delta", 0),
        ("content_block_delta", 0), ("content_block_stop", 0), ("content_block_start", 1),
        ("content_block_delta", 1), ("content_block_delta", 1), ("content_block_stop", 1),
        ("message_delta", None), ("message_stop", None)]
    built = MESSAGES.assembled(events, {})
    assert built is not None
    assert built["content"][0] == {"type": "text", "text": "Let me check."}
    assert built["content"][1]["input"] == {"city": "Paris"}
    assert built["stop_reason"] == "tool_use"
    assert built["usage"] == {"input_tokens": 15, "output_tokens": 9, "cache_read_input_tokens": 5,
                              "cache_creation_input_tokens": 0}
    assert MESSAGES.usage(built["usage"])["prompt_tokens"] == 20


def test_a_user_turn_with_tool_results_becomes_tool_messages_then_its_text() -> None:
    chat = messages.chat_request({"model": "m", "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": "s"},
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "is_error": True,
             "content": [{"type": "text", "text": "boom"}]},
            {"type": "text", "text": "and now?"}]}]})
    assert chat["messages"] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f",
                                                          "arguments": '{"a":1}'}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"},
        {"role": "user", "content": [{"type": "text", "text": "and now?"}]}]


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["type", "text", "content", "role",
                                                       "source", "name", "id", "input"]),
                                      inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({"model": st.just("m"), "max_tokens": st.just(5),
                              "messages": st.lists(st.fixed_dictionaries(
                                  {"role": st.sampled_from(["user", "assistant", "system"]),
                                   "content": JSON}), min_size=1, max_size=3)},
                             optional={"system": JSON, "tools": JSON, "tool_choice": JSON}))
def test_a_translation_succeeds_or_names_the_field(body: dict[str, Any]) -> None:
    try:
        messages.chat_request(body)
    except GatewayError as error:
        assert error.status == 400 and error.param


def test_a_stream_of_junk_events_is_not_kept() -> None:
    start = {"type": "message_start", "message": {"id": "m", "usage": {}}}
    for junk in ([start, {"type": "content_block_start", "index": 0, "content_block": "x"}],
                 [start, {"type": "content_block_delta", "index": 3, "delta": {}}],
                 [start, {"type": "content_block_start", "index": 0,
                          "content_block": {"type": "tool_use", "id": "t", "name": "f"}},
                  {"type": "content_block_delta", "index": 0,
                   "delta": {"type": "input_json_delta", "partial_json": "{nope"}}],
                 [{"type": "message_start", "message": "not an object"}]):
        assert MESSAGES.assembled(junk, {}) is None


def test_a_chat_providers_refusal_names_the_field_the_client_sent() -> None:
    origins: list[str] = []
    messages.chat_request({"model": "m", "max_tokens": 5, "system": "be brief", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"},
                                     {"type": "text", "text": "and?"}]}]}, origins)
    assert origins == ["system", "messages[0]", "messages[1]", "messages[2]", "messages[2]"]
    refused = GatewayError(400, "invalid 'messages[4].content[0].type': no", "invalid_value",
                           param="messages[4].content[0].type")
    named = renamed(refused, origins)
    assert named.param == "messages[2].content[0].type"
    assert named.message == "invalid 'messages[2].content[0].type': no"
    assert renamed(GatewayError(400, "x", param="messages[0].content"), origins).param == \
        "system"
    assert renamed(GatewayError(400, "x", param="tools[0]"), origins).param == "tools[0]"
