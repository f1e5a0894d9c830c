"""`POST /v1/responses` end to end: the official openai SDK against the running gateway.

Served by an OpenAI fake that speaks Responses (passed through) and by
providers that speak only chat (an OpenAI-compatible one, Anthropic, Gemini:
translated), plain and streamed, with stored responses and their follow-ups.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.runtime.conftest import Stack

TARGETS = ["ok", "on-vllm", "claude", "gemini"]  # native, then translated through chat


@pytest.fixture
def sdk(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0,
                       default_headers={"x-team": "research"}) as client:
        yield client


@pytest.mark.parametrize("model", TARGETS)
def test_a_response_is_answered_by_every_provider_family(sdk: openai.OpenAI,
                                                         model: str) -> None:
    raw = sdk.responses.with_raw_response.create(model=model, input="hello")
    response = raw.parse()
    assert response.status == "completed"
    assert response.output_text.startswith(("hello from", "Hello from"))
    assert response.usage is not None and response.usage.input_tokens > 0
    assert raw.headers["x-gw-model"] == model


@pytest.mark.parametrize("model", TARGETS)
def test_a_streamed_response_has_its_typed_events(sdk: openai.OpenAI, model: str) -> None:
    with sdk.responses.stream(model=model, input="hello") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.status == "completed" and final.output_text
    assert final.usage is not None and final.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["ok", "on-vllm"])
def test_a_follow_up_carries_what_was_said(stack: Stack, sdk: openai.OpenAI,
                                           model: str) -> None:
    first = sdk.responses.create(model=model, input="My name is Ada.",
                                 instructions="Be brief.")
    second = sdk.responses.create(model=model, input="What is my name?",
                                  previous_response_id=first.id)
    assert second.status == "completed" and second.id != first.id
    sent = stack.openai.bodies[-1]
    said = str(sent.get("input") if model == "ok" else sent["messages"])
    assert "My name is Ada." in said and "What is my name?" in said
    assert first.output_text in said  # the answer it continues, in the history
    assert "previous_response_id" not in sent  # the gateway keeps the chain, not the upstream
    third = sdk.responses.create(model=model, input="And again?",
                                 previous_response_id=second.id)
    assert "My name is Ada." in str(stack.openai.bodies[-1]) and third.output_text


def test_a_follow_up_goes_back_to_the_deployment_that_answered(sdk: openai.OpenAI) -> None:
    first = sdk.responses.with_raw_response.create(
        model="sticky", input="hi", extra_headers={"x-start": "vllm"})
    assert first.headers["x-gw-model"] == "on-vllm"
    again = sdk.responses.with_raw_response.create(
        model="sticky", input="and?", previous_response_id=first.parse().id)
    assert again.headers["x-gw-model"] == "on-vllm"  # the plan alone would say `ok`
    fresh = sdk.responses.with_raw_response.create(model="sticky", input="new")
    assert fresh.headers["x-gw-model"] == "ok"


def test_an_unknown_or_anothers_response_cannot_be_continued_or_read(
        stack: Stack, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        sdk.responses.create(model="ok", input="hi", previous_response_id="resp_nope")
    assert unknown.value.param == "previous_response_id"
    mine = sdk.responses.create(model="ok", input="a secret")
    assert sdk.responses.retrieve(mine.id).output_text == mine.output_text
    with openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0,
                       default_headers={"x-team": "legal"}) as other:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(mine.id)
        with pytest.raises(openai.BadRequestError):
            other.responses.create(model="ok", input="hi", previous_response_id=mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(mine.id)
    sdk.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(mine.id)


def test_store_false_keeps_nothing(sdk: openai.OpenAI) -> None:
    said = sdk.responses.create(model="ok", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(said.id)
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="ok", input="hi", previous_response_id=said.id)


def test_a_streamed_response_is_stored_and_continued(stack: Stack, sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model="on-vllm", input="Remember 42.") as stream:
        first = stream.get_final_response()
    assert sdk.responses.retrieve(first.id).output_text == first.output_text
    sdk.responses.create(model="on-vllm", input="Which number?", previous_response_id=first.id)
    assert "Remember 42." in str(stack.openai.bodies[-1]["messages"])


def test_function_calls_and_their_outputs_go_both_ways(sdk: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "name": "weather", "description": "The weather",
                   "parameters": {"type": "object",
                                  "properties": {"city": {"type": "string"}}}}]
    for model in ("ok", "gemini"):
        first = sdk.responses.create(model=model, input="weather in Paris?", tools=tools)
        [call] = [item for item in first.output if item.type == "function_call"]
        assert call.name == "weather"
        second = sdk.responses.create(model=model, tools=tools, previous_response_id=first.id,
                                      input=[{"type": "function_call_output",
                                              "call_id": call.call_id, "output": "sunny"}])
        assert second.output_text


def test_errors_are_in_openais_shape(stack: Stack, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="nowhere", input="hi")
    raw = httpx.post(stack.url + "/v1/responses", json={"model": "ok", "input": 7})
    assert raw.status_code == 400 and set(raw.json()["error"]) == {
        "message", "type", "code", "param"}
    with pytest.raises(openai.BadRequestError) as hosted:  # chat has no web search
        sdk.responses.create(model="on-vllm", input="hi", tools=[{"type": "web_search"}])
    assert "tools[0]" in str(hosted.value)


def test_under_trusted_headers_a_response_is_its_users_not_the_teams(stack: Stack) -> None:
    def client(user: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0,
                             default_headers={"x-team": "research", "x-gw-user": user})
    with client("alice") as alice, client("bob") as bob:
        mine = alice.responses.create(model="ok", input="alice's secret")
        assert alice.responses.retrieve(mine.id).id == mine.id
        with pytest.raises(openai.NotFoundError):
            bob.responses.retrieve(mine.id)
        with pytest.raises(openai.BadRequestError):
            bob.responses.create(model="ok", input="go on", previous_response_id=mine.id)
