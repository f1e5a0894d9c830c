"""The Responses format: requests to chat, completions and chunks back, as the SDK reads them.

The openai SDK is the judge of what comes back: Responses are validated
against its pydantic types, and streams are served on loopback and consumed
with `client.responses.create(stream=True)` and `client.responses.stream`,
whose final response must hold the text, the calls and the usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import FunctionToolParam, Response, ResponseStreamEvent
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from runtime.errors import GatewayError
from runtime.formats import responses
from runtime.providers.wire import Malformed
from runtime.schemas import ChatRequest, parse
from tests.fakes import serving

RID = "resp_" + "ab" * 25
CREATED = 1_760_000_000
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER: FunctionToolParam = {
    "type": "function", "name": "weather", "description": "the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False},
    "strict": True}
CRM = {"type": "namespace", "name": "crm", "description": "customer records",
       "tools": [{"type": "function", "name": "lookup", "description": "find a customer",
                  "parameters": {"type": "object"}}]}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def completion(content: str | None = "hello", calls: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
               finish: str = "stop", usage: dict[str, Any] | None = None,
               refusal: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if calls:
        message["tool_calls"] = [{"id": ident, "type": "function",
                                  "function": {"name": name, "arguments": arguments}}
                                 for ident, name, arguments in calls]
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "upstream-1",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage}


def chunks_of(answer: dict[str, Any], pieces: int = 3) -> list[dict[str, Any]]:
    """A chat completion as the chunks a provider streams it in: text, then refusal,
    then each call's name and arguments, in `pieces` pieces each."""
    message = answer["choices"][0]["message"]

    def split(text: str) -> list[str]:
        size = max(1, -(-len(text) // pieces))
        return [text[i:i + size] for i in range(0, len(text), size)]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                "model": answer["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": piece}) for piece in split(message.get("content") or "")]
    out += [chunk({"refusal": piece}) for piece in split(message.get("refusal") or "")]
    for k, call in enumerate(message.get("tool_calls") or ()):
        out.append(chunk({"tool_calls": [{"index": k, "id": call["id"], "type": "function",
                                          "function": {"name": call["function"]["name"],
                                                       "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": k, "function": {"arguments": piece}}]})
                for piece in split(call["function"]["arguments"])]
    out.append(chunk({}, answer["choices"][0]["finish_reason"]))
    if answer.get("usage") is not None:
        out.append({**chunk({}), "choices": [], "usage": answer["usage"]})
    return out


def streamed(request: dict[str, Any], chunks: list[dict[str, Any]]) -> tuple[
        list[dict[str, Any]], responses.Stream]:
    stream = responses.Stream(request, RID, CREATED)
    events = stream.start()
    for chunk in chunks:
        events += stream.chunk(chunk)
    return events + stream.end(), stream


# ------------------------------------------------------------------ to_chat

def test_a_string_input_with_instructions_and_settings() -> None:
    chat = responses.to_chat({
        "model": "gpt-4o", "input": "hi", "instructions": "be brief", "max_output_tokens": 50,
        "temperature": 0.2, "top_p": 0.9, "user": "u1", "metadata": {"app": "wiki"},
        "prompt_cache_key": "k", "safety_identifier": "s", "service_tier": "flex",
        "store": True, "include": ["message.output_text.logprobs"], "truncation": "auto",
        "stream": True})
    assert chat == {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_completion_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u1",
        "prompt_cache_key": "k", "safety_identifier": "s", "service_tier": "flex",
        "metadata": {"app": "wiki"}, "stream": True, "stream_options": {"include_usage": True}}
    parse(ChatRequest, chat)


def test_a_codex_request_translates_but_its_web_search_is_refused() -> None:
    codex: dict[str, Any] = {
        "model": "gpt-5-codex", "store": False, "stream": True, "parallel_tool_calls": False,
        "include": ["reasoning.encrypted_content"], "reasoning": {"effort": "medium",
                                                                  "summary": "auto"},
        "text": {"verbosity": "low"}, "tool_choice": "auto", "prompt_cache_key": "sess-1",
        "input": [{"type": "message", "role": "developer",
                   "content": [{"type": "input_text", "text": "you are codex"}]},
                  user("list the files")],
        "tools": [{"type": "function", "name": "shell", "strict": False,
                   "parameters": {"type": "object", "properties": {}}},
                  {"type": "namespace", "name": "mcp_docs", "description": "docs",
                   "tools": [{"type": "function", "name": "search", "defer_loading": True,
                              "parameters": {"type": "object"}}]},
                  {"type": "web_search", "external_web_access": False}]}
    with pytest.raises(GatewayError) as refused:
        responses.to_chat(codex)
    assert refused.value.status == 400 and refused.value.param == "tools[2]"
    assert "`web_search`" in refused.value.message
    chat = responses.to_chat({**codex, "tools": codex["tools"][:2]})
    assert chat["messages"] == [{"role": "system", "content": "you are codex"},
                                {"role": "user", "content": "list the files"}]
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "shell", "strict": False,
                                          "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "mcp_docs__search",
                                          "parameters": {"type": "object"}}}]
    assert (chat["parallel_tool_calls"], chat["reasoning_effort"], chat["verbosity"],
            chat["tool_choice"]) == (False, "medium", "low", "auto")
    parse(ChatRequest, chat)


def test_items_become_messages_in_order() -> None:
    chat = responses.to_chat({"model": "m", "input": [
        {"role": "system", "content": "rules"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA",
             "detail": "original"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE",
             "filename": "a.pdf"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
        {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "let me look", "annotations": []}]},
        {"type": "function_call", "call_id": "call_1", "name": "weather",
         "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "lookup", "namespace": "crm",
         "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "Ada"}]},
        {"type": "function_call", "call_id": "call_3", "name": "weather", "arguments": ""},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}]})
    assert chat["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE",
                                      "filename": "a.pdf"}}]},
        {"role": "assistant", "content": "let me look", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "crm__lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "Ada"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_3", "type": "function", "function": {"name": "weather",
                                                              "arguments": ""}}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}]
    parse(ChatRequest, chat)


def test_the_history_comes_after_the_instructions_and_before_the_input() -> None:
    history = [user("one"), {"id": "msg_a", "type": "message", "role": "assistant",
                             "status": "completed",
                             "content": [{"type": "output_text", "text": "1", "annotations": []}]}]
    chat = responses.to_chat({"model": "m", "instructions": "count", "input": "two",
                              "previous_response_id": "resp_a"}, history)
    assert chat["messages"] == [{"role": "system", "content": "count"},
                                {"role": "user", "content": "one"},
                                {"role": "assistant", "content": "1"},
                                {"role": "user", "content": "two"}]
    assert "previous_response_id" not in chat


def test_a_history_that_cannot_be_sent_fails_closed_naming_previous_response_id() -> None:
    history = [user("search"), {"id": "ws_1", "type": "web_search_call", "status": "completed",
                                "action": {"type": "search", "query": "x"}}]
    with pytest.raises(GatewayError) as refused:
        responses.to_chat({"model": "m", "input": "and?", "previous_response_id": "resp_a"},
                          history)
    assert refused.value.status == 400 and refused.value.param == "previous_response_id"
    assert "`web_search_call`" in refused.value.message


@pytest.mark.parametrize(("given", "chat"), [
    ("auto", "auto"), ("none", "none"), ("required", "required"),
    ({"type": "function", "name": "weather"}, {"type": "function",
                                              "function": {"name": "weather"}}),
    ({"type": "allowed_tools", "mode": "required", "tools": [
        {"type": "function", "name": "weather"}]},
     {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
         {"type": "function", "function": {"name": "weather"}}]}}),
])
def test_tool_choice_is_carried(given: Any, chat: Any) -> None:
    assert responses.to_chat({"model": "m", "input": "hi", "tools": [WEATHER],
                              "tool_choice": given})["tool_choice"] == chat


def test_without_tools_a_choice_of_none_is_left_out_as_chat_requires() -> None:
    for choice in ("auto", "none"):
        chat = responses.to_chat({"model": "m", "input": "hi", "tool_choice": choice,
                                  "parallel_tool_calls": True})
        assert "tool_choice" not in chat and "parallel_tool_calls" not in chat


@pytest.mark.parametrize(("given", "chat"), [
    ({"format": {"type": "text"}}, None),
    ({"format": {"type": "json_object"}}, {"type": "json_object"}),
    ({"format": {"type": "json_schema", "name": "city", "strict": True,
                 "description": "a city", "schema": {"type": "object"}}},
     {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"},
                                             "description": "a city", "strict": True}}),
])
def test_text_format_is_the_response_format(given: Any, chat: Any) -> None:
    assert responses.to_chat({"model": "m", "input": "hi", "text": given}).get(
        "response_format") == chat


@pytest.mark.parametrize(("extra", "param"), [
    ({"model": ""}, "model"),
    ({"input": 5}, "input"),
    ({"input": []}, "input"),
    ({"input": ["hi"]}, "input[0]"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "system", "content": [{"type": "input_image",
                                                "image_url": "https://x"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file",
                                              "file_url": "https://x/a.pdf"}]}]},
     "input[0].content[0]"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
     "input[0].call_id"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": [
        {"type": "input_image", "image_url": "https://x"}]}]}, "input[0].output[0]"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0]"),
    ({"tools": [{"type": "custom", "name": "apply_patch"}]}, "tools[0]"),
    ({"tools": [{"type": "function"}]}, "tools[0].name"),
    ({"tools": [{"type": "function", "name": "f", "parameters": "{}"}]},
     "tools[0].parameters"),
    ({"tools": [CRM, {"type": "function", "name": "crm__lookup"}]}, "tools[1]"),
    ({"tools": [{"type": "namespace", "name": "n", "tools": [{"type": "custom",
                                                               "name": "x"}]}]},
     "tools[0].tools[0]"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [
        {"type": "mcp", "server_label": "x"}]}}, "tool_choice.tools[0]"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"max_output_tokens": 2.5}, "max_output_tokens"),
    ({"temperature": "0.5"}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"stream": "yes"}, "stream"),
    ({"metadata": {"n": 1}}, "metadata"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
    ({"text": {"verbosity": "max"}}, "text.verbosity"),
    ({"reasoning": {"effort": 3}}, "reasoning.effort"),
    ({"background": True}, "background"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
])
def test_what_chat_cannot_carry_is_a_400_naming_the_field(extra: dict[str, Any],
                                                          param: str) -> None:
    with pytest.raises(GatewayError) as refused:
        responses.to_chat({"model": "m", "input": "hi", **extra})
    assert refused.value.status == 400 and refused.value.param == param
    assert refused.value.message.startswith(f"invalid '{param}': ")


def test_items_are_the_input_as_items() -> None:
    assert responses.items({"model": "m", "input": "hi"}) == [user("hi")]
    given = [user("a"), {"type": "function_call_output", "call_id": "c", "output": "x"}]
    assert responses.items({"model": "m", "input": given}) == given
    assert responses.items({"model": "m"}) == []
    with pytest.raises(GatewayError) as refused:
        responses.items({"model": "m", "input": [1]})
    assert refused.value.param == "input[0]"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=10)
def odd(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the right shape, one time in eight any JSON at all."""
    return st.integers(0, 7).flatmap(lambda n: valid if n else json_values)


part_types = st.sampled_from(["input_text", "output_text", "refusal", "input_image",
                              "input_file", "input_audio", "text"])
parts = st.lists(odd(st.fixed_dictionaries({"type": part_types}, optional={
    "text": odd(st.text(max_size=5)), "image_url": odd(st.just("https://x/y")),
    "refusal": odd(st.text(max_size=5)), "file_data": odd(st.just("data:x;base64,AA")),
    "detail": odd(st.sampled_from(["auto", "low", "original"]))})), max_size=3)
valid_items = st.sampled_from([
    user("hi"), {"role": "developer", "content": "rules"},
    {"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": "ok", "annotations": []}]},
    {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
    {"type": "function_call", "call_id": "c2", "name": "lookup", "namespace": "crm",
     "arguments": ""},
    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    {"type": "reasoning", "id": "rs_1", "summary": []}])
junk_items = st.one_of(valid_items, valid_items, st.fixed_dictionaries({}, optional={
    "type": odd(st.sampled_from(["message", "function_call", "function_call_output",
                                 "reasoning", "item_reference"])),
    "role": odd(st.sampled_from(["user", "assistant", "system", "developer", "tool"])),
    "content": odd(st.text(max_size=5) | parts), "call_id": odd(st.text(max_size=5)),
    "name": odd(st.text(max_size=5)), "namespace": odd(st.none() | st.just("crm")),
    "arguments": odd(st.text(max_size=5)), "output": odd(st.text(max_size=5) | parts)}),
    json_values)
junk_tools = st.lists(odd(st.sampled_from([WEATHER, CRM]) | st.fixed_dictionaries(
    {"type": odd(st.sampled_from(["function", "namespace", "web_search", "custom"]))},
    optional={"name": odd(st.text(max_size=5)), "parameters": odd(st.just({})),
              "strict": odd(st.booleans()), "description": odd(st.text(max_size=5)),
              "tools": odd(st.lists(odd(st.just(dict(WEATHER))), max_size=2))})), max_size=3)
junk_requests = st.fixed_dictionaries({"model": odd(st.just("m"))}, optional={
    "input": odd(st.text(max_size=5) | st.lists(junk_items, min_size=1, max_size=4)),
    "instructions": odd(st.text(max_size=5)), "tools": odd(junk_tools),
    "tool_choice": odd(st.sampled_from(["auto", "none", "required"])
                       | st.just({"type": "function", "name": "weather"})),
    "max_output_tokens": odd(st.integers(-1, 100)), "temperature": odd(st.floats(0, 2.5)),
    "top_p": odd(st.floats(0, 1)), "parallel_tool_calls": odd(st.booleans()),
    "user": odd(st.text(max_size=5)),
    "metadata": odd(st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2)),
    "text": odd(st.fixed_dictionaries({}, optional={
        "format": odd(st.sampled_from([{"type": "text"}, {"type": "json_object"},
                                       {"type": "json_schema", "name": "x", "schema": {}}])),
        "verbosity": odd(st.sampled_from(["low", "high"]))})),
    "reasoning": odd(st.fixed_dictionaries({}, optional={"effort": odd(st.just("low"))})),
    "stream": odd(st.booleans()), "store": odd(st.booleans()),
    "background": odd(st.none() | st.just(False)), "prompt_cache_key": odd(st.text(max_size=3))})


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=odd(junk_requests),
       history=st.lists(odd(valid_items) | junk_items, max_size=3))
def test_any_request_is_a_chat_request_or_a_400_naming_the_field(
        request: Any, history: list[Any]) -> None:
    try:
        chat = responses.to_chat(request, history)
    except GatewayError as refused:
        assert refused.status == 400
        assert refused.param or refused.code == "invalid_body", refused
        return
    parse(ChatRequest, chat)
    assert orjson.loads(orjson.dumps(chat)) == chat


# ---------------------------------------------------------------- from_chat

def test_a_completion_is_a_message_item_with_usage() -> None:
    usage = {"prompt_tokens": 2000, "completion_tokens": 300, "total_tokens": 2300,
             "prompt_tokens_details": {"cached_tokens": 1500},
             "completion_tokens_details": {"reasoning_tokens": 200}}
    request = {"model": "gpt-4o", "input": "hi", "instructions": "be brief",
               "max_output_tokens": 500, "metadata": {"app": "wiki"}, "store": False,
               "previous_response_id": "resp_before", "temperature": 0.5}
    found = responses.from_chat(completion("hello", usage=usage), request, RID, CREATED)
    reply = Response.model_validate(found)
    assert reply.output_text == "hello" and reply.status == "completed"
    assert reply.model == "upstream-1" and reply.id == RID and reply.created_at == CREATED
    assert found["output"] == [{"id": f"msg_{'ab' * 25}_0", "type": "message",
                                "role": "assistant", "status": "completed",
                                "content": [{"type": "output_text", "text": "hello",
                                             "annotations": [], "logprobs": []}]}]
    assert found["usage"] == {"input_tokens": 2000, "output_tokens": 300, "total_tokens": 2300,
                              "input_tokens_details": {"cached_tokens": 1500,
                                                       "cache_write_tokens": 0},
                              "output_tokens_details": {"reasoning_tokens": 200}}
    assert (reply.instructions, reply.max_output_tokens, reply.metadata, found["store"],
            reply.previous_response_id, reply.temperature) == (
        "be brief", 500, {"app": "wiki"}, False, "resp_before", 0.5)
    assert (reply.tool_choice, reply.tools, reply.parallel_tool_calls, reply.top_p) == (
        "auto", [], True, 1.0)
    assert reply.error is None and reply.incomplete_details is None


def test_tool_calls_are_function_call_items_with_their_namespace() -> None:
    request = {"model": "m", "input": "hi", "tools": [WEATHER, CRM]}
    found = responses.from_chat(completion("checking", [
        ("call_1", "weather", '{"city":"Paris"}'), ("call_2", "crm__lookup", "{}")],
        "tool_calls"), request, RID, CREATED)
    reply = Response.model_validate(found)
    assert [item.type for item in reply.output] == ["message", "function_call", "function_call"]
    first, second = found["output"][1:]
    assert first == {"id": f"fc_{'ab' * 25}_1", "type": "function_call", "status": "completed",
                     "call_id": "call_1", "name": "weather", "arguments": '{"city":"Paris"}'}
    assert (second["namespace"], second["name"], second["call_id"]) == ("crm", "lookup",
                                                                        "call_2")


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"),
                                                 ("content_filter", "content_filter")])
def test_a_cut_answer_is_incomplete_and_says_why(finish: str, reason: str) -> None:
    found = responses.from_chat(completion("half", finish=finish), {"model": "m"}, RID,
                                CREATED)
    reply = Response.model_validate(found)
    assert reply.status == "incomplete" and reply.incomplete_details is not None
    assert reply.incomplete_details.reason == reason
    assert found["output"][0]["status"] == "incomplete"


def test_a_refusal_is_a_refusal_part_and_no_usage_is_none() -> None:
    found = responses.from_chat(completion(None, refusal="I can't"), {"model": "m"}, RID, 0)
    reply = Response.model_validate(found)
    assert found["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't"}]
    assert reply.usage is None and reply.model == "upstream-1"


def test_a_completion_out_of_shape_is_malformed() -> None:
    for junk in ({"choices": "x"}, {"choices": [5]}, {"choices": [{"message": {"content": 5}}]},
                 {"choices": [{"message": {"tool_calls": [{"function": "f"}]}}]},
                 {"choices": [], "usage": {"prompt_tokens": -1}}):
        with pytest.raises(Malformed):
            responses.from_chat(junk, {"model": "m"}, RID, 0)


def test_usage_in_chat_terms() -> None:
    assert responses.usage({"usage": {
        "input_tokens": 2000, "output_tokens": 300, "total_tokens": 2300,
        "input_tokens_details": {"cached_tokens": 1500, "cache_write_tokens": 100},
        "output_tokens_details": {"reasoning_tokens": 200}}}) == {
        "prompt_tokens": 2000, "completion_tokens": 300, "total_tokens": 2300,
        "prompt_tokens_details": {"cached_tokens": 1500, "cache_write_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 200}}
    assert responses.usage({"usage": {"input_tokens": 9, "output_tokens": 3}}) == {
        "prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}}
    assert responses.usage({"usage": None}) is None and responses.usage({}) is None
    junk: Any
    for junk in ("x", {"input_tokens": "9"}, {"input_tokens_details": []}):
        with pytest.raises(Malformed):
            responses.usage({"usage": junk})


calls = st.lists(st.tuples(st.text(max_size=6), st.sampled_from(["weather", "crm__lookup",
                                                                 "other"]),
                           st.text(max_size=20)), max_size=3)
usages = st.none() | st.builds(
    lambda p, c, cached, reasoning: {
        "prompt_tokens": p + cached, "completion_tokens": c + reasoning,
        "total_tokens": p + cached + c + reasoning,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning}},
    *(st.integers(0, 10**6),) * 4)
answers = st.builds(completion, st.none() | st.text(max_size=30), calls,
                    st.sampled_from(["stop", "length", "tool_calls", "content_filter"]), usages,
                    st.none() | st.text(max_size=10))
REQUEST = {"model": "gpt-4o", "input": "hi", "tools": [WEATHER, CRM], "store": True}


@settings(max_examples=200, deadline=None)
@given(answer=answers)
def test_a_response_carries_back_the_message_and_usage_it_came_from(
        answer: dict[str, Any]) -> None:
    found = responses.from_chat(answer, REQUEST, RID, CREATED)
    Response.model_validate(found)
    chat = responses.to_chat({"model": "m", "input": "next"},
                             [*responses.items(REQUEST), *found["output"]])
    message = answer["choices"][0]["message"]
    if not (message["content"] or message["refusal"] or message.get("tool_calls")):
        assert chat["messages"][1:] == [{"role": "user", "content": "next"}]
        return
    back = chat["messages"][1]
    said = [{"type": "text", "text": message["content"]}] if message["content"] else []
    said += [{"type": "refusal", "refusal": message["refusal"]}] if message["refusal"] else []
    expected_content = said[0]["text"] if len(said) == 1 and said[0]["type"] == "text" \
        else said or None
    assert back.get("content") == expected_content
    calls_back = [(c["id"], c["function"]["name"], c["function"]["arguments"])
                  for c in back.get("tool_calls", [])]
    assert calls_back == [(c["id"] or f"call_{'ab' * 25}_{i + bool(said)}",
                           c["function"]["name"], c["function"]["arguments"])
                          for i, c in enumerate(message.get("tool_calls", []))]
    if answer["usage"] is not None:
        priced = responses.usage(found)
        assert priced is not None
        assert {k: priced[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")} \
            == {k: answer["usage"][k] for k in ("prompt_tokens", "completion_tokens",
                                               "total_tokens")}
        assert priced["prompt_tokens_details"] == answer["usage"]["prompt_tokens_details"]


# ------------------------------------------------------------------- stream

@settings(max_examples=200, deadline=None)
@given(answer=answers, pieces=st.integers(1, 5))
def test_a_streamed_answer_is_the_same_response_as_the_answer_whole(
        answer: dict[str, Any], pieces: int) -> None:
    events, stream = streamed(REQUEST, chunks_of(answer, pieces))
    for event in events:
        EVENTS.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert stream.response() == responses.from_chat(answer, REQUEST, RID, CREATED)
    assert events[-1]["response"] == stream.response()
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert added == sorted(set(added)) == sorted(done) == list(range(len(added)))


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(json_values | st.fixed_dictionaries({}, optional={
    "model": json_values, "usage": json_values, "choices": st.lists(
        st.fixed_dictionaries({}, optional={"index": json_values, "finish_reason": json_values,
                                            "delta": json_values | st.fixed_dictionaries(
                                                {}, optional={"content": json_values,
                                                              "refusal": json_values,
                                                              "tool_calls": json_values})}),
        max_size=2) | json_values}), max_size=6))
def test_junk_chunks_are_skipped_and_the_events_stay_valid(chunks: list[Any]) -> None:
    stream = responses.Stream(REQUEST, RID, CREATED)
    events = stream.start()
    for chunk in chunks:
        events += stream.chunk(chunk if isinstance(chunk, dict) else {"choices": chunk})
    events += stream.end()
    for event in events:
        EVENTS.validate_python(event)
    Response.model_validate(stream.response())


class Served:
    """A loopback `/v1/responses` that streams whatever events a test sets."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.bodies: list[dict[str, Any]] = []

    async def route(self, request: Request) -> StreamingResponse:
        self.bodies.append(await request.json())

        async def frames() -> AsyncIterator[bytes]:
            for event in self.events:
                yield responses.sse(event)
        return StreamingResponse(frames(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Served, openai.OpenAI]]:
    loopback = Served()
    app = Starlette(routes=[Route("/v1/responses", loopback.route, methods=["POST"])])
    with serving(app) as url, \
            openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client:
        yield loopback, client


def test_sse_frames_an_event_with_its_type() -> None:
    frame = responses.sse({"type": "response.output_text.delta", "delta": "é\n",
                           "sequence_number": 4})
    head, data, end = frame.split(b"\n", 2)
    assert head == b"event: response.output_text.delta" and end == b"\n"
    assert orjson.loads(data.removeprefix(b"data: ")) == {
        "type": "response.output_text.delta", "delta": "é\n", "sequence_number": 4}


def test_the_sdk_reads_a_streamed_answer(served: tuple[Served, openai.OpenAI]) -> None:
    loopback, client = served
    answer = completion("Paris is sunny", usage={"prompt_tokens": 9, "completion_tokens": 3,
                                                 "total_tokens": 12})
    loopback.events = streamed(REQUEST, chunks_of(answer))[0]
    events = list(client.responses.create(model="gpt-4o", input="hi", stream=True))
    assert [e.type for e in events][:4] == ["response.created", "response.in_progress",
                                            "response.output_item.added",
                                            "response.content_part.added"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == \
        "Paris is sunny"
    assert events[-1].type == "response.completed"
    with client.responses.stream(model="gpt-4o", input="hi") as stream:
        texts = [e.snapshot for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert texts[-1] == "Paris is sunny" and final.output_text == "Paris is sunny"
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens,
                                        final.usage.total_tokens) == (9, 3, 12)
    assert final.id == RID and final.model == "upstream-1"


def test_the_sdk_reads_streamed_function_calls(served: tuple[Served, openai.OpenAI]) -> None:
    loopback, client = served
    answer = completion("", [("call_1", "weather", '{"city": "Paris"}'),
                             ("call_2", "crm__lookup", '{"name": "Ada"}')], "tool_calls",
                        {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28,
                         "prompt_tokens_details": {"cached_tokens": 16}})
    loopback.events = streamed(REQUEST, chunks_of(answer))[0]
    with client.responses.stream(model="gpt-4o", input="weather?",
                                 tools=[WEATHER, CRM]) as stream:  # type: ignore[list-item]
        arguments = [e.snapshot for e in stream
                     if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert arguments[-1] == '{"name": "Ada"}'
    weather, lookup = final.output
    assert weather.type == "function_call" and weather.parsed_arguments == {"city": "Paris"}
    assert (weather.call_id, weather.name, weather.status) == ("call_1", "weather",
                                                               "completed")
    assert lookup.type == "function_call" and (lookup.namespace, lookup.name,
                                               lookup.arguments) == ("crm", "lookup",
                                                                     '{"name": "Ada"}')
    assert final.usage is not None and final.usage.input_tokens_details.cached_tokens == 16


def test_a_cut_stream_ends_incomplete(served: tuple[Served, openai.OpenAI]) -> None:
    loopback, client = served
    loopback.events = streamed(REQUEST, chunks_of(completion("half an ans", finish="length")))[0]
    events = list(client.responses.create(model="gpt-4o", input="hi", stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details is not None
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert events[-1].response.output_text == "half an ans"


def test_a_broken_stream_ends_failed_and_no_client_takes_it_for_complete(
        served: tuple[Served, openai.OpenAI]) -> None:
    loopback, client = served
    stream = responses.Stream(REQUEST, RID, CREATED)
    events = stream.start()
    for chunk in chunks_of(completion("never finished"))[:3]:
        events += stream.chunk(chunk)
    events += stream.failed("the stream broke after it began: upstream reset")
    loopback.events = events
    raw = list(client.responses.create(model="gpt-4o", input="hi", stream=True))
    assert raw[-1].type == "response.failed" and raw[-1].response.status == "failed"
    assert raw[-1].response.error is not None
    assert (raw[-1].response.error.code, raw[-1].response.error.message) == (
        "server_error", "the stream broke after it began: upstream reset")
    said = raw[-1].response.output[0]
    assert said.type == "message" and said.status == "incomplete"
    with client.responses.stream(model="gpt-4o", input="hi") as sdk_stream, \
            pytest.raises(RuntimeError, match=r"response\.completed"):
        sdk_stream.get_final_response()
    assert stream.response()["status"] == "failed"


def test_new_ids_look_like_openais_and_differ() -> None:
    made = {responses.new_id() for _ in range(100)}
    assert len(made) == 100
    assert all(i.startswith("resp_") and len(i) == 55 for i in made)
