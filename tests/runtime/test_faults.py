"""The fault suite: every upstream fault of issue 8, through `gwc serve`, with the openai SDK.

`gwc serve` runs as a process on a policy whose models are the fault fake's
scripted models (tests/fakes/faults.py), each with a healthy fallback. For
each fault, plain and streamed where both apply, the test asserts what the
client got (a whole answer or a clean, bounded error) and what the fake saw
(how many calls, how far apart).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.fakes import API_KEY, free_port, gwc_serve
from tests.fakes.faults import Faults, resume_text, serving_faults

ADMIN = {"authorization": "Bearer fault-admin"}
HI = [{"role": "user", "content": "hi"}]
FAULT_MODELS = [
    "status-429-retry-after", "status-429", "status-500-once", "status-503", "reset", "silent",
    "late", "stall", "bad-chunk", "no-done", "too-long", "filtered", "leak-key", "junk-text",
    "junk-truncated", "junk-array", "junk-object", "junk-sse"]

POLICY = """
provider faults {{
  type               = openai_compatible
  base_url           = "{url}/v1"
  api_key            = "{key}"
  connect_timeout    = 1s
  first_byte_timeout = 400ms
  idle_timeout       = 400ms
  timeout            = 1500ms
  retry {{
    attempts = 3
    backoff  = 100ms..400ms
    resume   = true
  }}
  breaker {{
    failures = 3
    window   = 30s
    cooldown = 30s
  }}
}}

# the same upstream, watched by a health check: the flappy model lives here
provider watched {{
  type     = openai_compatible
  base_url = "{url}/v1"
  api_key  = "{key}"
  retry {{ attempts = 2; backoff = 100ms..400ms }}
  breaker {{
    failures = 2
    window   = 30s
    cooldown = 30s
  }}
  health {{
    interval = 1s
    timeout  = 500ms
  }}
}}

{models}
model backup {{ provider = faults; name = "ok"; input = $1/1M; output = $2/1M }}
model flappy {{ provider = watched; name = "flappy" }}
model resume-continue {{ provider = faults; name = "resume-continue"; prefill = true }}
model resume-refuse {{ provider = faults; name = "resume-refuse"; prefill = true }}
model resume-cut {{ provider = faults; name = "resume-cut" }}
model resume-cut-2 {{ provider = faults; name = "resume-cut" }}

route {{
  when model == "resume-cut"     -> resume-cut, backup, resume-continue
  when model == "resume-refused" -> resume-cut-2, resume-refuse
  when model == "alone"          -> silent
  otherwise                      -> requested, backup
}}
auth {{ mode = none }}
"""


@dataclass
class Gateway:
    url: str
    faults: Faults

    def client(self, **options: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0,
                             timeout=20, **options)  # type: ignore[arg-type]

    def plain(self, model: str) -> tuple[str, str, httpx.Headers]:
        raw = self.client().chat.completions.with_raw_response.create(model=model, messages=HI)
        reply = raw.parse()
        return raw.headers["x-gw-model"], reply.choices[0].message.content or "", raw.headers

    def streamed(self, model: str, **options: object) -> tuple[str, str]:
        with self.client().chat.completions.with_streaming_response.create(
                model=model, messages=HI, stream=True, **options) as raw:  # type: ignore[call-overload]
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
            return raw.headers["x-gw-model"], text

    def calls(self, model: str) -> list[float]:
        return [c.at for c in self.faults.calls_to(model)]

    def breaker(self, model: str) -> str:
        breakers = httpx.get(self.url + "/admin/breakers", headers=ADMIN).json()
        return str(breakers.get(model, {}).get("state", "none"))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("faults")
    faults = Faults(retry_after=0.3, first_token_delay=2.0, hold=10.0)
    with serving_faults(faults) as (url, faults):
        models = "\n".join(f'model {m} {{ provider = faults; name = "{m}"; input = $100/1M; '
                           f'output = $100/1M }}' for m in FAULT_MODELS)
        path = folder / "policy.gw"
        path.write_text(POLICY.format(url=url, key=API_KEY, models=models))
        port = free_port()
        log = (folder / "serve.log").open("w")
        process = gwc_serve(str(path), port, log, env={"GW_ADMIN_KEY": "fault-admin"})
        yield Gateway(f"http://127.0.0.1:{port}", faults)
        process.terminate()
        assert process.wait(30) == 0
        log.close()


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_a_429_with_retry_after_is_waited_out_then_retried(gateway: Gateway) -> None:
    model, text, _ = gateway.plain("status-429-retry-after")
    assert model == "status-429-retry-after" and text == "hello from status-429-retry-after"
    calls = gateway.calls("status-429-retry-after")
    assert len(calls) == 2 and gaps(calls)[0] >= 0.28


def test_a_persistent_429_backs_off_never_hammers_then_falls_back(gateway: Gateway) -> None:
    model, text, _ = gateway.plain("status-429")
    assert (model, text) == ("backup", "hello from ok")
    assert len(gateway.calls("status-429")) == 3  # the retry budget, no more
    assert all(gap < 0.5 for gap in gaps(gateway.calls("status-429")))  # backoff capped at 400ms
    # the breaker has seen three failures: the next request does not knock at all
    assert gateway.breaker("status-429") == "open"
    assert gateway.plain("status-429")[0] == "backup" and len(gateway.calls("status-429")) == 3


def test_a_500_once_is_retried_on_the_same_target(gateway: Gateway) -> None:
    assert gateway.plain("status-500-once")[:2] == ("status-500-once", "hello from status-500-once")
    assert len(gateway.calls("status-500-once")) == 2


def test_a_persistent_503_falls_back_within_the_retry_budget(gateway: Gateway) -> None:
    assert gateway.plain("status-503")[0] == "backup"
    assert len(gateway.calls("status-503")) == 3


def test_a_reset_before_headers_is_retried_then_falls_back(gateway: Gateway) -> None:
    assert gateway.streamed("reset") == ("backup", "hello from ok")
    assert len(gateway.calls("reset")) == 3


@pytest.mark.parametrize("stream", [False, True])
def test_no_response_at_all_gives_up_at_its_bound_and_falls_back_at_once(
        gateway: Gateway, stream: bool) -> None:
    before = len(gateway.calls("silent"))
    started = time.monotonic()
    served = gateway.streamed("silent") if stream else gateway.plain("silent")[:2]
    took = time.monotonic() - started
    assert served == ("backup", "hello from ok")
    assert len(gateway.calls("silent")) == before + 1  # not waited on twice
    bound = 0.4 if stream else 1.5  # first byte for a stream; the whole call otherwise
    assert bound <= took < bound + 1.0


def test_with_no_fallback_a_silent_upstream_is_a_bounded_504(gateway: Gateway) -> None:
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        gateway.client().chat.completions.create(model="alone", messages=HI, stream=True)
    assert caught.value.status_code == 504 and time.monotonic() - started < 5


@pytest.mark.parametrize("stream", [False, True])
def test_a_very_late_first_token_falls_back(gateway: Gateway, stream: bool) -> None:
    served = gateway.streamed("late") if stream else gateway.plain("late")[:2]
    assert served == ("backup", "hello from ok")


def test_a_stream_that_stalls_ends_within_the_idle_bound_and_the_gateway_stays_well(
        gateway: Gateway) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIError) as caught:
        gateway.streamed("stall")
    assert time.monotonic() - started < 3
    assert "stream" in str(caught.value.message)
    assert gateway.plain("backup")[:2] == ("backup", "hello from ok")
    assert gateway.streamed("backup") == ("backup", "hello from ok")


def test_a_malformed_chunk_mid_stream_is_skipped(gateway: Gateway) -> None:
    assert gateway.streamed("bad-chunk") == ("bad-chunk", "hello from bad-chunk")


def test_a_stream_without_done_after_its_finish_ends_cleanly_with_its_usage(
        gateway: Gateway) -> None:
    with gateway.client().chat.completions.with_streaming_response.create(
            model="no-done", messages=HI, stream=True,
            stream_options={"include_usage": True}) as raw:
        chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "hello from no-done"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12


def test_a_context_too_long_goes_to_the_next_target_without_a_retry(gateway: Gateway) -> None:
    assert gateway.plain("too-long")[0] == "backup"
    assert len(gateway.calls("too-long")) == 1


def test_a_content_filter_is_not_retried_and_its_reason_is_passed_on(gateway: Gateway) -> None:
    backup_calls = len(gateway.calls("ok"))
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.plain("filtered")
    assert caught.value.code == "content_filter"
    assert "filtered" in caught.value.message or "content" in caught.value.message
    assert len(gateway.calls("filtered")) == 1 and len(gateway.calls("ok")) == backup_calls


def test_an_upstream_that_echoes_its_key_does_not_leak_it(gateway: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.plain("leak-key")
    assert API_KEY not in caught.value.message and API_KEY not in caught.value.response.text


@pytest.mark.parametrize("junk", ["junk-text", "junk-truncated", "junk-array", "junk-object"])
def test_junk_answers_count_against_the_breaker_and_fall_back(gateway: Gateway,
                                                              junk: str) -> None:
    assert gateway.plain(junk)[:2] == ("backup", "hello from ok")
    assert gateway.breaker(junk) == "open"


def test_a_stream_with_no_valid_event_falls_back(gateway: Gateway) -> None:
    assert gateway.streamed("junk-sse") == ("backup", "hello from ok")


def test_any_fallback_reports_the_answering_model_and_bills_only_it(gateway: Gateway) -> None:
    model, _, headers = gateway.plain("status-503")
    # its tries, or none once its breaker is open (an earlier test may have opened it)
    assert model == "backup" and int(headers["x-gw-attempts"]) >= 1
    model, _, headers = gateway.plain("too-long")
    assert model == "backup" and int(headers["x-gw-attempts"]) == 2
    # the backup's own usage (9 in, 3 out) at its own prices; nothing for the failed try
    assert float(headers["x-gw-cost"]) == pytest.approx(9 * 1e-6 + 3 * 2e-6)


def test_a_primary_down_then_back_is_served_by_the_fallback_then_returned_to(
        gateway: Gateway) -> None:
    gateway.faults.take_down("flappy")
    assert gateway.plain("flappy")[0] == "backup"  # two 503s open its breaker
    assert gateway.breaker("flappy") == "open"
    calls = len(gateway.calls("flappy"))
    assert gateway.plain("flappy")[0] == "backup" and len(gateway.calls("flappy")) == calls
    gateway.faults.bring_back("flappy")
    checks = len(gateway.faults.health_checks)
    deadline = time.monotonic() + 5
    while gateway.breaker("flappy") != "closed":  # the health check, not live traffic
        assert time.monotonic() < deadline, "the breaker never closed"
        time.sleep(0.1)
    assert len(gateway.faults.health_checks) > checks
    calls = len(gateway.calls("flappy"))
    assert gateway.plain("flappy")[:2] == ("flappy", "hello from flappy")
    assert len(gateway.calls("flappy")) == calls + 1


def test_a_stream_cut_at_40_of_60_words_reaches_the_client_whole(gateway: Gateway) -> None:
    backup_calls = len(gateway.calls("ok"))
    model, text = gateway.streamed("resume-cut")
    assert model == "resume-cut" and text == resume_text(60)
    continued = gateway.faults.calls_to("resume-continue")[-1].body
    assert continued["messages"][-1] == {"role": "assistant", "content": resume_text(40)}
    assert len(gateway.calls("ok")) == backup_calls  # the backup takes no prefill


def test_a_fallback_that_refuses_the_prefix_leads_to_the_cuts_error(gateway: Gateway) -> None:
    with pytest.raises(openai.APIError) as caught:
        gateway.streamed("resume-refused")
    message = str(caught.value.message)
    assert "stream broke" in message and "Unrecognized" not in message
    assert gateway.calls("resume-refuse")  # the resume was tried
