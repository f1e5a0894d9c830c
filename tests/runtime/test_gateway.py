"""The gateway end to end: the official openai SDK against a running gwc, fakes behind it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.runtime.conftest import ADMIN_KEY, Stack

HI = [{"role": "user", "content": "hi"}]


def test_a_plain_chat_and_its_headers(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(model="ok", messages=HI)
    reply = raw.parse()
    assert reply.choices[0].message.content == "hello from ok"
    headers = raw.headers
    assert headers["x-gw-model"] == "ok" and headers["x-gw-provider"] == "fake"
    assert headers["x-gw-attempts"] == "1" and headers["x-gw-cache"] == "bypass"
    assert float(headers["x-gw-cost"]) == pytest.approx(9 * 1e-6 + 3 * 2e-6)
    assert headers["x-gw-policy"] == stack.gateway.version and len(headers["x-gw-request-id"]) == 32


def test_an_upstreams_cookie_rides_on_no_later_call(stack: Stack) -> None:
    """A cookie one call's answer set (a CDN's, as OpenAI's sets) belongs to no caller:
    sent on, it would follow one tenant's call into the next tenant's."""
    for _ in range(2):
        stack.client().chat.completions.create(model="on-vllm", messages=HI)
    assert [h for h in stack.openai.headers[-2:] if "cookie" in h] == []


def test_a_streamed_chat(stack: Stack) -> None:
    chunks = list(stack.client().chat.completions.create(model="ok", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "hello from ok"


def test_embeddings_and_the_model_list(stack: Stack) -> None:
    vectors = stack.client().embeddings.create(model="emb", input=["a", "b"])
    assert [v.index for v in vectors.data] == [0, 1]
    names = {m.id for m in stack.client().models.list()}
    assert {"ok", "claude", "gemini", "emb"} <= names


@pytest.mark.parametrize(("model", "messages", "error", "status"), [
    ("ok", [], openai.BadRequestError, 400),
    ("nothing-routes-here", HI, openai.NotFoundError, 404),
    ("forbidden", HI, openai.PermissionDeniedError, 403),
    ("all-broken", HI, openai.InternalServerError, 502),
    ("refused", HI, openai.BadRequestError, 400),
])
def test_errors_map_to_the_sdks_classes(stack: Stack, model: str, messages: list[object],
                                        error: type[openai.APIStatusError], status: int) -> None:
    with pytest.raises(error) as caught:
        stack.client().chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
    assert caught.value.status_code == status
    assert caught.value.response.headers["x-gw-request-id"]


def test_every_target_timing_out_is_a_504(stack: Stack) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        stack.client().chat.completions.create(model="only-slow", messages=HI)
    assert caught.value.status_code == 504 and "timed out" in caught.value.message


def test_azure_and_openai_compatible_providers(stack: Stack) -> None:
    client = stack.client()
    azure = client.chat.completions.with_raw_response.create(model="on-azure", messages=HI)
    assert azure.parse().choices[0].message.content == "hello from prod-deployment"
    assert stack.openai.headers[-1]["api-key"] == "test-key"
    assert "model" not in stack.openai.bodies[-1]  # the deployment decides the model
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="on-azure", messages=HI, stream=True) if c.choices)
    assert streamed == "hello from prod-deployment"
    vllm = list(client.chat.completions.create(model="on-vllm", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in vllm if c.choices) == \
        "hello from llama"
    assert "stream_options" not in stack.openai.bodies[-1]


def test_the_usage_chunk_only_when_asked_for(stack: Stack) -> None:
    client = stack.client()
    plain = list(client.chat.completions.create(model="ok", messages=HI, stream=True))
    # the openai SDK's standard loop reads choices[0] of every chunk
    assert all(c.choices for c in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain) == "hello from ok"
    assert stack.openai.bodies[-1]["stream_options"] == {"include_usage": True}  # asked anyway
    asked = list(client.chat.completions.create(model="ok", messages=HI, stream=True,
                                                stream_options={"include_usage": True}))
    assert not asked[-1].choices and asked[-1].usage is not None
    assert asked[-1].usage.total_tokens == 12


@pytest.mark.parametrize(("field", "value"), [
    ("stream", "yes"), ("stream", 1), ("temperature", "0.5"), ("max_tokens", 2.5),
    ("model", 7), ("messages", {"role": "user"}),
])
def test_types_are_as_strict_as_openais(stack: Stack, field: str, value: object) -> None:
    answer = httpx.post(stack.url + "/v1/chat/completions",
                        json={"model": "ok", "messages": HI, field: value})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_type" and error["param"] == field
    assert answer.headers["x-gw-request-id"]


def test_json_too_deep_to_forward_is_a_400(stack: Stack) -> None:
    deep = "[" * 300 + "]" * 300
    body = b'{"model": "ok", "messages": [{"role": "user", "content": "hi"}], "extra": ' + \
        deep.encode() + b"}"
    answer = httpx.post(stack.url + "/v1/chat/completions", content=body,
                        headers={"content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_json"
    fine = b'{"model": "ok", "messages": [{"role": "user", "content": "hi"}], "extra": ' + \
        ("[" * 150 + "]" * 150).encode() + b"}"
    assert httpx.post(stack.url + "/v1/chat/completions", content=fine,
                      headers={"content-type": "application/json"}).status_code == 200


def test_a_pool_spreads_over_its_members(stack: Stack) -> None:
    served = {stack.client().chat.completions.with_raw_response.create(
        model="spread", messages=HI).headers["x-gw-model"] for _ in range(4)}
    assert served == {"pooled-a", "pooled-b"}


def test_a_stream_falls_back_before_its_first_chunk(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="stream-falls-back", messages=HI, stream=True)
    assert raw.headers["x-gw-model"] == "ok"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == \
        "hello from ok"


def test_a_4xx_is_not_fallen_back_from(stack: Stack) -> None:
    before = stack.openai.calls.get("ok", 0)
    with pytest.raises(openai.BadRequestError, match="scripted 400"):
        stack.client().chat.completions.create(model="refused", messages=HI)
    assert stack.openai.calls.get("ok", 0) == before


def test_all_targets_failing_names_each_attempt(stack: Stack) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        stack.client().chat.completions.create(model="all-broken", messages=HI)
    assert "broken (fake): 500; broken (fake): 500" in caught.value.message


def test_malformed_and_oversized_bodies(stack: Stack) -> None:
    bad = httpx.post(stack.url + "/v1/chat/completions", content=b"{not json",
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    wrong = httpx.post(stack.url + "/v1/chat/completions",
                       json={"model": "ok", "messages": HI, "temperature": "hot"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "temperature"
    big = httpx.post(stack.url + "/v1/chat/completions",
                     json={"model": "ok", "messages": [{"role": "user", "content": "x" * 70000}]})
    assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"


def test_fallback_past_a_500(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(model="falls-back",
                                                                   messages=HI)
    assert raw.parse().choices[0].message.content == "hello from ok"
    assert raw.headers["x-gw-model"] == "ok"
    assert raw.headers["x-gw-attempts"] == "3"  # broken twice (retry), then ok


def test_a_429_is_retried_after_its_retry_after(stack: Stack) -> None:
    reply = stack.client().chat.completions.create(model="retried", messages=HI)
    assert reply.choices[0].message.content == "hello from limited"
    first, second = stack.openai.times["limited"][:2]
    assert second - first >= 0.95  # Retry-After: 1


def test_a_timeout_falls_back(stack: Stack) -> None:
    started = time.monotonic()
    raw = stack.client().chat.completions.with_raw_response.create(model="times-out",
                                                                   messages=HI)
    assert raw.headers["x-gw-model"] == "ok"
    assert time.monotonic() - started < 2.5  # 2 x 500 ms timeouts, not 3 s of waiting


def test_a_client_that_hangs_up_cancels_the_upstream_call(stack: Stack) -> None:
    with pytest.raises(openai.APITimeoutError):
        stack.client(timeout=0.5).chat.completions.create(model="hang", messages=HI)
    deadline = time.monotonic() + 5
    while "hang" not in stack.openai.abandoned:
        assert time.monotonic() < deadline, "the gateway kept waiting on the upstream"
        time.sleep(0.05)


def test_a_client_that_leaves_a_stream_cancels_the_upstream_stream(stack: Stack) -> None:
    stream = stack.client().chat.completions.create(model="hang", messages=HI, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    stream.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 5
    while "hang-stream" not in stack.openai.abandoned:
        assert time.monotonic() < deadline, "the gateway kept the upstream stream open"
        time.sleep(0.05)


def test_a_model_whose_context_is_too_small_is_skipped(stack: Stack) -> None:
    long = [{"role": "user", "content": "word " * 40}]  # about 50 tokens, over tiny's 10
    raw = stack.client().chat.completions.with_raw_response.create(model="too-long",
                                                                   messages=long)
    assert raw.headers["x-gw-model"] == "ok" and raw.headers["x-gw-attempts"] == "1"


def test_the_breaker_opens_and_closes(stack: Stack) -> None:
    client = stack.client()
    stack.openai.down = True
    for _ in range(2):  # two failures open it (failures = 2)
        assert client.chat.completions.with_raw_response.create(
            model="breaker", messages=HI).headers["x-gw-model"] == "ok"
    calls = stack.openai.calls["down"]
    client.chat.completions.create(model="breaker", messages=HI)
    assert stack.openai.calls["down"] == calls  # open: skipped, not called
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.get(stack.url + "/admin/breakers", headers=admin).json()["down"]["state"] == \
        "open"
    assert 'gw_breaker_state{model="down"} 2.0' in httpx.get(stack.url + "/metrics").text
    stack.openai.down = False
    time.sleep(1.1)  # cooldown = 1s; the next call is the half-open probe
    raw = client.chat.completions.with_raw_response.create(model="breaker", messages=HI)
    assert raw.headers["x-gw-model"] == "down"
    assert httpx.get(stack.url + "/admin/breakers", headers=admin).json()["down"]["state"] == \
        "closed"


def test_breaker_state_survives_a_reload(stack: Stack) -> None:
    client = stack.client()
    for _ in range(5):  # `dead` (error-503, default breaker: 5 failures) opens
        client.chat.completions.create(model="stream-falls-back", messages=HI)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.get(stack.url + "/admin/breakers", headers=admin).json()["dead"]["state"] == \
        "open"
    stack.policy.write_text(stack.policy.read_text() + "\n# a comment: a new version\n")
    reloaded = httpx.post(stack.url + "/admin/reload", headers=admin).json()
    assert reloaded["outcome"] == "loaded" and reloaded["version"] != ""
    assert httpx.get(stack.url + "/admin/breakers", headers=admin).json()["dead"]["state"] == \
        "open"


def test_a_broken_policy_is_refused_and_the_old_one_serves(stack: Stack) -> None:
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    good = stack.policy.read_text()
    version = stack.gateway.version
    stack.policy.write_text(good + "\nroute { otherwise -> nowhere }\n")
    try:
        refused = httpx.post(stack.url + "/admin/reload", headers=admin)
        assert refused.status_code == 422 and refused.json()["outcome"] == "refused"
        status = httpx.get(stack.url + "/admin/policy", headers=admin).json()
        assert status["version"] == version
        assert status["refused"]["diagnostics"][0]["code"] == "GW109"
        assert stack.client().chat.completions.create(model="ok", messages=HI).choices
    finally:
        stack.policy.write_text(good)
        httpx.post(stack.url + "/admin/reload", headers=admin)


def test_a_stream_cut_midway_surfaces_as_an_error(stack: Stack) -> None:
    for model in ("cut", "claude-cut", "gemini-cut"):
        stream = stack.client().chat.completions.create(model=model, messages=HI, stream=True)
        received = []
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            for chunk in stream:
                received.append(chunk)
        assert received, model  # it had begun: no fallback, an error instead


def test_anthropic_translation(stack: Stack) -> None:
    client = stack.client()
    reply = client.chat.completions.create(model="claude", messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello from ok"
    assert reply.choices[0].finish_reason == "stop" and reply.usage.prompt_tokens == 12  # type: ignore[union-attr]
    sent = stack.anthropic.bodies[-1]
    assert sent["system"] == "be brief" and sent["max_tokens"] == 1000
    assert [m["role"] for m in sent["messages"]] == ["user"]
    assert stack.anthropic.headers[-1]["x-api-key"] == "test-key"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="claude", messages=HI, stream=True) if c.choices)
    assert streamed == "hello from ok"


def test_anthropic_tools_both_ways(stack: Stack) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    client = stack.client()
    reply = client.chat.completions.create(model="claude", messages=HI, tools=tools)  # type: ignore[arg-type]
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather" and json.loads(call.function.arguments) == \
        {"city": "Paris"}
    assert stack.anthropic.bodies[-1]["tools"][0]["input_schema"]["type"] == "object"
    follow = client.chat.completions.create(model="claude", tools=tools, messages=[  # type: ignore[arg-type]
        *HI, reply.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert follow.choices[0].message.content == "hello from ok"
    turn = stack.anthropic.bodies[-1]["messages"]
    assert turn[1]["content"][0]["type"] == "tool_use"
    assert turn[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.id,
                                     "content": "sunny"}
    chunks = list(client.chat.completions.create(model="claude", messages=HI, tools=tools,  # type: ignore[arg-type]
                                                 stream=True))
    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[index, union-attr]
                        for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert json.loads(arguments) == {"city": "Paris"}


def test_gemini_translation(stack: Stack) -> None:
    client = stack.client()
    reply = client.chat.completions.create(model="gemini", temperature=0.2, max_tokens=50,
                                           messages=[{"role": "system", "content": "be brief"},
                                                     *HI])
    assert reply.choices[0].message.content == "hello from ok"
    assert reply.usage.total_tokens == 12  # type: ignore[union-attr]
    sent = stack.gemini.bodies[-1]
    assert sent["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert sent["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 50}
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="gemini", messages=HI, stream=True) if c.choices)
    assert streamed == "hello from ok"
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    called = client.chat.completions.create(model="gemini", messages=HI, tools=tools)  # type: ignore[arg-type]
    call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert called.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather"
    client.chat.completions.create(model="gemini", tools=tools, messages=[  # type: ignore[arg-type]
        *HI, called.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'}])
    answer = stack.gemini.bodies[-1]["contents"][-1]["parts"][0]
    assert answer == {"functionResponse": {"name": "weather", "response": {"sky": "clear"}}}


def test_every_answer_carries_a_request_id(stack: Stack) -> None:
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    answers = [httpx.get(stack.url + path) for path in
               ("/v1/models", "/healthz", "/readyz", "/metrics", "/admin/policy")]
    answers.append(httpx.get(stack.url + "/admin/breakers", headers=admin))
    for answer in answers:
        assert len(answer.headers["x-gw-request-id"]) == 32, answer.url
        assert answer.headers["x-gw-policy"] == stack.gateway.version


def test_health_metrics_and_admin(stack: Stack) -> None:
    assert httpx.get(stack.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(stack.url + "/readyz").json()["policy"] == stack.gateway.version
    stack.client().chat.completions.create(model="ok", messages=HI)
    metrics = httpx.get(stack.url + "/metrics").text
    assert 'gw_requests_total{cache="bypass",model="ok",provider="fake",route="policy.gw:' \
        in metrics  # the rule by its file:line relative to the policy, not an absolute path
    assert "gw_upstream_seconds_bucket" in metrics and "gw_breaker_state" in metrics
    assert httpx.get(stack.url + "/admin/policy").status_code == 401
    policy = httpx.get(stack.url + "/admin/policy",
                       headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert policy["version"] == stack.gateway.version and policy["refused"] is None


def test_logs_hold_no_prompt_and_no_key(stack: Stack) -> None:
    secret = "the-secret-prompt-text"
    stack.client().chat.completions.create(model="ok", messages=[
        {"role": "user", "content": secret}])
    stack.gateway.log.flush()
    log = Path(stack.gateway.log.stream.name).read_text()  # type: ignore[attr-defined]
    assert secret not in log and "test-key" not in log and ADMIN_KEY not in log
    last = json.loads(log.strip().splitlines()[-1])
    assert last["status"] == 200 and last["model"] == "ok" and len(last["request_id"]) == 32
    # the line is written last on the way out: the answer's tokens and cost are in it
    assert last["tokens"]["total_tokens"] == 12 and last["cost"] == pytest.approx(15e-6)


def test_the_routers_own_answers_are_in_openais_shape(stack: Stack) -> None:
    body = {"model": "ok", "messages": HI}
    # A slash too many is not found, never redirected to a URL built from the Host header.
    slashed = httpx.post(stack.url + "/v1/chat/completions/", json=body,
                         headers={"host": "evil.example"})
    assert slashed.status_code == 404 and "location" not in slashed.headers
    assert slashed.json()["error"]["code"] == "unknown_route"
    refused = httpx.get(stack.url + "/v1/chat/completions")
    assert refused.status_code == 405 and refused.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in refused.headers["allow"]
    nowhere = httpx.get(stack.url + "/v2/nothing")
    assert nowhere.status_code == 404 and nowhere.json()["error"]["type"] == "not_found_error"
    for answer in (slashed, refused, nowhere):
        assert len(answer.headers["x-gw-request-id"]) == 32


def test_one_model_by_its_id(stack: Stack) -> None:
    client = stack.client()
    assert client.models.retrieve("ok").owned_by == "fake"
    assert client.models.retrieve("spread").owned_by == "gwc pool"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.response.headers["x-gw-request-id"]


def test_a_bug_of_ours_is_a_logged_500_in_openais_shape(stack: Stack,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")
    monkeypatch.setattr("runtime.pipeline.plan.parse", broken)
    with pytest.raises(openai.InternalServerError) as caught:
        stack.client().chat.completions.create(model="ok", messages=HI)
    assert caught.value.status_code == 500
    assert caught.value.body == {"message": "internal error in the gateway", "type": "api_error",
                                 "code": "internal", "param": None}
    assert len(caught.value.response.headers["x-gw-request-id"]) == 32
    stack.gateway.log.flush()
    log = Path(stack.gateway.log.stream.name).read_text()  # type: ignore[attr-defined]
    assert json.loads(log.strip().splitlines()[-1])["status"] == 500
