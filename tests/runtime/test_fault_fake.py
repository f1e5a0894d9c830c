"""The fault fake speaks OpenAI's wire format: each fault as the official SDK sees it.

If the openai SDK did not read the fake's answers, or did not fail on its
faults the way it fails on the real API's, the fault suite built on the fake
would prove nothing.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakes import API_KEY
from tests.fakes.faults import Faults, resume_text, serving_faults

HI = [{"role": "user", "content": "hi"}]
CLIENTS: list[openai.OpenAI] = []  # closed with the fake, so that no socket outlives the tests


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[str, Faults]]:
    with serving_faults(Faults(first_token_delay=0.4, stall_after=2, hold=5)) as served:
        yield served
        while CLIENTS:
            CLIENTS.pop().close()


@pytest.fixture
def faults(fake: tuple[str, Faults]) -> Iterator[Faults]:
    yield fake[1]
    fake[1].bring_back()


def client(fake: tuple[str, Faults], timeout: float = 5.0, api_key: str = API_KEY,
           **options: Any) -> openai.OpenAI:
    CLIENTS.append(openai.OpenAI(base_url=fake[0] + "/v1", api_key=api_key, max_retries=0,
                                 timeout=timeout, **options))
    return CLIENTS[-1]


def streamed(sdk: openai.OpenAI, model: str, **extra: Any) -> list[Any]:
    return list(sdk.chat.completions.create(model=model, messages=HI, stream=True,  # type: ignore[call-overload]
                                            stream_options={"include_usage": True}, **extra))


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_an_ordinary_model_answers_plain_and_streamed(fake: tuple[str, Faults]) -> None:
    sdk = client(fake)
    reply = sdk.chat.completions.create(model="ok", messages=HI)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "hello from ok"
    assert reply.usage is not None and reply.usage.total_tokens == 12
    chunks = streamed(sdk, "ok")
    assert text_of(chunks) == "hello from ok"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and not chunks[-1].choices


def test_every_call_is_recorded_with_its_time_and_body(fake: tuple[str, Faults]) -> None:
    sdk, faults = client(fake), fake[1]
    before = time.monotonic()
    sdk.chat.completions.create(model="recorded", messages=HI, temperature=0.5)  # type: ignore[arg-type]
    streamed(sdk, "recorded")
    plain, stream = faults.calls_to("recorded")
    assert before <= plain.at <= stream.at <= time.monotonic()
    assert plain.body["temperature"] == 0.5 and not plain.stream
    assert stream.stream and stream.body["stream_options"] == {"include_usage": True}
    assert plain.headers["authorization"] == f"Bearer {API_KEY}"


def test_429_with_retry_after_then_an_answer(fake: tuple[str, Faults]) -> None:
    sdk = client(fake)
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="429-retry-after", messages=HI)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "1"
    assert sdk.chat.completions.create(model="429-retry-after", messages=HI  # type: ignore[arg-type]
                                       ).choices[0].message.content
    with pytest.raises(openai.RateLimitError) as dated:
        sdk.chat.completions.create(model="429-retry-after-date", messages=HI)  # type: ignore[arg-type]
    when = email.utils.parsedate_to_datetime(dated.value.response.headers["retry-after"])
    assert -1 <= when.timestamp() - time.time() <= 2


def test_429_without_retry_after_persists(fake: tuple[str, Faults]) -> None:
    sdk = client(fake)
    for _ in range(3):
        with pytest.raises(openai.RateLimitError) as limited:
            sdk.chat.completions.create(model="429", messages=HI)  # type: ignore[arg-type]
        assert "retry-after" not in limited.value.response.headers


def test_500_once_then_an_answer_and_503_always(fake: tuple[str, Faults]) -> None:
    sdk = client(fake)
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="500-once", messages=HI)  # type: ignore[arg-type]
    assert sdk.chat.completions.create(model="500-once", messages=HI  # type: ignore[arg-type]
                                       ).choices[0].message.content == "hello from 500-once"
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as unavailable:
            streamed(sdk, "503")
        assert unavailable.value.status_code == 503


def test_status_faults_answer_to_a_name_a_policy_can_hold(fake: tuple[str, Faults]) -> None:
    sdk = client(fake)
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="status-500-once", messages=HI)  # type: ignore[arg-type]
    assert sdk.chat.completions.create(model="status-500-once", messages=HI  # type: ignore[arg-type]
                                       ).choices[0].message.content == "hello from status-500-once"
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="status-429", messages=HI)  # type: ignore[arg-type]


def test_a_reset_before_the_headers_is_a_connection_error(fake: tuple[str, Faults]) -> None:
    with pytest.raises(openai.APIConnectionError) as broken:
        client(fake).chat.completions.create(model="reset", messages=HI)  # type: ignore[arg-type]
    assert not isinstance(broken.value, openai.APITimeoutError)


def test_a_silent_upstream_ends_when_the_client_hangs_up(fake: tuple[str, Faults]) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client(fake, timeout=0.3).chat.completions.create(model="silent", messages=HI)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 2
    while "silent" not in fake[1].abandoned and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "silent" in fake[1].abandoned


def test_a_late_first_token(fake: tuple[str, Faults]) -> None:
    started = time.monotonic()
    chunks = streamed(client(fake), "late")
    assert time.monotonic() - started >= 0.4 and text_of(chunks) == "hello from late"
    with pytest.raises(openai.APITimeoutError):
        streamed(client(fake, timeout=0.2), "late")


def test_a_stream_that_stalls_after_some_chunks(fake: tuple[str, Faults]) -> None:
    got: list[Any] = []
    with pytest.raises(openai.APITimeoutError):
        for chunk in client(fake, timeout=0.3).chat.completions.create(
                model="stall", messages=HI, stream=True):  # type: ignore[arg-type]
            got.append(chunk)
    assert len(got) == 2 and text_of(got) == "hello"


def test_a_malformed_chunk_mid_stream(fake: tuple[str, Faults]) -> None:
    got: list[Any] = []
    with pytest.raises(json.JSONDecodeError):  # the SDK does not skip it
        for chunk in client(fake).chat.completions.create(model="bad-chunk", messages=HI,
                                                          stream=True):  # type: ignore[arg-type]
            got.append(chunk)
    assert len(got) == 1


def test_a_stream_without_done_after_its_finish_and_usage(fake: tuple[str, Faults]) -> None:
    chunks = streamed(client(fake), "no-done")  # the SDK ends at the end of the body
    assert text_of(chunks) == "hello from no-done"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_context_length_exceeded_in_openais_shape(fake: tuple[str, Faults]) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(fake).chat.completions.create(model="too-long", messages=HI)  # type: ignore[arg-type]
    assert refused.value.code == "context_length_exceeded"
    assert refused.value.param == "messages"


def test_a_content_filter_in_azures_shape(fake: tuple[str, Faults]) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(fake).chat.completions.create(model="filtered", messages=HI)  # type: ignore[arg-type]
    assert refused.value.code == "content_filter"
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["innererror"]["content_filter_result"]["violence"]["filtered"] is True


def test_a_wrong_key_is_echoed_masked_and_leak_key_echoes_it_whole(
        fake: tuple[str, Faults]) -> None:
    with pytest.raises(openai.AuthenticationError) as masked:
        client(fake, api_key="sk-abcdefghijklmnopqrstuvwxyz1234").chat.completions.create(
            model="ok", messages=HI)  # type: ignore[arg-type]
    assert "sk-" in masked.value.message and "****" in masked.value.message
    with pytest.raises(openai.AuthenticationError) as leaked:
        client(fake).chat.completions.create(model="leak-key", messages=HI)  # type: ignore[arg-type]
    assert API_KEY in leaked.value.message


@pytest.mark.parametrize(("model", "error"), [
    ("junk-text", json.JSONDecodeError), ("junk-truncated", json.JSONDecodeError),
    ("junk-array", openai.APIResponseValidationError),
    ("junk-object", openai.APIResponseValidationError),
])
def test_junk_bodies(fake: tuple[str, Faults], model: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        client(fake, _strict_response_validation=True).chat.completions.create(
            model=model, messages=HI)  # type: ignore[arg-type]


def test_junk_sse(fake: tuple[str, Faults]) -> None:
    with pytest.raises(json.JSONDecodeError):
        streamed(client(fake), "junk-sse")


def test_down_then_back_and_the_health_endpoint_follows(faults: Faults,
                                                        fake: tuple[str, Faults]) -> None:
    sdk = client(fake)
    assert "ok" in {m.id for m in sdk.models.list()}
    faults.take_down("flappy")
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="flappy", messages=HI)  # type: ignore[arg-type]
    with pytest.raises(openai.InternalServerError):
        sdk.models.retrieve("flappy")
    assert sdk.chat.completions.create(model="ok", messages=HI).choices  # type: ignore[arg-type]
    faults.take_down()
    with pytest.raises(openai.InternalServerError):
        sdk.models.list()
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="ok", messages=HI)  # type: ignore[arg-type]
    faults.bring_back()
    assert sdk.models.retrieve("flappy").id == "flappy"
    assert sdk.chat.completions.create(model="flappy", messages=HI  # type: ignore[arg-type]
                                       ).choices[0].message.content == "hello from flappy"
    assert len(faults.health_checks) >= 4


def test_resume_cut_after_word_40_and_continue_from_the_prefix(
        fake: tuple[str, Faults]) -> None:
    sdk = client(fake)
    got: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in sdk.chat.completions.create(model="resume-cut", messages=HI, stream=True):  # type: ignore[arg-type]
            got.append(chunk)
    delivered = text_of(got)
    assert delivered == resume_text(40)
    continued = text_of(list(sdk.chat.completions.create(
        model="resume-continue", stream=True,
        messages=[*HI, {"role": "assistant", "content": delivered}],  # type: ignore[list-item]
        extra_body={"continue_final_message": True, "add_generation_prompt": False})))
    assert delivered + continued == resume_text()
    assert continued.startswith(" w41")
    # the model that cut resumes itself the same way, and a plain call has the whole text
    again = text_of(list(sdk.chat.completions.create(
        model="resume-cut", stream=True,
        messages=[*HI, {"role": "assistant", "content": delivered}],  # type: ignore[list-item]
        extra_body={"continue_final_message": True, "add_generation_prompt": False})))
    assert delivered + again == resume_text()
    assert sdk.chat.completions.create(model="resume-continue", messages=HI  # type: ignore[arg-type]
                                       ).choices[0].message.content == resume_text()


def test_resume_refuse_and_a_prefix_that_does_not_fit(fake: tuple[str, Faults]) -> None:
    sdk = client(fake)
    prefixed = [*HI, {"role": "assistant", "content": "w1 w2"}]
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="resume-refuse", messages=prefixed, stream=True,  # type: ignore[arg-type]
                                    extra_body={"continue_final_message": True,
                                                "add_generation_prompt": False})
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="resume-refuse", messages=prefixed)  # type: ignore[arg-type]
    assert text_of(streamed(sdk, "resume-refuse")) == resume_text()
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="resume-continue", messages=[
            *HI, {"role": "assistant", "content": "not the answer"}],  # type: ignore[list-item]
            extra_body={"continue_final_message": True, "add_generation_prompt": False})
