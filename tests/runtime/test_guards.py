"""Guards through the running gateway, with the openai and anthropic SDKs as clients.

The fakes' model `echo` says back the last message, streamed four characters a
chunk, so what an output guard meets is what the test sent: a card number in a
stream arrives split over five chunks. A header picks the guards a request
meets (`when header["x-guard"] == ...`), so one gateway holds them all.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from compiler.compiled import Guard
from compiler.policy import Source
from policies.guarding import judge
from policies.memory_counters import MemoryCounters
from policies.records import open_records
from runtime.access_log import AccessLog
from runtime.app import create_app
from runtime.gateway import Gateway
from runtime.limiting import Limiter
from runtime.pipeline.guards import Guarding, check_of, judge_together
from runtime.state import State
from tests.fakes import API_KEY, Script, anthropic_fake, openai_fake, serving

CARD = "4111 1111 1111 1111"
EMAIL = "bob@example.com"

POLICY = """
provider openai {{ type = openai; base_url = "{openai}/v1"; api_key = "{key}" }}
provider vllm {{ type = openai_compatible; base_url = "{openai}/v1"; api_key = "{key}" }}
provider claude {{ type = anthropic; base_url = "{anthropic}"; api_key = "{key}" }}

model echo        {{ provider = openai; name = "echo"; input = $1/1M; output = $2/1M }}
model vllm-echo   {{ provider = vllm; name = "echo" }}
model claude-echo {{ provider = claude; name = "echo" }}
model echo-unclosed {{ provider = openai; name = "echo-unclosed" }}

route {{
  when model == "slow-header" and header["x-probe"] matches "(a+)+$" -> echo
  when model in ["echo", "vllm-echo", "claude-echo", "echo-unclosed"] -> requested
  otherwise -> echo
}}

quota per team {{ requests = 10k per day }}
quota team "counted" {{ requests = 3 per day }}
cache when header["x-guard"] == "redact-cached" {{ mode = exact; scope = global }}

guard pii when header["x-guard"] in ["redact", "redact-cached"] {{
  on = both; detect = [email, credit_card]; action = redact
}}
guard secrets when header["x-guard"] == "deny" {{
  detect = [secret, credit_card]
  deny = ["(?i)project\\\\s+bluebird"]
}}
guard cards-out when header["x-guard"] == "redact-out" {{
  on = output; detect = [credit_card]; action = redact
}}
guard cards-stop when header["x-guard"] == "deny-out" {{
  on = output; detect = [credit_card]
}}
guard watch when header["x-guard"] == "shadow" {{
  on = both; detect = [email, credit_card]; action = redact; mode = shadow
}}
guard flagged when header["x-guard"] == "flag" {{
  detect = [email]; action = flag
}}
guard backtrack when header["x-guard"] == "backtrack" {{
  deny = ["(a+)+$"]
}}
guard hook-allow when header["x-guard"] == "hook-allow" {{
  webhook = "{hook}/allow"; on_error = deny
}}
guard hook-deny when header["x-guard"] == "hook-deny" {{
  webhook = "{hook}/deny"; on_error = allow
}}
guard hook-slow-open when header["x-guard"] == "hook-slow-open" {{
  webhook = "{hook}/slow"; timeout = 200ms; on_error = allow
}}
guard hook-slow-closed when header["x-guard"] == "hook-slow-closed" {{
  webhook = "{hook}/slow"; timeout = 200ms; on_error = deny
}}
guard hook-broken when header["x-guard"] == "hook-broken" {{
  webhook = "{hook}/broken"; on_error = deny
}}
guard hook-out when header["x-guard"] == "hook-out" {{
  on = output; webhook = "{hook}/deny"; on_error = allow
}}
guard hooks-a when header["x-guard"] == "hooks-both" {{
  webhook = "{hook}/slow-allow"; timeout = 2s; on_error = deny
}}
guard hooks-b when header["x-guard"] == "hooks-both" {{
  webhook = "{hook}/slow-allow"; timeout = 2s; on_error = deny
}}

auth {{ mode = headers; team_header = "x-team" }}
"""


@dataclass
class Hook:
    """A guard's outside check: it answers by path, and keeps what it was sent."""

    asked: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def answer(request: Request) -> Response:
            body = await request.json()
            self.asked.append(body)
            path = request.path_params["path"]
            if path.startswith("slow"):
                await asyncio.sleep(0.6 if path == "slow-allow" else 5)
            if path == "broken":
                return JSONResponse({"error": "down"}, 500)
            return JSONResponse({"allow": path != "deny", "reason": "scripted"})
        return Starlette(routes=[Route("/{path}", answer, methods=["POST"])])


@dataclass
class Guarded:
    url: str
    openai: Script
    anthropic: Script
    hook: Hook
    log: Path

    def client(self, guard: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0,
                             default_headers={"x-guard": guard, "x-team": "t"})

    def claude(self, guard: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key="unused", max_retries=0,
                                   default_headers={"x-guard": guard, "x-team": "t"})

    def lines(self) -> list[dict[str, Any]]:
        time.sleep(0.3)  # the access log is written off the event loop
        return [json.loads(line) for line in self.log.read_text().splitlines()
                if '"request_id"' in line]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    scripts, hook = (Script(), Script()), Hook()
    folder = tmp_path_factory.mktemp("guards")
    with serving(openai_fake.app(scripts[0])) as o, \
            serving(anthropic_fake.app(scripts[1])) as a, serving(hook.app()) as h:
        policy = folder / "policy.gw"
        policy.write_text(POLICY.format(openai=o, anthropic=a, hook=h, key=API_KEY))
        sink = (folder / "access.log").open("wb")
        state = State(Limiter(MemoryCounters()), open_records(f"sqlite:///{folder}/gw.db"))
        gateway = Gateway(str(policy), {}, log=AccessLog(sink), state=state)
        with serving(create_app(gateway)) as url:
            yield Guarded(url, *scripts, hook, folder / "access.log")
        gateway.log.close()
        sink.close()


def said(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def chat_stream(client: openai.OpenAI, text: str, model: str = "echo") -> str:
    stream = client.chat.completions.create(model=model, messages=said(text),  # type: ignore
                                            stream=True)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


# ------------------------------------------------------------------ input

def test_an_input_deny_is_a_400_naming_the_guard_and_calls_no_provider(gw: Guarded) -> None:
    calls = sum(gw.openai.calls.values())
    with pytest.raises(openai.BadRequestError) as refused:
        gw.client("deny").chat.completions.create(
            model="echo", messages=said(f"my card is {CARD}, charge it"))
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "guardrail_violation"
    assert "secrets" in error["message"] and "credit_card" in error["message"]
    assert "4111" not in error["message"]
    assert sum(gw.openai.calls.values()) == calls  # the provider saw nothing


def test_a_refused_request_spends_no_quota(gw: Guarded) -> None:
    client = gw.client("deny").with_options(default_headers={"x-guard": "deny",
                                                             "x-team": "counted"})

    def remaining() -> int:
        raw = client.chat.completions.with_raw_response.create(
            model="echo", messages=said("nothing to see"))
        return int(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining() == 2
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo", messages=said(CARD))
    assert remaining() == 1  # the refused request between them counted nothing


def test_the_cache_keys_and_keeps_the_redacted_text(gw: Guarded) -> None:
    client = gw.client("redact-cached").chat.completions.with_raw_response
    first = client.create(model="echo", messages=said("write to alice@example.com"))
    second = client.create(model="echo", messages=said("write to carol@example.org"))
    assert first.headers["x-gw-cache"] == "miss" and second.headers["x-gw-cache"] == "hit"
    assert second.parse().choices[0].message.content == "write to [EMAIL]"


def test_a_deny_pattern_refuses_in_anthropics_shape(gw: Guarded) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        gw.claude("deny").messages.create(model="claude-echo", max_tokens=50,
                                          messages=said("status of Project  Bluebird?"))
    error = refused.value.body
    assert isinstance(error, dict) and error["type"] == "error"
    assert "secrets" in error["error"]["message"] and "Bluebird" not in error["error"]["message"]


def test_an_input_redact_sends_the_upstream_brackets_not_the_text(gw: Guarded) -> None:
    raw = gw.client("redact").chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "system", "content": f"escalate to {EMAIL}"},
                                {"role": "user", "content": f"card {CARD}, mail {EMAIL}"}])
    sent = gw.openai.bodies[-1]["messages"]
    assert sent[0]["content"] == "escalate to [EMAIL]"
    assert sent[1]["content"] == "card [CREDIT_CARD], mail [EMAIL]"
    assert raw.parse().choices[0].message.content == "card [CREDIT_CARD], mail [EMAIL]"
    assert raw.headers["x-gw-guards"] == "pii=redact"


def test_an_input_redact_reaches_every_api_shape(gw: Guarded) -> None:
    gw.claude("redact").messages.create(model="claude-echo", max_tokens=50, system=EMAIL,
                                        messages=[{"role": "user", "content": [
                                            {"type": "text", "text": f"I am {EMAIL}"}]}])
    sent = gw.anthropic.bodies[-1]
    assert sent["system"] == "[EMAIL]"
    assert sent["messages"][0]["content"][0]["text"] == "I am [EMAIL]"
    gw.client("redact").responses.create(model="echo", instructions=f"cc {EMAIL}",
                                         input=f"write to {EMAIL}")
    sent = gw.openai.bodies[-1]
    assert sent["instructions"] == "cc [EMAIL]" and sent["input"] == "write to [EMAIL]"


# ------------------------------------------------------------------ output

def test_a_card_streamed_over_four_chunks_is_redacted_in_the_stream(gw: Guarded) -> None:
    text = chat_stream(gw.client("redact-out"), f"Your card {CARD} is on file.")
    assert text == "Your card [CREDIT_CARD] is on file."
    assert gw.openai.bodies[-1]["messages"][0]["content"].count("4111") == 1  # input as sent


def test_a_stream_that_ends_without_a_closing_chunk_still_has_its_held_text_judged(
        gw: Guarded) -> None:
    text = chat_stream(gw.client("redact-out"), f"Your card {CARD}", model="echo-unclosed")
    assert text == "Your card [CREDIT_CARD]"  # the card was the held tail: judged, redacted
    with pytest.raises(openai.APIError):
        chat_stream(gw.client("hook-out"), "all of this text", model="echo-unclosed")
    assert gw.hook.asked[-1]["text"] == "all of this text"  # read whole before refusing


def test_a_whole_answer_is_redacted_on_its_way_out(gw: Guarded) -> None:
    answer = gw.client("redact-out").chat.completions.create(
        model="echo", messages=said(f"card {CARD}"))
    assert answer.choices[0].message.content == "card [CREDIT_CARD]"


@pytest.mark.parametrize("model", ["claude-echo", "echo"])  # passed through; translated
def test_a_messages_stream_is_redacted_in_its_text_deltas(gw: Guarded, model: str) -> None:
    with gw.claude("redact-out").messages.stream(
            model=model, max_tokens=50, messages=said(f"the card {CARD} works")) as stream:
        pieces = [e.delta.text for e in stream if e.type == "content_block_delta"
                  and e.delta.type == "text_delta"]
        final = stream.get_final_message()
    assert "".join(pieces) == "the card [CREDIT_CARD] works"
    assert final.content[0].type == "text"
    assert final.content[0].text == "the card [CREDIT_CARD] works"


@pytest.mark.parametrize("model", ["echo", "vllm-echo"])  # passed through; translated
def test_a_responses_stream_is_redacted_in_deltas_and_in_its_done_events(gw: Guarded,
                                                                         model: str) -> None:
    client = gw.client("redact-out")
    with client.responses.stream(model=model, input=f"pay with {CARD} today") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "pay with [CREDIT_CARD] today"
    assert final.output_text == "pay with [CREDIT_CARD] today"


def test_an_output_deny_ends_a_chat_stream_with_an_error_not_a_clean_end(gw: Guarded) -> None:
    stream = gw.client("deny-out").chat.completions.create(
        model="echo", messages=said("x " * 100 + f"card {CARD} " + "y " * 100), stream=True)
    seen = ""
    with pytest.raises(openai.APIError) as broken:
        for chunk in stream:
            seen += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert "guardrail_violation" in str(broken.value.body) or "cards-stop" in str(broken.value)
    assert "4111" not in seen and seen.startswith("x x")


def test_an_output_deny_ends_a_messages_stream_with_an_error_event(gw: Guarded) -> None:
    with pytest.raises(anthropic.APIStatusError) as broken, gw.claude("deny-out").messages.stream(
            model="claude-echo", max_tokens=50, messages=said(f"card {CARD}")) as stream:
        for _ in stream:
            pass
    assert "cards-stop" in str(broken.value)


def test_an_output_deny_ends_a_responses_stream_with_an_error_event(gw: Guarded) -> None:
    stream = gw.client("deny-out").responses.create(model="echo", input=f"card {CARD}",
                                                    stream=True)
    kinds = []
    with pytest.raises(openai.APIError):
        for event in stream:
            kinds.append(event.type)
            assert event.type != "response.output_text.done"
    assert "response.completed" not in kinds


def test_an_output_deny_of_a_whole_answer_is_a_400_and_its_cost_stands(gw: Guarded) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        gw.client("deny-out").chat.completions.create(model="echo", messages=said(CARD))
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["code"] == "guardrail_violation"
    line = gw.lines()[-1]
    assert line["status"] == 400 and line["cost"] > 0  # the upstream was called and paid
    assert line["guards"][0]["guard"] == "cards-stop"


# ------------------------------------------------------------------ webhooks

def test_a_webhook_that_allows_lets_the_request_on_and_reads_the_redacted_text(
        gw: Guarded) -> None:
    answer = gw.client("hook-allow").chat.completions.create(model="echo",
                                                             messages=said("hello hook"))
    assert answer.choices[0].message.content == "hello hook"
    assert gw.hook.asked[-1] == {"guard": "hook-allow", "direction": "input",
                                 "text": "hello hook"}


def test_a_webhook_that_refuses_is_a_400(gw: Guarded) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        gw.client("hook-deny").chat.completions.create(model="echo", messages=said("hi"))
    assert isinstance(refused.value.body, dict)
    assert "hook-deny" in refused.value.body["message"]


@pytest.mark.parametrize(("guard", "goes_on"), [("hook-slow-open", True),
                                                ("hook-slow-closed", False),
                                                ("hook-broken", False)])
def test_a_slow_or_broken_webhook_decides_by_on_error(gw: Guarded, guard: str,
                                                      goes_on: bool) -> None:
    started = time.monotonic()
    raw = gw.client(guard).chat.completions.with_raw_response
    if goes_on:
        assert raw.create(model="echo", messages=said("hi")).headers["x-gw-guards"] == \
            f"{guard}=allow"
    else:
        with pytest.raises(openai.BadRequestError):
            raw.create(model="echo", messages=said("hi"))
    assert time.monotonic() - started < 2  # the timeout is 200ms, not the hook's 5 s


def test_input_webhooks_of_one_request_run_at_once(gw: Guarded) -> None:
    started = time.monotonic()
    gw.client("hooks-both").chat.completions.create(model="echo", messages=said("hi"))
    assert time.monotonic() - started < 1.1  # two 0.6 s hooks, side by side


def test_an_output_webhook_reads_a_stream_whole_before_it_goes(gw: Guarded) -> None:
    stream = gw.client("hook-out").chat.completions.create(
        model="echo", messages=said("all of this text"), stream=True)
    seen = ""
    with pytest.raises(openai.APIError):
        for chunk in stream:
            seen += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert seen == ""  # held whole, then refused
    assert gw.hook.asked[-1] == {"guard": "hook-out", "direction": "output",
                                 "text": "all of this text"}


# ------------------------------------------------------------------ shadow, flag, logs

def test_shadow_mode_changes_nothing_and_says_what_it_would_have_done(gw: Guarded) -> None:
    raw = gw.client("shadow").chat.completions.with_raw_response.create(
        model="echo", messages=said(f"mail {EMAIL}"))
    assert gw.openai.bodies[-1]["messages"][0]["content"] == f"mail {EMAIL}"
    assert raw.parse().choices[0].message.content == f"mail {EMAIL}"
    assert raw.headers["x-gw-guards"] == "watch=would-redact"
    line = gw.lines()[-1]
    assert {"guard": "watch", "direction": "input", "action": "redact", "kind": "email",
            "mode": "shadow", "count": 1} in line["guards"]
    assert EMAIL not in json.dumps(line)  # the log names the kind, never the text


def test_a_flag_lets_the_request_through_and_meters_the_hit(gw: Guarded) -> None:
    raw = gw.client("flag").chat.completions.with_raw_response.create(
        model="echo", messages=said(f"{EMAIL} and {EMAIL}"))
    assert raw.headers["x-gw-guards"] == "flagged=flag"
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'gw_guard_actions_total{action="flag",direction="input",guard="flagged",' \
           'kind="email",mode="enforce"}' in metrics


# ------------------------------------------------------------------ hostile input

def test_a_backtracking_pattern_on_a_long_header_or_prompt_answers_at_once(gw: Guarded
                                                                           ) -> None:
    probe = "a" * 50_000 + "!"
    body = {"model": "slow-header", "messages": said("hi")}
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        started = time.monotonic()
        assert http.post("/v1/chat/completions", json=body,
                         headers={"x-probe": probe, "x-team": "t"}).status_code == 200
        header_seconds = time.monotonic() - started
        started = time.monotonic()
        reply = http.post("/v1/chat/completions",
                          json={"model": "echo", "messages": said(probe)},
                          headers={"x-guard": "backtrack", "x-team": "t"})
        prompt_seconds = time.monotonic() - started
    assert reply.status_code == 200  # `(a+)+$` does not match: it ends in "!"
    assert header_seconds < 1 and prompt_seconds < 1  # backtracking would take ages
    served = [line["ms"] for line in gw.lines()[-2:]]
    assert max(served) < 100, served  # the gateway's own time, as the log has it


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(["type", "text", "content", "role"]),
                                      inner, max_size=4), max_leaves=10),
       st.sampled_from(["redact", "deny", "redact-out", "shadow"]),
       st.sampled_from(["/v1/chat/completions", "/v1/messages", "/v1/responses"]))
def test_any_content_through_the_guards_is_never_a_500(gw: Guarded, content: Any, guard: str,
                                                       path: str) -> None:
    body: dict[str, Any] = {"model": "echo", "max_tokens": 20,
                            "messages": [{"role": "user", "content": content}],
                            "input": content}
    reply = httpx.post(gw.url + path, json=body, headers={"x-guard": guard, "x-team": "t"})
    assert reply.status_code < 500, reply.text


PIECES = st.sampled_from(["hi", CARD, EMAIL, "+44 20 7946 0958", "call", "4111", "1111",
                          "\n", " ", "-", "@", "example.com", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tU"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(PIECES, max_size=8).map("".join), max_size=6))
def test_a_requests_texts_judged_as_one_read_as_each_judged_alone(texts: list[str]) -> None:
    checks = [check_of(Guard(0, "pii", Source("p.gw", 1), detect=(
        "email", "phone", "credit_card", "secret"), action="redact"))]
    assert judge_together(Guarding(), texts, checks) == [judge(t, checks).text for t in texts]
