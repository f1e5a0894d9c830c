"""The fakes are honest: each is driven by its provider's official SDK.

If an SDK cannot parse what a fake sends, the fake has drifted from the real
wire format, and the adapter tests built on it would prove nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from tests.fakes import API_KEY, Script, anthropic_fake, gemini_fake, openai_fake, serving


@pytest.fixture(scope="module")
def openai_url() -> Iterator[str]:
    with serving(openai_fake.app(Script())) as url:
        yield url


@pytest.fixture(scope="module")
def anthropic_url() -> Iterator[str]:
    with serving(anthropic_fake.app(Script())) as url:
        yield url


@pytest.fixture(scope="module")
def gemini_url() -> Iterator[str]:
    with serving(gemini_fake.app(Script())) as url:
        yield url


def test_the_openai_sdk_reads_the_openai_fake(openai_url: str) -> None:
    client = openai.OpenAI(base_url=openai_url + "/v1", api_key=API_KEY, max_retries=0)
    reply = client.chat.completions.create(model="ok", messages=[{"role": "user",
                                                                   "content": "hi"}])
    assert reply.choices[0].message.content == "hello from ok"
    assert reply.usage is not None and reply.usage.total_tokens == 12
    chunks = list(client.chat.completions.create(
        model="ok", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "hello from ok"
    assert chunks[-1].usage is not None
    vectors = client.embeddings.create(model="emb", input=["a", "b"])
    assert len(vectors.data) == 2
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="limited", messages=[{"role": "user",
                                                                    "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=openai_url + "/v1", api_key="wrong", max_retries=0) \
            .chat.completions.create(model="ok", messages=[{"role": "user", "content": "hi"}])


def test_the_azure_client_reads_the_azure_routes(openai_url: str) -> None:
    client = openai.AzureOpenAI(azure_endpoint=openai_url, api_key=API_KEY,
                                api_version="2024-10-21", max_retries=0)
    reply = client.chat.completions.create(model="my-deployment", messages=[
        {"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello from my-deployment"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="my-deployment", messages=[{"role": "user", "content": "hi"}], stream=True)
        if c.choices)
    assert streamed == "hello from my-deployment"


def test_the_anthropic_sdk_reads_the_anthropic_fake(anthropic_url: str) -> None:
    client = anthropic.Anthropic(base_url=anthropic_url, api_key=API_KEY, max_retries=0)
    reply = client.messages.create(model="ok", max_tokens=64, system="be brief",
                                   messages=[{"role": "user", "content": "hi"}])
    assert reply.content[0].type == "text" and reply.content[0].text == "hello from ok"
    assert reply.stop_reason == "end_turn" and reply.usage.output_tokens == 6
    with client.messages.stream(model="ok", max_tokens=64,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        assert "".join(stream.text_stream) == "hello from ok"
        assert stream.get_final_message().stop_reason == "end_turn"
    tool = {"name": "weather", "description": "the weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    called = client.messages.create(model="ok", max_tokens=64, tools=[tool],  # type: ignore[list-item]
                                    messages=[{"role": "user", "content": "weather?"}])
    assert called.stop_reason == "tool_use" and called.content[0].type == "tool_use"
    with client.messages.stream(model="ok", max_tokens=64, tools=[tool],  # type: ignore[list-item]
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Paris"}
    bearer = anthropic.Anthropic(base_url=anthropic_url, auth_token=API_KEY, max_retries=0)
    assert bearer.messages.create(model="ok", max_tokens=8, messages=[
        {"role": "user", "content": "hi"}]).content[0].type == "text"


def test_the_google_genai_sdk_reads_the_gemini_fake(gemini_url: str) -> None:
    client = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=gemini_url))
    reply = client.models.generate_content(
        model="ok", contents="hi",
        config=types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=50))
    assert reply.text == "hello from ok"
    assert reply.usage_metadata is not None and reply.usage_metadata.total_token_count == 12
    streamed = "".join(c.text or "" for c in client.models.generate_content_stream(
        model="ok", contents="hi"))
    assert streamed == "hello from ok"
    weather = types.FunctionDeclaration(name="weather", description="the weather",
                                        parameters=types.Schema(type=types.Type.OBJECT))
    called = client.models.generate_content(
        model="ok", contents="weather?",
        config=types.GenerateContentConfig(tools=[types.Tool(function_declarations=[weather])]))
    assert called.function_calls and called.function_calls[0].args == {"city": "Paris"}
    vectors = client.models.embed_content(model="emb", contents=["a", "b"])
    assert vectors.embeddings is not None and len(vectors.embeddings) == 2


def test_the_anthropic_sdk_sees_the_anthropic_fakes_faults(anthropic_url: str) -> None:
    client = anthropic.Anthropic(base_url=anthropic_url, api_key=API_KEY, max_retries=0)
    hi: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.BadRequestError) as too_long:
        client.messages.create(model="too-long", max_tokens=8, messages=hi)
    assert "prompt is too long" in too_long.value.message
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        client.messages.create(model="overloaded", max_tokens=8, messages=hi)
    assert overloaded.value.status_code == 529
    with client.messages.stream(model="no-stop", max_tokens=8, messages=hi) as stream:
        assert "".join(stream.text_stream) == "hello from no-stop"  # the SDK ends at the body's end
    with pytest.raises(ValueError), client.messages.stream(  # the SDK does not skip a bad event
            model="bad-event", max_tokens=8, messages=hi) as stream:
        "".join(stream.text_stream)


def test_the_google_genai_sdk_sees_the_gemini_fakes_faults(gemini_url: str) -> None:
    client = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=gemini_url))
    with pytest.raises(genai.errors.ClientError) as too_long:
        client.models.generate_content(model="too-long", contents="hi")
    assert too_long.value.code == 400 and "maximum number of tokens" in str(too_long.value)
    with pytest.raises(genai.errors.ClientError) as exhausted:
        client.models.generate_content(model="exhausted", contents="hi")
    assert exhausted.value.code == 429 and "RetryInfo" in str(exhausted.value.details)
    blocked = client.models.generate_content(model="blocked", contents="hi")
    assert blocked.prompt_feedback is not None and blocked.text is None
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    seen: list[str] = []
    with pytest.raises(Exception):  # noqa: B017  # the connection drops after the last chunk
        for chunk in client.models.generate_content_stream(model="cut-after-finish",
                                                           contents="hi"):
            seen.append(chunk.text or "")
    assert "".join(seen) == "hello from cut-after-finish"
