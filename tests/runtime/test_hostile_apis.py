"""Hostile clients of the Messages and Responses routes, to every provider family's fake.

test_hostile.py's standard, for the two APIs the gateway gained: whatever a
client sends, the answer is an answer or a refusal in the route's own error
shape (Anthropic's `{"type": "error", "error": {"type", "message"}}` on the
Messages routes, OpenAI's `{"error": {"message", "type", "code", "param"}}`
on the Responses ones), with an `x-gw-request-id`, and never a 500; and a
refused request changes nothing: no stored response, no spend. Bodies are
random JSON, then random requests in each API's shape (a `system` turn,
empty content, tool results answering no tool use, images whose base64 is
not, hosted tools, junk items), through the running gateway to Anthropic
(native for Messages), OpenAI (native for Responses), an OpenAI-compatible
server, Azure and Gemini; stored chains with junk in their history; bodies
too large or too deep; odd response ids; another team's responses.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from policies.responses_store import Owner
from tests.runtime import test_limits
from tests.runtime.conftest import Stack
from tests.runtime.test_limits import ROUTE

run, upstreams = test_limits.run, test_limits.upstreams  # the limits tests' gateway fixtures

# Anthropic natively, then OpenAI, Azure and an OpenAI-compatible server and Gemini through chat
MESSAGES_FAMILIES = ["claude", "ok", "on-azure", "on-vllm", "gemini"]
# OpenAI natively, then an OpenAI-compatible server, Anthropic and Gemini through chat
RESPONSES_FAMILIES = ["ok", "on-vllm", "claude", "gemini"]
# The same families for random bodies, under models of their own: a fake may fail (500) on
# junk the real API would refuse (400), and its breaker must not shut the others' models.
FUZZED_MESSAGES = ["claude-think", "ok", "on-azure", "on-vllm", "gemini"]
FUZZED_RESPONSES = ["spread", "on-vllm", "claude", "gemini"]
TEAM = {"x-team": "research"}
OTHER_TEAM = {"x-team": "legal"}
ANTHROPIC_TYPES = {"invalid_request_error", "authentication_error", "billing_error",
                   "permission_error", "not_found_error", "request_too_large",
                   "rate_limit_error", "api_error", "overloaded_error"}
HYPOTHESIS = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=30, headers=TEAM) as client:
        yield client


def stored(stack: Stack) -> int:
    records = stack.gateway.state.records
    assert records is not None
    return int(records.rows("SELECT COUNT(*) FROM responses")[0][0])


class Kept:
    """How many responses the gateway keeps, as a fixture whose repr is short (a failing
    example's report shows its fixtures, and the stack's fakes have seen a lot)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def __call__(self) -> int:
        return stored(self.stack)

    def __repr__(self) -> str:
        return "kept"


@pytest.fixture(scope="module")
def kept(stack: Stack) -> Kept:
    return Kept(stack)


def sse(answer: httpx.Response) -> list[dict[str, Any]]:
    # SSE ends a line at CR or LF only: not at the other breaks str.splitlines knows
    # (U+0085, U+2028), which orjson writes as they are inside strings
    return [json.loads(line[5:]) for line in answer.text.replace("\r\n", "\n").split("\n")
            if line.startswith("data:") and line[5:].strip() != "[DONE]"]


def check_messages(answer: httpx.Response) -> None:
    """An answer of a Messages route: a Message, a count, its stream, or Anthropic's error."""
    assert answer.status_code != 500, answer.text
    assert answer.headers.get("x-gw-request-id"), answer.headers
    if answer.status_code >= 400:
        body = answer.json()
        assert set(body) == {"type", "error"} and body["type"] == "error", body
        assert set(body["error"]) == {"type", "message"}, body
        assert body["error"]["type"] in ANTHROPIC_TYPES, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        return
    if answer.headers["content-type"].startswith("text/event-stream"):
        events = sse(answer)
        assert events[0]["type"] == "message_start", events
        assert events[-1]["type"] == "message_stop", events
    else:
        body = answer.json()
        assert body.get("type") == "message" or isinstance(body.get("input_tokens"), int), body


def check_responses(answer: httpx.Response) -> None:
    """An answer of a Responses route: a Response, its stream, or OpenAI's error."""
    assert answer.status_code != 500, answer.text
    assert answer.headers.get("x-gw-request-id"), answer.headers
    if answer.status_code >= 400:
        body = answer.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "code", "param"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        return
    if answer.headers["content-type"].startswith("text/event-stream"):
        events = sse(answer)
        assert events[0]["type"] == "response.created", events
        assert events[-1]["type"] in ("response.completed", "response.incomplete"), events
    else:
        assert answer.json().get("object") == "response", answer.text


# ------------------------------------------------------------------ random JSON

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


@HYPOTHESIS
@given(body=json_values)
def test_any_json_at_all_is_never_a_500_on_the_new_routes(kept: Kept, http: httpx.Client,
                                                          body: Any) -> None:
    before = kept()
    check_messages(http.post("/v1/messages", json=body))
    check_messages(http.post("/v1/messages/count_tokens", json=body))
    answer = http.post("/v1/responses", json=body)
    check_responses(answer)
    if answer.status_code != 200:
        assert kept() == before


# ------------------------------------------------------------ random Messages

text_or_junk = st.one_of(st.text(max_size=16), json_values)
base64ish = st.sampled_from(["iVBORw0KGgo=", "!!!not base64!!!", "", "=", "AAAA" * 3,
                             "data:image/png;base64,AAAA"])
media_types = st.sampled_from(["image/png", "image/jpeg", "application/pdf", "text/plain",
                               "image/svg+xml", "", "x"]) | json_values
sources = st.one_of(
    st.fixed_dictionaries({"type": st.just("base64"), "media_type": media_types,
                           "data": base64ish | json_values}),
    st.fixed_dictionaries({"type": st.just("url"), "url": st.sampled_from(
        ["https://example.com/a.png", "", "file:///etc/passwd"]) | json_values}),
    st.fixed_dictionaries({"type": st.sampled_from(["text", "file", "content"]),
                           "data": json_values, "file_id": json_values}),
    json_values)
inner_blocks = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": text_or_junk}),
    st.fixed_dictionaries({"type": st.just("image"), "source": sources}),
    json_values), max_size=3)
blocks = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": text_or_junk},
                          optional={"cache_control": json_values, "citations": json_values}),
    st.fixed_dictionaries({"type": st.sampled_from(["image", "document"]), "source": sources},
                          optional={"title": json_values}),
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": text_or_junk,
                           "name": text_or_junk, "input": json_values}),
    st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": text_or_junk},
                          optional={"content": st.one_of(st.text(max_size=8), inner_blocks,
                                                         json_values),
                                    "is_error": json_values}),
    st.fixed_dictionaries({"type": st.sampled_from(["thinking", "redacted_thinking"]),
                           "thinking": text_or_junk, "signature": text_or_junk}),
    st.fixed_dictionaries({"type": st.sampled_from(["server_tool_use", "web_search_tool_result",
                                                    "container_upload", "search_result"])}),
    st.dictionaries(st.text(max_size=6), json_values, max_size=3)), max_size=4)
objects = st.dictionaries(st.text(max_size=6), json_values, max_size=3)
# The envelope passes the gateway's own check (runtime/schemas.py), so that what is odd
# reaches the translations and the upstreams: the random JSON above covers the rest.
turns = st.lists(st.fixed_dictionaries({
    "role": st.sampled_from(["user", "assistant", "system"]),
    "content": st.one_of(st.text(max_size=20), blocks)}), min_size=1, max_size=4)
tools = st.lists(st.one_of(
    st.fixed_dictionaries({"name": text_or_junk},
                          optional={"description": text_or_junk, "input_schema": json_values,
                                    "type": st.sampled_from(["custom", "web_search_20250305",
                                                             "bash_20250124"]) | json_values,
                                    "cache_control": json_values}),
    objects), max_size=3)
message_fields = st.fixed_dictionaries({}, optional={
    "system": st.one_of(st.text(max_size=12), blocks),
    "tools": tools, "tool_choice": st.one_of(
        st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "tool", "none"])
                               | json_values},
                              optional={"name": text_or_junk,
                                        "disable_parallel_tool_use": json_values}),
        json_values),
    "stop_sequences": json_values, "temperature": st.floats(0, 1),
    "top_p": json_values, "top_k": json_values, "metadata": json_values,
    "thinking": json_values, "stream": st.booleans(),
    "max_tokens": st.integers(1, 2**64 - 1), "service_tier": json_values,
    "context_management": json_values,
})
message_bodies = st.builds(
    lambda model, messages, extra: {"model": model, "max_tokens": 64, "messages": messages,
                                    **extra},
    st.sampled_from(FUZZED_MESSAGES), turns, message_fields)


@HYPOTHESIS
@given(body=message_bodies)
def test_odd_messages_requests_are_never_a_500_to_any_provider(http: httpx.Client,
                                                               body: Any) -> None:
    check_messages(http.post("/v1/messages", json=body))


@HYPOTHESIS
@given(body=message_bodies)
def test_odd_token_counts_are_never_a_500_to_any_provider(http: httpx.Client,
                                                          body: Any) -> None:
    check_messages(http.post("/v1/messages/count_tokens", json=body))


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}}


@pytest.mark.parametrize("model", MESSAGES_FAMILIES)
@pytest.mark.parametrize(("name", "messages"), [
    ("a system turn", [{"role": "user", "content": "hi"},
                       {"role": "system", "content": "be brief"},
                       {"role": "user", "content": "and?"}]),
    ("only a system turn", [{"role": "system", "content": "be brief"}]),
    ("a system turn of blocks", [{"role": "system", "content": [
        {"type": "text", "text": "be brief"}]}, {"role": "user", "content": "hi"}]),
    ("an empty content list", [{"role": "user", "content": []}]),
    ("an empty string", [{"role": "user", "content": ""}]),
    ("an assistant first", [{"role": "assistant", "content": "hello"},
                            {"role": "user", "content": "hi"}]),
    ("two user turns", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
    ("a tool result answering nothing", [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_nowhere", "content": "sunny"}]}]),
    ("a tool result of blocks, as an error", [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "is_error": True,
         "content": [{"type": "text", "text": "failed"}]}]}]),
    ("a tool result with an image", [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [IMAGE]}]}]),
    ("a tool use in a user turn", [{"role": "user", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]),
    ("a tool use without a name", [{"role": "user", "content": "hi"}, {
        "role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]}]),
    ("bad base64", [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "%%% not base64 %%%"}}]}]),
    ("a media type that is no image", [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "text/html",
                                     "data": "PGgxPg=="}}]}]),
    ("an image without a source", [{"role": "user", "content": [{"type": "image"}]}]),
    ("a text document", [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                        "data": "hello"}}]}]),
    ("a thinking block only", [{"role": "user", "content": "hi"}, {
        "role": "assistant", "content": [{"type": "thinking", "thinking": "hm",
                                          "signature": "forged"}]},
        {"role": "user", "content": "go on"}]),
    ("a block of no known type", [{"role": "user", "content": [{"type": "hologram"}]}]),
    ("a block without a type", [{"role": "user", "content": [{"text": "hi"}]}]),
])
def test_awkward_messages_are_answered_or_refused_cleanly(
        http: httpx.Client, model: str, name: str, messages: list[Any]) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        for stream in (False, True) if path == "/v1/messages" else (False,):
            answer = http.post(path, json={"model": model, "max_tokens": 32, "stream": stream,
                                           "messages": messages})
            check_messages(answer)


@pytest.mark.parametrize("model", ["ok", "on-vllm", "gemini"])
@pytest.mark.parametrize(("extra", "field"), [
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"name": ""}]}, "tools[0].name"),
    ({"tools": ["weather"]}, "tools[0]"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"system": [{"type": "image", "source": {}}]}, "system[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {
        "type": "base64", "media_type": "text/plain", "data": "aGk="}}]}]},
     "messages[0].content[0].source.media_type"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                 "content": [IMAGE]}]}]},
     "messages[0].content[0].content[0]"),
])
def test_what_chat_cannot_carry_is_a_400_naming_the_messages_field(
        http: httpx.Client, model: str, extra: dict[str, Any], field: str) -> None:
    body = {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}],
            **extra}
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        answer = http.post(path, json=body)
        check_messages(answer)
        assert answer.status_code == 400, answer.text
        assert f"'{field}'" in answer.json()["error"]["message"]


@pytest.mark.parametrize(("extra", "field"), [
    ({"tools": [{"name": "f", "input_schema": "an object, honest"}]}, "tools[0].input_schema"),
    ({"tools": [{"name": "f", "input_schema": {"type": "object"}}],
      "tool_choice": {"type": "tool", "name": 7}}, "tool_choice.name"),
    ({"stop_sequences": [5]}, "stop_sequences"),
])
def test_a_refusal_by_a_translated_provider_names_the_clients_messages_field(
        http: httpx.Client, extra: dict[str, Any], field: str) -> None:
    """Not the chat request's (`tools[0].function.parameters`, `stop`), which the client
    never sent; and count_tokens refuses what the Message itself would be refused for.
    (Both were wrong before 8a5a343.)"""
    body = {"model": "gemini", "max_tokens": 32,
            "messages": [{"role": "user", "content": "hi"}], **extra}
    answer = http.post("/v1/messages", json=body)
    check_messages(answer)
    assert answer.status_code == 400 and f"'{field}" in answer.json()["error"]["message"], \
        answer.text
    counted = http.post("/v1/messages/count_tokens", json=body)
    assert counted.status_code == 400, counted.text


PDF = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                      "data": "JVBERi0="}}


@pytest.mark.parametrize("model", MESSAGES_FAMILIES)
def test_a_pdf_given_inline_reaches_every_provider(http: httpx.Client, model: str) -> None:
    answer = http.post("/v1/messages", json={"model": model, "max_tokens": 32,
                                             "system": "be brief",
                                             "messages": [{"role": "user", "content": [PDF]}]})
    check_messages(answer)
    assert answer.status_code == 200, answer.text


# ------------------------------------------------------------ random Responses

parts = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["input_text", "output_text"]),
                           "text": text_or_junk}),
    st.fixed_dictionaries({"type": st.just("input_image"), "image_url": st.sampled_from(
        ["https://example.com/a.png", "data:image/png;base64,!!!", ""]) | json_values},
                          optional={"detail": json_values, "file_id": json_values}),
    st.fixed_dictionaries({"type": st.just("input_file")},
                          optional={"file_data": text_or_junk, "file_id": text_or_junk,
                                    "filename": text_or_junk, "file_url": text_or_junk}),
    st.fixed_dictionaries({"type": st.just("refusal"), "refusal": text_or_junk}),
    json_values), max_size=3)
items = st.lists(st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system",
                                                    "developer"]),
                           "content": st.one_of(st.text(max_size=12), parts)},
                          optional={"type": st.just("message"), "id": text_or_junk,
                                    "status": json_values}),
    st.fixed_dictionaries({"role": st.sampled_from(["tool", "critic"]) | json_values,
                           "content": json_values}),
    st.fixed_dictionaries({"type": st.just("function_call"), "call_id": text_or_junk,
                           "name": text_or_junk, "arguments": text_or_junk},
                          optional={"namespace": text_or_junk, "id": text_or_junk}),
    st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": text_or_junk,
                           "output": st.one_of(st.text(max_size=8), parts, json_values)}),
    st.fixed_dictionaries({"type": st.sampled_from([
        "reasoning", "item_reference", "web_search_call", "computer_call_output",
        "custom_tool_call", "mcp_call", "local_shell_call"])},
        optional={"id": text_or_junk, "summary": json_values,
                  "encrypted_content": json_values}),
    objects), max_size=4)
response_tools = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("function"), "name": text_or_junk},
                          optional={"parameters": json_values, "strict": json_values,
                                    "description": text_or_junk}),
    st.fixed_dictionaries({"type": st.just("namespace"), "name": text_or_junk,
                           "tools": st.lists(json_values, max_size=2)}),
    st.fixed_dictionaries({"type": st.sampled_from(["web_search", "file_search", "mcp",
                                                    "code_interpreter", "custom"])}),
    objects), max_size=3)
response_fields = st.fixed_dictionaries({}, optional={
    "instructions": st.text(max_size=12), "tools": response_tools,
    "tool_choice": st.sampled_from(["auto", "none", "required"]) | json_values,
    "parallel_tool_calls": json_values, "max_output_tokens": st.integers(1, 2**64 - 1),
    "temperature": st.floats(0, 2), "top_p": json_values,
    "metadata": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2),
    "store": st.booleans(), "stream": st.booleans(),
    "text": st.one_of(st.fixed_dictionaries({"format": json_values},
                                            optional={"verbosity": json_values}), json_values),
    "reasoning": json_values, "include": json_values, "truncation": json_values,
    "background": json_values, "conversation": json_values, "prompt": json_values,
    "user": json_values, "service_tier": json_values,
})
response_bodies = st.builds(
    lambda model, given, extra: {"model": model, "input": given, **extra},
    st.sampled_from(FUZZED_RESPONSES), st.one_of(st.text(max_size=12), items),
    response_fields)


@HYPOTHESIS
@given(body=response_bodies)
def test_odd_responses_requests_are_never_a_500_and_keep_nothing_when_refused(
        kept: Kept, http: httpx.Client, body: Any) -> None:
    before = kept()
    answer = http.post("/v1/responses", json=body)
    check_responses(answer)
    if answer.status_code != 200 or body.get("store") is False:
        assert kept() == before


@pytest.mark.parametrize("model", ["claude", "gemini"])
def test_a_refusal_by_a_translated_provider_names_the_clients_responses_field(
        http: httpx.Client, model: str) -> None:
    """The chat adapter refuses a file given by `file_id` only; the 400 names the item the
    client sent, not the chat message it became (`messages[1]`, one on for the system
    message `instructions` made), as it did before base.renamed."""
    answer = http.post("/v1/responses", json={
        "model": model, "instructions": "be brief", "input": [{
            "type": "message", "role": "user", "content": [{
                "type": "input_file", "file_id": "file-abc123"}]}]})
    check_responses(answer)
    assert answer.status_code == 400
    assert str(answer.json()["error"]["param"]).startswith("input[0].content[0]"), answer.text


@pytest.mark.parametrize("model", RESPONSES_FAMILIES)
def test_a_pdf_given_inline_reaches_every_provider_by_responses(http: httpx.Client,
                                                                 model: str) -> None:
    answer = http.post("/v1/responses", json={
        "model": model, "instructions": "be brief", "input": [{
            "type": "message", "role": "user", "content": [{
                "type": "input_file", "filename": "a.pdf",
                "file_data": "data:application/pdf;base64,JVBERi0="}]}]})
    check_responses(answer)
    assert answer.status_code == 200, answer.text


# ------------------------------------------------- stored chains with junk in them

junk_items = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from([
        "item_reference", "web_search_call", "mcp_call", "hologram"])},
        optional={"id": text_or_junk, "status": json_values}),
    st.fixed_dictionaries({"type": st.just("message"),
                           "role": st.sampled_from(["user", "assistant", "narrator"]),
                           "content": st.one_of(st.text(max_size=8), parts, json_values)}),
    st.fixed_dictionaries({"type": st.just("function_call"), "call_id": text_or_junk,
                           "name": text_or_junk, "arguments": text_or_junk}),
    st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": text_or_junk,
                           "output": st.one_of(st.text(max_size=8), parts, json_values)}),
    st.fixed_dictionaries({"type": st.just("reasoning"), "encrypted_content": json_values})),
    min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(history=junk_items)
def test_junk_in_a_stored_chain_fails_closed_on_every_provider(
        kept: Kept, http: httpx.Client, history: list[Any]) -> None:
    """OpenAI takes (and the gateway stores) input a translation cannot carry; a follow-up
    to a chat provider is then a 400, never a 500 or an answer without that history, and
    it keeps nothing."""
    first = http.post("/v1/responses", json={"model": "spread", "input": [
        *history, {"type": "message", "role": "user", "content": "hi"}]})
    check_responses(first)
    if first.status_code != 200:
        return
    ident = first.json()["id"]
    for model in FUZZED_RESPONSES:
        before = kept()
        answer = http.post("/v1/responses", json={"model": model, "input": "go on",
                                                  "previous_response_id": ident})
        check_responses(answer)
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code == 400:
            assert answer.json()["error"]["param"] == "previous_response_id", answer.text
        assert kept() == before + (answer.status_code == 200)


@pytest.mark.parametrize("model", ["on-vllm", "claude", "gemini"])
def test_junk_in_the_stored_history_is_named_as_previous_response_id(
        http: httpx.Client, model: str) -> None:
    """The follow-up never sent it: it is the stored chain that cannot be continued there.
    (Before 8a5a343 the history went inline as the request's own `input`, and was named
    `input[0]...`.)"""
    first = http.post("/v1/responses", json={"model": "ok", "input": [
        {"type": "item_reference", "id": "msg_elsewhere"},
        {"type": "message", "role": "user", "content": "hi"}]}).json()
    answer = http.post("/v1/responses", json={"model": model, "input": "go on",
                                              "previous_response_id": first["id"]})
    check_responses(answer)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "previous_response_id", answer.text


def test_a_follow_ups_own_bad_item_is_named_where_the_client_put_it(
        http: httpx.Client) -> None:
    """`input[0]`, not its place after the stored history (`input[2]` before 8a5a343)."""
    first = http.post("/v1/responses", json={"model": "on-vllm", "input": "hi"}).json()
    answer = http.post("/v1/responses", json={"model": "on-vllm", "previous_response_id":
                                              first["id"], "input": [{"type": "hologram"}]})
    check_responses(answer)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "input[0].type", answer.text


def test_a_chain_whose_link_was_deleted_fails_closed(stack: Stack, http: httpx.Client) -> None:
    first = http.post("/v1/responses", json={"model": "ok", "input": "remember 7"}).json()
    second = http.post("/v1/responses", json={"model": "on-vllm", "input": "and 8",
                                              "previous_response_id": first["id"]}).json()
    assert http.delete(f"/v1/responses/{first['id']}").status_code == 200
    before = stored(stack)
    for stream in (False, True):
        answer = http.post("/v1/responses", json={"model": "on-vllm", "input": "which?",
                                                  "previous_response_id": second["id"],
                                                  "stream": stream})
        check_responses(answer)
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == "previous_response_id"
    assert stored(stack) == before


# ------------------------------------------------------------- huge and deep

def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens",
                                  "/v1/responses"])
def test_a_body_too_large_or_too_deep_is_refused_in_the_routes_shape(
        http: httpx.Client, path: str) -> None:
    check = check_responses if path == "/v1/responses" else check_messages
    huge = {"model": "ok", "max_tokens": 8, "input": "x" * 70_000,
            "messages": [{"role": "user", "content": "x" * 70_000}]}
    answer = http.post(path, json=huge)
    check(answer)
    assert answer.status_code == 413

    def pieces() -> Iterator[bytes]:  # no content-length: the limit counts what arrives
        yield b'{"model": "ok", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}]}'
    answer = http.post(path, content=pieces(), headers={"content-type": "application/json"})
    check(answer)
    assert answer.status_code == 413
    for depth in (250, 2000):  # past the gateway's bound, and past orjson's own
        brackets = b"[" * depth + b'"deep"' + b"]" * depth
        raw = b'{"model": "ok", "max_tokens": 8, "input": [{"role": "user", "content": "hi", ' \
            b'"x": ' + brackets + b'}], "messages": [{"role": "user", "content": "hi", "x": ' + \
            brackets + b"}]}"
        answer = http.post(path, content=raw, headers={"content-type": "application/json"})
        check(answer)
        assert answer.status_code == 400, answer.text
    for raw in (b"", b"{", b"\xff\xfe", b"[]", b"null", b'"text"', b"{}"):
        answer = http.post(path, content=raw, headers={"content-type": "application/json"})
        check(answer)
        assert answer.status_code == 400, (raw, answer.text)


@pytest.mark.parametrize("model", MESSAGES_FAMILIES)
def test_deep_but_allowed_fields_reach_every_provider(http: httpx.Client, model: str) -> None:
    """A body as deep as the gateway takes (200 levels), where each translation nests it
    deeper still: a tool's schema and a tool use's input."""
    schema = {"type": "object", "properties": {"x": nested(190)}}
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                                   "input": {"x": nested(190)}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                              "content": "ok"}]}]
    body = {"model": model, "max_tokens": 8, "messages": messages,
            "tools": [{"name": "f", "input_schema": schema}]}
    check_messages(http.post("/v1/messages", json=body))
    check_messages(http.post("/v1/messages", json={**body, "stream": True}))
    response = {"model": model if model in RESPONSES_FAMILIES else "ok", "input": [
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": str(nested(190))},
        {"type": "function_call_output", "call_id": "c", "output": "ok"}],
        "tools": [{"type": "function", "name": "f", "parameters": schema}]}
    check_responses(http.post("/v1/responses", json=response))


@pytest.mark.parametrize("model", MESSAGES_FAMILIES)
def test_thousands_of_turns_and_long_texts_are_served(http: httpx.Client, model: str) -> None:
    many = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"}
            for i in range(2001)]
    check_messages(http.post("/v1/messages", json={"model": model, "max_tokens": 8,
                                                   "messages": many}))
    long = [{"role": "user", "content": "word " * 12_000}]
    check_messages(http.post("/v1/messages/count_tokens", json={"model": model,
                                                                "messages": long}))
    if model in RESPONSES_FAMILIES:
        check_responses(http.post("/v1/responses", json={"model": model, "input": [
            {"role": "user", "content": "hi"} for _ in range(1500)]}))


# ---------------------------------------------------------- stored response ids

@HYPOTHESIS
@given(ident=st.text(min_size=1, max_size=300))
@example(ident=".")
@example(ident="..")
def test_any_response_id_is_a_404_in_openais_shape(http: httpx.Client, ident: str) -> None:
    quoted = urllib.parse.quote(ident, safe="")
    if quoted in (".", ".."):  # a dot segment, which the client would remove (RFC 3986)
        quoted = quoted.replace(".", "%2E")
    for method in ("GET", "DELETE"):
        answer = http.request(method, f"/v1/responses/{quoted}")
        check_responses(answer)
        assert answer.status_code == 404, (ident, answer.text)


@pytest.mark.parametrize("ident", ["..", "%2e%2e", "a%2Fb", "%00", "%ff", "x" * 5000,
                                   "' OR '1'='1", "resp_%25", "*", "%3F", "%23"])
def test_odd_response_ids_in_the_path(http: httpx.Client, ident: str) -> None:
    for method in ("GET", "DELETE", "POST", "PUT"):
        answer = http.request(method, f"/v1/responses/{ident}")
        check_responses(answer)
        assert answer.status_code in (404, 405), answer.text


def test_another_teams_response_is_as_unknown_as_one_never_stored(
        stack: Stack, http: httpx.Client) -> None:
    mine = http.post("/v1/responses", json={"model": "ok", "input": "the secret is zebra"}).json()
    with httpx.Client(base_url=stack.url, timeout=30, headers=OTHER_TEAM) as other:
        before = stored(stack)
        for model in RESPONSES_FAMILIES:
            for stream in (False, True):
                answer = other.post("/v1/responses", json={
                    "model": model, "input": "what was it?", "previous_response_id": mine["id"],
                    "stream": stream})
                check_responses(answer)
                assert answer.status_code == 400, answer.text
                error = answer.json()["error"]
                assert error["param"] == "previous_response_id" and "zebra" not in str(error)
                unknown = other.post("/v1/responses", json={
                    "model": model, "input": "what was it?", "stream": stream,
                    "previous_response_id": "resp_" + "0" * 50}).json()["error"]
                assert unknown["message"].replace("resp_" + "0" * 50, mine["id"]) == \
                    error["message"]  # word for word what a made-up id gets
        assert stored(stack) == before
        for method in ("GET", "DELETE"):
            answer = other.request(method, f"/v1/responses/{mine['id']}")
            check_responses(answer)
            assert answer.status_code == 404 and "zebra" not in answer.text
        with httpx.Client(base_url=stack.url, timeout=30) as nobody:  # no team at all
            assert nobody.get(f"/v1/responses/{mine['id']}").status_code == 404
    assert http.get(f"/v1/responses/{mine['id']}").json()["output"] == mine["output"]


def test_store_false_and_failed_requests_keep_nothing(stack: Stack, http: httpx.Client) -> None:
    before = stored(stack)
    for body in ({"model": "ok", "input": "x", "store": False},
                 {"model": "on-vllm", "input": "x", "store": False, "stream": True},
                 {"model": "all-broken", "input": "x"},
                 {"model": "cut", "input": "x", "stream": True},
                 {"model": "claude-cut", "input": "x", "stream": True},
                 {"model": "forbidden", "input": "x"},
                 {"model": "on-vllm", "input": "x", "tools": [{"type": "web_search"}]},
                 {"model": "ok", "input": "x", "store": "yes"}):
        with http.stream("POST", "/v1/responses", json=body) as answer:
            assert answer.status_code != 500
            try:
                answer.read()
            except httpx.RemoteProtocolError:  # a stream that broke is dropped
                assert body.get("stream") is True
                continue
        if answer.status_code >= 400:
            check_responses(answer)
    assert stored(stack) == before


# ------------------------------------------------------------ keys on the new routes

def test_keys_are_checked_on_every_new_route_in_its_shape(run: Any) -> None:
    with run(ROUTE) as gw:
        key_id, key = gw.new_key()
        body = {"model": "ok", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        for headers in ({}, {"x-api-key": "gw-nope"}, {"authorization": "Bearer gw-nope"},
                        {"authorization": "Basic Zm9vOmJhcg=="}, {"x-api-key": ""}):
            for path in ("/v1/messages", "/v1/messages/count_tokens"):
                answer = httpx.post(gw.url + path, json=body, headers=headers)
                check_messages(answer)
                assert answer.status_code == 401
                assert answer.json()["error"]["type"] == "authentication_error"
            answer = httpx.post(gw.url + "/v1/responses", json={"model": "ok", "input": "hi"},
                                headers=headers)
            check_responses(answer)
            assert answer.status_code == 401
            for method in ("GET", "DELETE"):
                answer = httpx.request(method, gw.url + "/v1/responses/resp_x", headers=headers)
                check_responses(answer)
                assert answer.status_code == 401
        assert httpx.post(gw.url + "/v1/messages", json=body,
                          headers={"x-api-key": key}).status_code == 200
        gw.keys.revoke(key_id)
        gw.refresh()
        answer = httpx.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": key})
        check_messages(answer)
        assert answer.status_code == 401 and key not in answer.text
        assert len(gw.spend()) == 1  # only the answer that was served


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/messages", {"model": "claude-cached", "max_tokens": 2**64 - 1,
                      "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/messages", {"model": "ok", "max_tokens": 2**63,
                      "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/responses", {"model": "ok", "input": "hi", "max_output_tokens": 2**64 - 1}),
])
def test_a_huge_max_tokens_cannot_erase_its_own_spend(run: Any, path: str,
                                                      body: dict[str, Any]) -> None:
    """The ledger's row for the request keeps a `max_tokens` past 64 bits (as a number
    SQLite takes), so the spend it carries is not dropped with it."""
    with run(ROUTE) as gw:
        _, key = gw.new_key()
        answer = httpx.post(gw.url + path, json=body, headers={"x-api-key": key})
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code == 200:
            [row] = gw.spend()
            assert row["usd"] > 0


def test_a_chain_past_its_bound_fails_closed(stack: Stack, http: httpx.Client) -> None:
    """1,001 stored links (written straight to the store: a thousand requests would be
    slow) are one too many to continue; the thousandth is still continued."""
    store = stack.gateway.state.responses
    assert store is not None
    owner, previous = Owner(None, TEAM["x-team"]), None
    for n in range(1001):
        ident = f"resp_chain{n:04d}"
        item = {"type": "message", "role": "user", "content": f"turn {n}"}
        store.save(ident, owner, deployment="ok", provider="fake", model="ok",
                   previous_response_id=previous, history=[item],
                   response={"id": ident, "object": "response", "status": "completed",
                             "output": []})
        previous = ident
    before = stored(stack)
    for model in ("ok", "on-vllm"):
        answer = http.post("/v1/responses", json={"model": model, "input": "go on",
                                                  "previous_response_id": previous})
        check_responses(answer)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == "previous_response_id"
    assert stored(stack) == before
    answer = http.post("/v1/responses", json={"model": "on-vllm", "input": "go on",
                                              "previous_response_id": "resp_chain0999"})
    assert answer.status_code == 200, answer.text
