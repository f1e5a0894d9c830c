"""The OpenAI fake's Responses route is honest: the official openai SDK reads it.

As with the other fakes (tests/runtime/test_fakes.py), what the SDK cannot
parse, or parses into something else than was meant, is a fake that has
drifted from today's wire format. Each Response and event is also checked
against the SDK's own pydantic types, which its parser alone does not do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import FunctionToolParam, Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.fakes import API_KEY, Script, openai_fake, serving

WEATHER: FunctionToolParam = {
    "type": "function", "name": "weather", "description": "the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False},
    "strict": True}
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def script() -> Script:
    return Script()


@pytest.fixture(scope="module")
def client(script: Script) -> Iterator[openai.OpenAI]:
    with serving(openai_fake.app(script)) as url, \
            openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


def test_a_plain_response_is_a_message_with_usage(client: openai.OpenAI) -> None:
    reply = client.responses.create(model="ok", input="hi", instructions="be brief",
                                    max_output_tokens=50, metadata={"app": "wiki"})
    Response.model_validate(reply.model_dump())
    assert reply.status == "completed" and reply.output_text == "hello from ok"
    assert reply.id.startswith("resp_") and reply.output[0].type == "message"
    assert (reply.instructions, reply.max_output_tokens, reply.metadata) == (
        "be brief", 50, {"app": "wiki"})
    assert reply.usage is not None and (reply.usage.input_tokens, reply.usage.output_tokens,
                                        reply.usage.total_tokens) == (9, 3, 12)


def test_a_function_tool_is_called_then_its_output_answered(client: openai.OpenAI) -> None:
    called = client.responses.create(model="ok", input="weather in Paris?", tools=[WEATHER])
    call = called.output[0]
    assert call.type == "function_call" and call.name == "weather"
    assert call.arguments == '{"city": "Paris"}' and call.call_id
    answered = client.responses.create(model="ok", tools=[WEATHER], input=[
        {"role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": "weather",
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert answered.output_text == "hello from ok"


def test_a_follow_up_names_a_stored_response_or_is_refused(client: openai.OpenAI) -> None:
    first = client.responses.create(model="ok", input="hi")
    follow = client.responses.create(model="ok", input="and?", previous_response_id=first.id)
    assert follow.previous_response_id == first.id and follow.output_text == "hello from ok"
    unstored = client.responses.create(model="ok", input="hi", store=False)
    for unknown in (unstored.id, "resp_never"):
        with pytest.raises(openai.BadRequestError, match="not found"):
            client.responses.create(model="ok", input="and?", previous_response_id=unknown)


def test_a_stream_is_typed_events_in_order(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="ok", input="hi", stream=True))
    for event in events:
        EVENTS.validate_python(event.model_dump())
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == \
        "hello from ok"
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage is not None
    assert events[-1].response.usage.total_tokens == 12


def test_the_sdks_stream_helper_assembles_text_and_calls(client: openai.OpenAI) -> None:
    with client.responses.stream(model="ok", input="hi") as stream:
        assert "".join(e.delta for e in stream if e.type == "response.output_text.delta") == \
            "hello from ok"
        assert stream.get_final_response().output_text == "hello from ok"
    with client.responses.stream(model="ok", input="weather?", tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and call.parsed_arguments == {"city": "Paris"}


def test_a_namespaced_function_is_called_with_its_namespace(client: openai.OpenAI) -> None:
    crm = {"type": "namespace", "name": "crm", "description": "customer records",
           "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]}
    reply = client.responses.create(model="ok", input="who?", tools=[crm])  # type: ignore[list-item]
    call = reply.output[0]
    assert call.type == "function_call" and (call.namespace, call.name) == ("crm", "lookup")


def test_a_reasoning_model_answers_a_reasoning_item_first(client: openai.OpenAI) -> None:
    reply = client.responses.create(model="cached", input="hi",
                                    include=["reasoning.encrypted_content"], store=False)
    assert [item.type for item in reply.output] == ["reasoning", "message"]
    assert reply.output[0].type == "reasoning" and reply.output[0].encrypted_content
    assert reply.usage is not None
    assert reply.usage.input_tokens_details.cached_tokens == 1500
    assert reply.usage.output_tokens_details.reasoning_tokens == 200
    with client.responses.stream(model="cached", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "hello from cached" and final.output[0].type == "reasoning"


def test_an_incomplete_response_says_why(client: openai.OpenAI) -> None:
    reply = client.responses.create(model="incomplete", input="hi", max_output_tokens=16)
    assert reply.status == "incomplete" and reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    events = list(client.responses.create(model="incomplete", input="hi", stream=True))
    assert events[-1].type == "response.incomplete"


def test_the_scripted_faults(client: openai.OpenAI, script: Script) -> None:
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="limited", input="hi")
    assert client.responses.create(model="limited", input="hi").output_text == \
        "hello from limited"
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="error-500", input="hi")
    with openai.OpenAI(base_url=str(client.base_url), api_key="wrong", max_retries=0) as wrong, \
            pytest.raises(openai.AuthenticationError):
        wrong.responses.create(model="ok", input="hi")
    events = list(client.responses.create(model="failed", input="hi", stream=True))
    assert events[-1].type == "response.failed" and events[-1].response.error is not None
    assert events[-1].response.error.code == "server_error"
    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):  # the connection drops mid-stream
        for event in client.responses.create(model="cut", input="hi", stream=True):
            seen.append(event.type)
    assert seen.count("response.output_text.delta") == 2 and "response.completed" not in seen
    assert script.bodies[-1]["input"] == "hi" and script.calls["cut"] == 1
