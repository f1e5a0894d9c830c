"""Hostile input through the running gateway, to every provider family's fake.

Whatever JSON a client sends, gwc answers in OpenAI's error shape with an
`x-gw-request-id`, or with an answer, and never with a 500: a body that a
translation cannot express is a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.runtime.conftest import Stack

# one model per adapter: OpenAI, Azure, OpenAI-compatible, Anthropic, Gemini
FAMILIES = ["ok", "on-azure", "on-vllm", "claude", "gemini"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False,
                                                                       allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)

# Fields the translations read, given odd values: the gateway's own check passes
# most of them through untouched, so the adapters must cope.
odd_fields = st.fixed_dictionaries({}, optional={
    "stop": json_values, "tools": st.lists(json_values, max_size=3), "tool_choice": json_values,
    "top_p": json_values, "n": json_values, "user": json_values,
    "response_format": json_values, "max_completion_tokens": json_values,
    "stream": st.booleans(), "stream_options": json_values, "temperature": json_values,
    "seed": json_values, "logprobs": json_values,
})

parts = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": json_values}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": json_values}),
    st.dictionaries(st.text(max_size=6), json_values, max_size=3)), max_size=3)

messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool"]),
     "content": st.one_of(st.text(max_size=20), parts, st.none())},
    optional={"tool_calls": json_values, "tool_call_id": json_values, "name": json_values}),
    min_size=1, max_size=4)

bodies = st.builds(lambda model, msgs, extra: {"model": model, "messages": msgs, **extra},
                   st.sampled_from(FAMILIES), messages, odd_fields)


def check(answer: httpx.Response) -> None:
    assert answer.status_code != 500, answer.text
    assert answer.headers.get("x-gw-request-id"), answer.headers
    if answer.status_code >= 400:
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "code", "param"}, error
        assert isinstance(error["message"], str) and error["message"]


@pytest.fixture(scope="module")
def http(stack: Stack) -> Any:
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        yield client


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
def test_odd_but_valid_json_bodies_are_never_a_500(http: httpx.Client, body: Any) -> None:
    check(http.post("/v1/chat/completions", json=body))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=json_values)
def test_any_json_at_all_is_never_a_500(http: httpx.Client, body: Any) -> None:
    check(http.post("/v1/chat/completions", json=body))
    check(http.post("/v1/embeddings", json=body))


HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("model", "extra", "param"), [
    ("gemini", {"stop": 5}, "stop"),
    ("gemini", {"messages": [{"role": "assistant", "content": None, "tool_calls": ["oops"]}]},
     "messages[0].tool_calls[0]"),
    ("claude", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": "http://x/y.png"}]}]},
     "messages[0].content[0].image_url"),
    ("claude", {"tools": [{"type": "function", "function": "lookup"}]}, "tools[0].function"),
    ("claude", {"tools": [{"type": "function", "function": {"parameters": {}}}]},
     "tools[0].function.name"),
    ("gemini", {"tools": [{"type": "function", "function": {"description": "x"}}]},
     "tools[0].function.name"),
])
def test_what_a_translation_cannot_express_is_a_400_naming_the_field(
        http: httpx.Client, model: str, extra: dict[str, Any], param: str) -> None:
    answer = http.post("/v1/chat/completions", json={"model": model, "messages": HI, **extra})
    check(answer)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
