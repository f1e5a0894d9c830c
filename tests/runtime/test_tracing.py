"""Traces: a span per request, a child per stage half and per upstream call, in the GenAI
conventions' names and never with a prompt; the caller's `traceparent` honoured and each
upstream call's sent on; OTLP over HTTP from a running `gwc serve`; nothing while off."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime import tracing
from runtime.access_log import AccessLog
from runtime.app import create_app
from runtime.gateway import Gateway
from runtime.pipeline import STAGES
from runtime.tracing import Tracing, exporters
from tests.fakes import API_KEY, Script, free_port, gwc_serve, openai_fake, serving

POLICY = """
provider fake {{
  type     = openai
  base_url = "{openai}/v1"
  api_key  = "{key}"
  retry {{ attempts = 1 }}
}}

model ok     {{ provider = fake; name = "ok"; input = $1/1M; output = $2/1M; context = 100k }}
model broken {{ provider = fake; name = "error-500" }}
model tiny   {{ provider = fake; name = "ok"; context = 10 }}
model cut    {{ provider = fake; name = "cut" }}

route {{
  when model == "falls-back" -> broken, ok
  when model == "too-long"   -> tiny, ok
  when model == "once"       -> ok
  when model in ["ok", "cut"] -> requested
}}

quota global when model == "once" {{
  requests = 1 per minute
}}

auth {{ mode = none }}
"""

PROMPT = "the launch code is 7-alpha-tango"  # must never reach a span
# every stage half a request that reaches the chain runs, in the order they run
ENTERED = [f"{s.name}.enter" for s in STAGES if s.enter is not None]
LEFT = [f"{s.name}.leave" for s in reversed(STAGES) if s.leave is not None]
HALVES = ENTERED + LEFT


def caller() -> tuple[str, str, str]:
    """A caller's trace id and span id, and the `traceparent` that carries them."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def hexed(number: int, width: int) -> str:
    return f"{number:0{width}x}"


def one(spans: list[ReadableSpan], kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.kind == kind]
    assert len(found) == 1, [s.name for s in found]
    return found[0]


def named(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    return next(s for s in spans if s.name == name)


def halves(spans: list[ReadableSpan], request: ReadableSpan) -> list[str]:
    """The names of the request span's children, in the order they began."""
    assert request.context is not None
    children = [s for s in spans if s.parent is not None
                and s.parent.span_id == request.context.span_id]
    return [s.name for s in sorted(children, key=lambda s: s.start_time or 0)]


def attempts(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.kind == SpanKind.CLIENT),
                  key=lambda s: s.start_time or 0)


def sent(traceparent: str) -> str:
    """The span id a `traceparent` names as the parent."""
    return traceparent.split("-")[2]


@dataclass
class Traced:
    url: str
    upstream: Script
    upstream_url: str
    memory: InMemorySpanExporter
    gateway: Gateway

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0)

    def spans(self, trace_id: str) -> list[ReadableSpan]:
        """The trace's spans, once its request's has ended: a stream's ends after its
        last chunk is sent, which a client may read before the gateway is done."""
        assert self.gateway.tracing is not None
        deadline = time.monotonic() + 10
        while True:
            self.gateway.tracing.provider.force_flush()
            found = [s for s in self.memory.get_finished_spans()
                     if s.context is not None and hexed(s.context.trace_id, 32) == trace_id]
            if any(s.kind == SpanKind.SERVER for s in found) or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


@pytest.fixture(scope="class")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    script, memory = Script(), InMemorySpanExporter()
    folder = tmp_path_factory.mktemp("tracing")
    with serving(openai_fake.app(script)) as upstream:
        policy = folder / "policy.gw"
        policy.write_text(POLICY.format(openai=upstream, key=API_KEY))
        log = (folder / "access.log").open("wb")
        gateway = Gateway(str(policy), {}, log=AccessLog(log), tracing=Tracing([memory]))
        with serving(create_app(gateway)) as url:
            yield Traced(url, script, upstream, memory, gateway)
        gateway.log.close()
        log.close()


class TestTraced:
    def test_a_plain_request_is_a_span_over_its_stage_halves_and_its_upstream_call(
            self, traced: Traced) -> None:
        trace_id, parent, traceparent = caller()
        reply = traced.client().chat.completions.with_raw_response.create(
            model="ok", messages=[{"role": "user", "content": PROMPT}], max_tokens=50,
            extra_headers={"traceparent": traceparent})
        completion = reply.parse()
        assert completion.usage is not None
        spans = traced.spans(trace_id)

        request = one(spans, SpanKind.SERVER)
        assert request.name == "chat ok"
        assert request.parent is not None and request.parent.is_remote
        assert hexed(request.parent.span_id, 16) == parent  # the caller's span's child
        attributes = dict(request.attributes or {})
        assert str(attributes["gw.rule"]).startswith("policy.gw:")
        assert attributes["gw.cost"] == pytest.approx(float(reply.headers["x-gw-cost"]),
                                                      abs=1e-8)
        assert attributes.items() >= {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "ok",
            "gen_ai.request.max_tokens": 50, "gen_ai.response.model": completion.model,
            "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": completion.usage.completion_tokens,
            "gw.attempts": 1, "gw.cache": "bypass", "gw.model": "ok", "gw.provider": "fake",
            "gw.stream": False, "gw.request_id": reply.headers["x-gw-request-id"],
            "http.response.status_code": 200}.items()
        assert request.status.status_code == StatusCode.UNSET
        assert halves(spans, request) == HALVES

        call = one(spans, SpanKind.CLIENT)
        chain = named(spans, "chain.enter")
        assert call.parent is not None and chain.context is not None
        assert call.parent.span_id == chain.context.span_id
        assert call.name == "chat ok"
        assert dict(call.attributes or {}).items() >= {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "ok", "gw.model": "ok", "gw.outcome": "ok",
            "server.address": "127.0.0.1",
            "server.port": int(traced.upstream_url.rsplit(":", 1)[1])}.items()
        assert call.context is not None
        assert traced.upstream.headers[-1]["traceparent"] == \
            f"00-{trace_id}-{hexed(call.context.span_id, 16)}-01"
        assert not any(PROMPT in s.to_json() for s in spans)

    def test_a_streamed_requests_span_and_its_upstream_calls_last_as_long_as_the_stream(
            self, traced: Traced) -> None:
        trace_id, _, traceparent = caller()
        chunks = list(traced.client().chat.completions.create(
            model="ok", messages=[{"role": "user", "content": PROMPT}], stream=True,
            stream_options={"include_usage": True}, extra_headers={"traceparent": traceparent}))
        usage = chunks[-1].usage
        assert usage is not None
        spans = traced.spans(trace_id)

        request = one(spans, SpanKind.SERVER)
        assert dict(request.attributes or {}).items() >= {
            "gw.stream": True, "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "gen_ai.response.model": "ok"}.items()
        assert halves(spans, request) == HALVES
        call, chain = one(spans, SpanKind.CLIENT), named(spans, "chain.enter")
        # the chain's entry half ends at the first chunk; the upstream call at the last
        assert (call.end_time or 0) > (chain.end_time or 0)
        assert (call.end_time or 0) <= (named(spans, "usage.leave").start_time or 0)
        assert dict(call.attributes or {})["gw.outcome"] == "ok"
        assert request.start_time == min(s.start_time or 0 for s in spans)
        assert request.end_time == max(s.end_time or 0 for s in spans)
        assert not any(PROMPT in s.to_json() for s in spans)

    def test_a_fallback_is_two_upstream_calls_each_sent_its_own_traceparent(
            self, traced: Traced) -> None:
        trace_id, _, traceparent = caller()
        reply = traced.client().chat.completions.with_raw_response.create(
            model="falls-back", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": traceparent})
        assert reply.headers["x-gw-model"] == "ok"
        spans = traced.spans(trace_id)

        failed, answered = attempts(spans)
        chain = named(spans, "chain.enter")
        assert chain.context is not None
        assert {c.parent.span_id for c in (failed, answered) if c.parent} == \
            {chain.context.span_id}
        assert dict(failed.attributes or {}).items() >= {
            "gw.model": "broken", "gen_ai.request.model": "error-500", "gw.outcome": "500",
            "error.type": "500", "http.response.status_code": 500}.items()
        assert failed.status.status_code == StatusCode.ERROR
        assert dict(answered.attributes or {})["gw.outcome"] == "ok"
        assert answered.status.status_code == StatusCode.UNSET
        assert dict(one(spans, SpanKind.SERVER).attributes or {})["gw.attempts"] == 2
        assert [sent(h["traceparent"]) for h in traced.upstream.headers[-2:]] == \
            [hexed(c.context.span_id, 16) for c in (failed, answered) if c.context]

    def test_a_refused_request_is_traced_to_the_stage_that_refused_it(
            self, traced: Traced) -> None:
        body = {"model": "once", "messages": [{"role": "user", "content": "hi"}]}
        calls = len(traced.upstream.headers)
        assert httpx.post(traced.url + "/v1/chat/completions", json=body).status_code == 200
        trace_id, _, traceparent = caller()
        refused = httpx.post(traced.url + "/v1/chat/completions", json=body,
                             headers={"traceparent": traceparent})
        assert refused.status_code == 429
        spans = traced.spans(trace_id)

        request = one(spans, SpanKind.SERVER)
        assert dict(request.attributes or {}).items() >= {
            "http.response.status_code": 429, "error.type": "rate_limit_exceeded",
            "gw.attempts": 0}.items()
        assert request.status.status_code == StatusCode.UNSET  # the client's, not ours
        # the way in stops at the refusal; the way out goes through every stage
        assert halves(spans, request) == [*ENTERED[:ENTERED.index("limits.enter") + 1],
                                          *LEFT]
        limits = named(spans, "limits.enter")
        assert dict(limits.attributes or {})["error.type"] == "rate_limit_exceeded"
        assert attempts(spans) == []
        assert len(traced.upstream.headers) == calls + 1  # the refused one called nothing

    def test_a_stream_cut_midway_is_a_failed_upstream_call_and_a_failed_request(
            self, traced: Traced) -> None:
        trace_id, _, traceparent = caller()
        stream = traced.client().chat.completions.create(
            model="cut", messages=[{"role": "user", "content": "hi"}], stream=True,
            extra_headers={"traceparent": traceparent})
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            list(stream)
        spans = traced.spans(trace_id)

        call, request = one(spans, SpanKind.CLIENT), one(spans, SpanKind.SERVER)
        assert str(dict(call.attributes or {})["gw.outcome"]).startswith("cut: ")
        assert call.status.status_code == StatusCode.ERROR
        assert dict(request.attributes or {}).items() >= {
            "http.response.status_code": 502, "error.type": "stream_interrupted"}.items()
        assert request.status.status_code == StatusCode.ERROR

    def test_a_model_passed_over_is_an_event_of_the_chain_not_a_call(
            self, traced: Traced) -> None:
        trace_id, _, traceparent = caller()
        traced.client().chat.completions.create(
            model="too-long", messages=[{"role": "user", "content": "word " * 40}],
            extra_headers={"traceparent": traceparent})
        spans = traced.spans(trace_id)

        [skip] = named(spans, "chain.enter").events
        assert skip.name == "skipped"
        assert dict(skip.attributes or {})["gw.model"] == "tiny"
        assert str(dict(skip.attributes or {})["gw.outcome"]).startswith("skipped: ")
        assert [dict(c.attributes or {})["gw.model"] for c in attempts(spans)] == ["ok"]

    def test_a_request_without_a_traceparent_starts_the_trace_the_upstream_joins(
            self, traced: Traced) -> None:
        reply = httpx.post(traced.url + "/v1/chat/completions", json={
            "model": "ok", "messages": [{"role": "user", "content": "hi"}]})
        upstream_trace = traced.upstream.headers[-1]["traceparent"].split("-")[1]
        spans = traced.spans(upstream_trace)
        request = one(spans, SpanKind.SERVER)
        assert request.parent is None
        assert dict(request.attributes or {})["gw.request_id"] == \
            reply.headers["x-gw-request-id"]


def test_the_environment_names_the_exporters_and_nothing_means_off() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert exporters({}) == ()  # the SDK installed is not enough: nothing is collected
    assert exporters(endpoint) == ("otlp",)
    assert exporters({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/v1/traces"}) == ("otlp",)
    assert exporters({"OTEL_TRACES_EXPORTER": "console, otlp"}) == ("console", "otlp")
    assert exporters({**endpoint, "OTEL_TRACES_EXPORTER": "none"}) == ()
    assert exporters({**endpoint, "OTEL_SDK_DISABLED": "true"}) == ()
    with pytest.raises(ValueError, match="`zipkin`"):
        exporters({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ValueError, match="`grpc`"):
        exporters({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_off_no_span_is_made_and_no_traceparent_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracing.active is None

    def no_spans(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a span was made with tracing off")
    monkeypatch.setattr(SdkTracer, "start_span", no_spans)
    script = Script()
    with serving(openai_fake.app(script)) as upstream:
        policy = tmp_path / "policy.gw"
        policy.write_text(POLICY.format(openai=upstream, key=API_KEY))
        log = (tmp_path / "access.log").open("wb")
        gateway = Gateway(str(policy), {}, log=AccessLog(log))
        with serving(create_app(gateway)) as url:
            for stream in (False, True):
                reply = httpx.post(url + "/v1/chat/completions", json={
                    "model": "falls-back", "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}]},
                    headers={"traceparent": caller()[2]})
                assert reply.status_code == 200
            assert gateway.tracing is None and tracing.active is None
        gateway.log.close()
        log.close()
    assert len(script.headers) == 4 and not any("traceparent" in h for h in script.headers)


BLOCKER = """
import sys


class NotInstalled:
    \"\"\"opentelemetry as it is without the extra: not there.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
"""


def test_without_the_extra_a_gateway_asked_for_traces_serves_untraced_and_says_why(
        tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)  # run before gwc is imported
    script = Script()
    with serving(openai_fake.app(script)) as upstream:
        policy = tmp_path / "policy.gw"
        policy.write_text(POLICY.format(openai=upstream, key=API_KEY))
        port = free_port()
        log = (tmp_path / "serve.log").open("w")
        process = gwc_serve(str(policy), port, log, env={
            "PYTHONPATH": str(tmp_path), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
        try:
            reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={
                "model": "ok", "messages": [{"role": "user", "content": "hi"}]})
        finally:
            process.terminate()
            process.wait(30)
        log.close()
    assert reply.status_code == 200
    said = (tmp_path / "serve.log").read_text()
    assert "gwc: tracing is off" in said and "pip install 'gwc[otel]'" in said
    assert "traceparent" not in script.headers[-1]


def test_a_gwc_serve_configured_by_otel_variables_alone_exports_over_otlp_http(
        tmp_path: Path) -> None:
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: Request) -> Response:
        assert request.headers["content-type"] == "application/x-protobuf"
        received.append(ExportTraceServiceRequest.FromString(await request.body()))
        return Response(ExportTraceServiceResponse().SerializeToString(),
                        media_type="application/x-protobuf")
    collector = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])
    script = Script()
    trace_id, parent, traceparent = caller()
    with serving(collector) as otlp, serving(openai_fake.app(script)) as upstream:
        policy = tmp_path / "policy.gw"
        policy.write_text(POLICY.format(openai=upstream, key=API_KEY))
        port = free_port()
        log = (tmp_path / "serve.log").open("w")
        process = gwc_serve(str(policy), port, log, env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_SERVICE_NAME": "gwc-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "600000"})  # no batch leaves before the process stops
        try:
            reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={
                "model": "ok", "messages": [{"role": "user", "content": PROMPT}]},
                headers={"traceparent": traceparent})
            assert reply.status_code == 200
        finally:
            process.terminate()
            process.wait(30)
        log.close()
    assert process.returncode == 0

    services = {a.value.string_value for r in received for rs in r.resource_spans
                for a in rs.resource.attributes if a.key == "service.name"}
    assert services == {"gwc-under-test"}
    spans = exported(received, trace_id)
    request = next(s for s in spans if s.kind == s.SPAN_KIND_SERVER)
    assert request.name == "chat ok" and request.parent_span_id.hex() == parent
    values = {a.key: a.value for a in request.attributes}
    assert values["gen_ai.request.model"].string_value == "ok"
    assert values["gw.request_id"].string_value == reply.headers["x-gw-request-id"]
    assert values["gen_ai.usage.output_tokens"].int_value == \
        reply.json()["usage"]["completion_tokens"]
    assert {s.name for s in spans} >= {*HALVES, "chat ok"}
    call = next(s for s in spans if s.kind == s.SPAN_KIND_CLIENT)
    assert sent(script.headers[-1]["traceparent"]) == call.span_id.hex()
    assert not any(PROMPT.encode() in r.SerializeToString() for r in received)
    said = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]
    assert {"event": "tracing", "exporters": ["otlp"]}.items() <= \
        next(line for line in said if line.get("event") == "tracing").items()


def exported(received: list[ExportTraceServiceRequest], trace_id: str) -> list[Any]:
    return [span for request in received for resource in request.resource_spans
            for scope in resource.scope_spans for span in scope.spans
            if span.trace_id.hex() == trace_id]
