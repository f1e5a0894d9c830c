"""OpenTelemetry traces of the requests: a span each, a child per stage half and per upstream call.

Traces are on only where the environment asks for them (`OTEL_TRACES_EXPORTER`,
or an `OTEL_EXPORTER_OTLP_*ENDPOINT`) and the `gwc[otel]` extra is installed.
Otherwise `active` stays None, gwc never imports opentelemetry, and the
request path pays a global read at each end of the pipeline and a contextvar
read per chain: no span, no context, no header is made. (The SDK's own
default, exporting to localhost:4318 whenever it is installed, would make
every installation pay for traces nobody collects.)

There is one tracer per process, as OpenTelemetry has one tracer provider
per process: the pipeline is shared by every gateway, and a worker of
`gwc serve --workers N` starts its own once forked. The request's span is
opened as the pipeline is entered and closed once its exit halves have run,
which for a stream is when the stream ends, so it covers the whole request;
each stage half runs in a span of its own under it (the halves are where the
time goes: a stage's entry and exit are far apart, the inner stages between
them), and each upstream call in a span under the chain stage's. The span of
a stream's upstream call lasts as long as the stream. A contextvar holds the
innermost gwc span of the task, so the chain finds its parent and the
upstream client's request hook the `traceparent` to send, without either
being handed the exchange. A request the sampler leaves out gets no child
spans, which would be left out too, but still passes its trace on.

Spans carry what the access log carries (the GenAI semantic conventions'
names where they have one, `gw.` ones for the rest) and never a prompt, an
answer or a key: a failure is named by its status, code or exception type,
never its message, which may quote the request.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import orjson

from runtime.errors import GatewayError, UpstreamError
from runtime.formats.base import closed

if TYPE_CHECKING:
    import aiohttp
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

    from compiler.compiled import Deployment, Provider, Timeouts
    from runtime.access_log import AccessLog
    from runtime.pipeline.exchange import Attempt, Body, Exchange
    from runtime.providers.base import Adapter

logger = logging.getLogger("gwc")
T = TypeVar("T")
Call = Callable[["Adapter", "Deployment", "Timeouts"], Awaitable[T]]
Opened = tuple["Body", AsyncIterator["Body"]]
Half = Callable[["Exchange"], Awaitable[None] | None]

EXPORTERS = ("otlp", "console")
# gen_ai.operation.name by route; another route is named by its last segment
OPERATIONS = {"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings",
              "/v1/messages": "chat", "/v1/responses": "chat"}
# gen_ai.provider.name by provider type, where the conventions name the provider;
# an openai_compatible server could be anything, so it keeps its type
PROVIDERS = {"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic",
             "gemini": "gcp.gemini"}

active: Tracing | None = None  # the process's tracer, while a gateway traces


class Tracing:
    """The spans of the requests, handed to `exporters` in batches by the SDK's thread."""

    def __init__(self, exporters: Sequence[SpanExporter]) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "gwc"}))
        self.provider: TracerProvider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER
        for exporter in exporters:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
        self._tracer = self.provider.get_tracer("gwc")
        self._kinds = {"server": trace.SpanKind.SERVER, "client": trace.SpanKind.CLIENT,
                       "internal": trace.SpanKind.INTERNAL}
        self._error = trace.Status(trace.StatusCode.ERROR)
        self.context_of = trace.set_span_in_context
        # W3C trace context alone: a caller's baggage is not handed on to the providers
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_env(cls, env: Mapping[str, str], log: AccessLog) -> Tracing | None:
        """The tracer the environment asks for, or None. One it asks for and gwc cannot
        make is said once, in the log: the gateway serves untraced rather than not at
        all. The exporter reads its `OTEL_EXPORTER_OTLP_*` settings (endpoint, headers,
        timeout, compression, certificates) from the process's environment itself."""
        try:
            names = exporters(env)
        except ValueError as exc:
            logger.error("gwc: tracing is off: %s", exc)
            return None
        if not names:
            return None
        try:
            tracing = cls([_exporter(name) for name in names])
        except ImportError as exc:
            logger.error("gwc: tracing is off: the environment asks for traces and the otel "
                         "extra is not installed (no module `%s`): pip install 'gwc[otel]'",
                         exc.name)
            return None
        log.event("tracing", f"gwc: tracing, exported with {', '.join(names)}",
                  exporters=list(names))
        return tracing

    def start(self) -> list[aiohttp.TraceConfig]:
        """Become the process's tracer. Returns the upstream client's hooks, which put
        the `traceparent` of the upstream call's span on its request."""
        import aiohttp

        global active
        active = self
        hooks = aiohttp.TraceConfig()
        hooks.on_request_start.append(self._inject)
        return [hooks]

    async def stop(self) -> None:
        """Export what is left, off the loop: it may wait on the network."""
        global active
        if active is self:
            active = None
        await asyncio.to_thread(self.provider.shutdown)

    async def _inject(self, session: aiohttp.ClientSession, context: object,
                      params: aiohttp.TraceRequestStartParams) -> None:
        within = _within.get()
        if within is not None:
            self._propagator.inject(params.headers, context=within.context)

    # ---------------------------------------------------------- a request

    def begin(self, exchange: Exchange) -> Scope:
        """The request's span, a child of the caller's `traceparent`: opened as the
        pipeline is entered, or as it is left by a request refused before it (a body
        too large, or not JSON). It starts when the request arrived, as the access
        log's `ms` counts."""
        opened: Scope | None = exchange.trace
        if opened is None:
            parent = self._propagator.extract(exchange.headers)
            operation = _operation(exchange.endpoint.path)
            arrived = time.time_ns() - int((exchange.gateway.clock() - exchange.started) * 1e9)
            span = self._tracer.start_span(operation, parent, self._kinds["server"],
                                           start_time=arrived)
            opened = exchange.trace = Scope(self, span, operation)
        return opened

    def end(self, exchange: Exchange, failure: Exception | None) -> None:
        """The request's span closed, with what its exit halves found out."""
        opened: Scope | None = exchange.trace
        if opened is None:
            return
        exchange.trace = None
        span = opened.span
        if span.is_recording():  # an unsampled request costs no attributes
            attributes = _attributes(exchange)
            model = attributes.get("gen_ai.request.model")
            if model is not None:
                span.update_name(f"{opened.operation} {model}")  # the conventions' name
            span.set_attributes(attributes)
            if failure is not None:  # a bug in an exit half
                span.set_attribute("error.type", type(failure).__qualname__)
                if exchange.error is None and exchange.chunks is None:
                    span.set_attribute("http.response.status_code", 500)  # as the proxy answers
            if failure is not None or exchange.status >= 500:
                span.set_status(self._error)
        span.end()

    def span(self, name: str, parent: Context, kind: str, attributes: dict[str, Any]
             ) -> Span:
        return self._tracer.start_span(name, parent, self._kinds[kind], attributes)

    def ended(self, span: Span, failure: BaseException | None, outcome: str | None = None
              ) -> None:
        """A span closed with how its work ended: a failure by its name, never its message.
        A cancellation (the client left) is no error of the span's own."""
        if span.is_recording():
            if outcome is not None:
                span.set_attribute("gw.outcome", outcome)
            if failure is not None and not isinstance(failure, _LEFT):
                span.set_attribute("error.type", _named(failure))
                if isinstance(failure, UpstreamError):
                    if failure.status is not None:
                        span.set_attribute("http.response.status_code", failure.status)
                    span.set_status(self._error)
                elif not isinstance(failure, GatewayError) or failure.status >= 500:
                    span.set_status(self._error)
        span.end()


class Scope:
    """The innermost gwc span of a task, and what a span under it needs."""

    __slots__ = ("context", "operation", "recording", "span", "tracing")

    def __init__(self, tracing: Tracing, span: Span, operation: str) -> None:
        self.tracing = tracing
        self.span = span
        self.operation = operation
        self.context = tracing.context_of(span)
        # A request sampled out would have its children sampled out too (the samplers
        # decide by the parent or the trace id): none is made, and the upstream is told
        # the trace, unsampled, by the request's own span.
        self.recording = span.is_recording()

    def child(self, name: str, attributes: dict[str, Any]) -> Scope:
        span = self.tracing.span(name, self.context, "internal", attributes)
        return Scope(self.tracing, span, self.operation)

    def called(self, call: Call[T]) -> Call[T]:
        """A plain upstream call, in a span of its own that ends with its outcome."""
        if not self.recording:
            return call

        async def traced(adapter: Adapter, deployment: Deployment, timeouts: Timeouts) -> T:
            span = self._attempt(adapter, deployment)
            token = _within.set(Scope(self.tracing, span, self.operation))
            try:
                result = await call(adapter, deployment, timeouts)
            except BaseException as failure:
                self.tracing.ended(span, failure, _outcome(failure))
                raise
            finally:
                _within.reset(token)
            self.tracing.ended(span, None, "ok")
            return result
        return traced

    def opened(self, call: Call[Opened]) -> Call[Opened]:
        """A stream's upstream call, in a span that lasts as long as the stream does
        (its end, its cut or its close), not just until its first chunk."""
        if not self.recording:
            return call

        async def traced(adapter: Adapter, deployment: Deployment, timeouts: Timeouts
                         ) -> Opened:
            span = self._attempt(adapter, deployment)
            token = _within.set(Scope(self.tracing, span, self.operation))
            try:
                first, chunks = await call(adapter, deployment, timeouts)
            except BaseException as failure:
                self.tracing.ended(span, failure, _outcome(failure))
                raise
            finally:
                _within.reset(token)
            return first, _watched(self.tracing, chunks, span)
        return traced

    def skipped(self, attempt: Attempt) -> None:
        """A model passed over makes no call, so it gets no span: an event says why."""
        self.span.add_event("skipped", {"gw.model": attempt.model,
                                        "gw.provider": attempt.provider,
                                        "gw.outcome": attempt.outcome})

    def _attempt(self, adapter: Adapter, deployment: Deployment) -> Span:
        model = deployment.model.upstream
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": self.operation,
            "gen_ai.provider.name": _provider_name(deployment.provider),
            "gen_ai.request.model": model,
            "gw.model": deployment.name, "gw.provider": deployment.provider.name}
        attributes.update(_server(adapter.base_url))
        return self.tracing.span(f"{self.operation} {model}", self.context, "client",
                                 attributes)


_within: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("gwc_span", default=None)
_LEFT = (asyncio.CancelledError, GeneratorExit)


def scope() -> Scope | None:
    """The gwc span the caller runs under, where its request is traced: a chain's
    attempts are its children."""
    return _within.get()


def staged(name: str, half: str, run: Half) -> Callable[[Exchange], Awaitable[None]]:
    """A stage's half, run in a span of its own: what the pipeline runs while tracing
    is on. A refusal it raises names the span's `error.type`."""
    span_name, attributes = f"{name}.{half}", {"gw.stage": name, "gw.half": half}

    async def traced(exchange: Exchange) -> None:
        tracing = active  # None: stopped while the request was in flight
        request = tracing.begin(exchange) if tracing is not None else None
        within = request.child(span_name, attributes) \
            if request is not None and request.recording else request
        token = _within.set(within)
        failure: BaseException | None = None
        try:
            result = run(exchange)
            if result is not None:
                await result
        except BaseException as exc:
            failure = exc
            raise
        finally:
            _within.reset(token)
            if within is not None and within is not request:  # the half's own span
                within.tracing.ended(within.span, failure)
    return traced


def exporters(env: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters `env` asks for: none while OTEL_SDK_DISABLED is true, and,
    with OTEL_TRACES_EXPORTER unset, otlp only where an OTLP endpoint is set. Raises
    ValueError for an exporter or a protocol gwc does not make."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    named = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not named:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or \
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        named = "otlp" if endpoint else "none"
    names = tuple(dict.fromkeys(n.strip() for n in named.split(",") if n.strip()))
    if "none" in names:
        return ()
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise ValueError(f"OTEL_TRACES_EXPORTER names `{unknown[0]}`: gwc exports spans "
                         "with `otlp` (OTLP over HTTP) or `console`")
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if "otlp" in names and protocol != "http/protobuf":
        raise ValueError(f"the OTLP protocol is `{protocol}`: gwc sends spans over HTTP "
                         "as protobuf (`http/protobuf`)")
    return names


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


async def _watched(tracing: Tracing, chunks: AsyncIterator[Body], span: Span
                   ) -> AsyncIterator[Body]:
    """A stream's chunks, its upstream call's span ended once they are over."""
    outcome, failure = "closed", None  # closed early: its client left
    try:
        async for chunk in chunks:
            yield chunk
        outcome = "ok"
    except Exception as cut:
        outcome, failure = f"cut: {_named(cut)}", cut
        raise
    finally:
        await closed(chunks)
        tracing.ended(span, failure, outcome)


def _attributes(exchange: Exchange) -> dict[str, Any]:
    """What the access log says of a request, in the conventions' names where they have
    one: never a prompt, an answer or a key (the key's id, as the log has)."""
    request, deployment, hit, usage = (exchange.request, exchange.answered_by, exchange.hit,
                                       exchange.usage)
    found: dict[str, Any] = {
        "gen_ai.operation.name": _operation(exchange.endpoint.path),
        "http.request.method": "POST", "url.path": exchange.endpoint.path,
        "http.response.status_code": exchange.status,
        "gw.request_id": exchange.request_id, "gw.policy": exchange.loaded.version,
        "gw.endpoint": exchange.endpoint.name, "gw.cache": exchange.cache,
        "gw.attempts": exchange.tried()}
    body = exchange.body if isinstance(exchange.body, dict) else {}
    requested = request.model if request is not None else body.get("model")
    if isinstance(requested, str):
        found["gen_ai.request.model"] = requested
    if request is not None:
        found["gw.stream"] = request.stream
        if request.max_tokens is not None:
            found["gen_ai.request.max_tokens"] = int(request.max_tokens)
        if request.temperature is not None:
            found["gen_ai.request.temperature"] = float(request.temperature)
    if exchange.decision is not None and exchange.decision.where:
        found["gw.rule"] = exchange.decision.where
    if exchange.key_id is not None:
        found["gw.key"] = exchange.key_id
    if exchange.guarding is not None and exchange.guarding.acted:
        found["gw.guards"] = exchange.guarding.header()  # `x-gw-guards`: names and actions
    answer = exchange.answer if exchange.answer is not None else \
        orjson.loads(hit.answer) if hit is not None else None
    model = answer.get("model") if isinstance(answer, dict) else None
    if deployment is not None:
        found.update({"gen_ai.provider.name": _provider_name(deployment.provider),
                      "gw.model": deployment.name, "gw.provider": deployment.provider.name})
        if not isinstance(model, str):
            model = deployment.model.upstream  # a stream's: the model the chain called
    elif hit is not None:
        found.update({"gw.model": hit.model, "gw.provider": hit.provider, "gw.saved": hit.cost})
        provider = exchange.loaded.policy.providers.get(hit.provider)
        if provider is not None:
            found["gen_ai.provider.name"] = _provider_name(provider)
        if exchange.similarity is not None:
            found["gw.cache.similarity"] = exchange.similarity
    if isinstance(model, str):
        found["gen_ai.response.model"] = model
    if usage:
        found["gen_ai.usage.input_tokens"] = int(usage.get("prompt_tokens") or 0)
        found["gen_ai.usage.output_tokens"] = int(usage.get("completion_tokens") or 0)
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached:
            found["gen_ai.usage.cache_read.input_tokens"] = int(cached)
        if usage.get("estimated"):
            found["gw.usage.estimated"] = True  # a cut stream's, from the text delivered
    if exchange.cost is not None:
        found["gw.cost"] = exchange.cost
    if exchange.error is not None:
        found["error.type"] = exchange.error.code or str(exchange.error.status)
    return found


def _operation(path: str) -> str:
    return OPERATIONS.get(path) or path.rsplit("/", 1)[-1]


def _provider_name(provider: Provider) -> str:
    return PROVIDERS.get(provider.type, provider.type)


@functools.lru_cache(maxsize=64)
def _server(base_url: str) -> tuple[tuple[str, Any], ...]:
    """server.address and server.port of an upstream, read once per base URL."""
    parts = urlsplit(base_url)
    if not parts.hostname:
        return ()  # the mock calls nothing
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return (("server.address", parts.hostname),)
    return (("server.address", parts.hostname), ("server.port", port))


def _outcome(failure: BaseException) -> str:
    """An upstream call's outcome as the access log names its attempts."""
    return "cancelled" if isinstance(failure, _LEFT) else _named(failure)


def _named(failure: BaseException) -> str:
    if isinstance(failure, UpstreamError):
        return failure.label
    if isinstance(failure, GatewayError):
        return failure.code or str(failure.status)
    return type(failure).__qualname__
