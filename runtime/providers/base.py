"""What every provider adapter offers the gateway, in OpenAI's terms.

An adapter takes an OpenAI-shaped request body and a model, calls its
upstream in that upstream's own wire format, and answers in OpenAI's shape:
a chat completion, a stream of chat completion chunks, or embeddings. Its
upstream's failures leave it as `UpstreamError`, nothing else; a client field
its translation cannot express leaves it as a 400 `GatewayError`.

How upstream failures are sorted:

- an error status: kind "status", with the upstream's own code; a context
  overflow gets code "context_length_exceeded" and a content filter's refusal
  status 400 and code "content_filter", whatever the provider called them;
- no connection, headers, first event or next event in time: "timeout";
- a refused, reset or broken connection: "connect";
- an answer that is not in the wire format (not JSON, not an object, a field
  missing or of the wrong type, a stream without one valid event): "malformed".

A stream's events are read here and handed to the adapter's `Decoder`, a
state machine without I/O that turns them into chunks. Before its first chunk
a bad event fails the call (the chain may still fall back); after it, a bad
event is skipped. Once the decoder has seen the answer whole (every finish
reason, and the usage if it was asked for), a missing end marker, a late one
or a broken connection ends the stream cleanly.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import orjson

from compiler.compiled import EnvValue, Model, Provider, Timeouts
from policies.backoff import parse_retry_after
from runtime.errors import UpstreamError
from runtime.providers.sse import Parser, Stalled, Watch
from runtime.providers.wire import Malformed
from runtime.scrub import scrub

Body = dict[str, Any]

TAIL = 1.0  # seconds a stream already whole waits for its end marker
MAX_MESSAGE = 500  # characters of an upstream's error message passed on

TOO_LONG = re.compile(  # what OpenAI, vLLM, Anthropic, Gemini, Mistral, Bedrock say
    r"(?i)context.length|maximum context|context window|prompt is too long|input is too long"
    r"|exceeds the maximum number of tokens|too many input tokens")


def resolve(value: str | EnvValue | None, env: dict[str, str]) -> str | None:
    """A setting's value, reading `env("NAME")` from the gateway's environment."""
    if isinstance(value, EnvValue):
        return env.get(value.env, value.default)
    return value


def call_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    """aiohttp's bounds on a plain call: connecting, and the whole call."""
    return _client_timeout(timeouts.total, timeouts.connect)


def stream_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    """aiohttp's part of a stream's bounds: connecting. The rest is kept by `Watch`."""
    return _client_timeout(None, timeouts.connect)


@functools.lru_cache(maxsize=256)
def _client_timeout(total: float | None, connect: float) -> aiohttp.ClientTimeout:
    """One aiohttp timeout object per distinct setting, not one per request."""
    return aiohttp.ClientTimeout(total=total, connect=connect)


class Decoder(abc.ABC):
    """One stream's events as OpenAI chunks: no I/O, so it can be fed anything in tests.

    `event` raises `Malformed` for an event not in the wire format and
    `UpstreamError` for an error the upstream reports in the stream.
    """

    started = False  # a chunk has been produced: fallback is over, bad events are skipped
    complete = False  # the answer is whole: every finish reason, and usage if asked for
    ended = False  # the stream's end marker has arrived

    @abc.abstractmethod
    def event(self, name: str, data: bytes) -> Body | None:
        """The chunk an event makes, if any."""

    def end(self) -> Body | None:
        """A last chunk once the stream is over (the usage, for some providers)."""
        return None


class Adapter(abc.ABC):
    def __init__(self, provider: Provider, session: aiohttp.ClientSession | None,
                 env: dict[str, str]) -> None:
        self.provider = provider
        self.name = provider.name
        self.session = session
        self.env = env
        self.api_key = resolve(provider.api_key, env)
        self.base_url = (resolve(provider.base_url, env) or self.default_base_url).rstrip("/")
        headers = {k: resolve(v, env) or "" for k, v in provider.headers.items()}
        # built once: the same for every call this adapter makes
        self.request_headers = {"content-type": "application/json", **headers, **self.auth()}
        self.secrets = tuple(v for v in (self.api_key, *headers.values()) if v)

    default_base_url = ""

    def auth(self) -> dict[str, str]:
        """The headers that carry this provider's credentials."""
        return {}

    @abc.abstractmethod
    async def complete(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        """One chat completion, in OpenAI's response shape."""

    @abc.abstractmethod
    def stream(self, model: Model, body: Body, timeouts: Timeouts) -> AsyncIterator[Body]:
        """Chat completion chunks, in OpenAI's shape, as they arrive."""

    async def embed(self, model: Model, body: Body, timeouts: Timeouts) -> Body:
        raise UpstreamError("status", f"provider '{self.name}' has no embeddings", status=400)

    def health_url(self, model: Model) -> str:
        """The provider's cheapest call about one model, for health checks: the model's
        entry in its list of models (OpenAI's, Gemini's and vLLM's path alike)."""
        return f"{self.base_url}/models/{model.upstream}"

    async def check_health(self, model: Model, timeout: float) -> None:
        """One health check within `timeout`: returns if the provider answered for the
        model, else raises `UpstreamError` as any call would."""
        assert self.session is not None
        try:
            async with self.session.get(self.health_url(model), headers=self.request_headers,
                                        timeout=_client_timeout(timeout, min(timeout, 10.0))
                                        ) as response:
                raw = await response.read()
        except TimeoutError as exc:
            raise UpstreamError("timeout", f"{self.name}: no answer within {timeout:g}s") \
                from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError("connect", f"{self.name}: {self.scrub(str(exc))}") from exc
        if response.status >= 400:
            raise self.failure(response.status, raw, response.headers)

    def scrub(self, text: str) -> str:
        """Upstream text with this adapter's credentials, and any credential's shape, removed."""
        return scrub(text, self.secrets)

    # ------------------------------------------------------------- errors

    def failure(self, status: int, raw: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """An upstream's error answer, sorted for the chain (see the module's docstring)."""
        data = _json(raw)
        message, code = error_fields(data, raw)
        filtered = filtered_categories(data) if code == "content_filter" else ""
        return self.status_error(status, message, code, _retry_after(headers, data), filtered)

    def status_error(self, status: int, message: str, code: str | None,
                     retry_after: float | None = None, filtered: str = "") -> UpstreamError:
        """`filtered` names what a content filter caught, where the provider says."""
        message = message[:MAX_MESSAGE]
        if code == "content_filter":
            reason = f" ({filtered})" if filtered else ""
            return UpstreamError("status", self.scrub(f"{self.name} refused the request by its "
                                                      f"content filter{reason}: {message}"),
                                 status=400, code="content_filter")
        if code == "context_length_exceeded" or (status == 400 and TOO_LONG.search(message)):
            code = "context_length_exceeded"
        return UpstreamError("status", self.scrub(f"{self.name} answered {status}: {message}"),
                             status=status, retry_after=retry_after, code=code)

    def malformed(self, what: str) -> UpstreamError:
        return UpstreamError("malformed", f"{self.name}: bad answer: {self.scrub(what)}")

    # --------------------------------------------------------------- HTTP

    async def send(self, url: str, payload: Body, timeout: aiohttp.ClientTimeout,
                   headers: Mapping[str, str] | None = None) -> aiohttp.ClientResponse:
        """POST JSON (with the client's `headers` an upstream of its own API takes);
        an error status, a timeout or a refused connection raises."""
        assert self.session is not None
        try:
            response = await self.session.post(
                url, data=orjson.dumps(payload), timeout=timeout,
                headers={**self.request_headers, **headers} if headers else self.request_headers)
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamError("timeout", f"{self.name}: no connection within "
                                           f"{_seconds_text(timeout.connect)}") from exc
        except TimeoutError as exc:
            raise UpstreamError("timeout", f"{self.name}: no answer within "
                                           f"{_seconds_text(timeout.total)}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError("connect", f"{self.name}: {self.scrub(str(exc))}") from exc
        if response.status >= 400:
            try:
                raw = await response.read()
            except TimeoutError as exc:
                raise UpstreamError("timeout", f"{self.name} answered {response.status}, "
                                               "its body cut off by the timeout") from exc
            except (aiohttp.ClientError, OSError):
                raw = b""  # the status says enough
            finally:
                response.release()
            raise self.failure(response.status, raw, response.headers)
        return response

    async def post_json(self, url: str, payload: Body, timeouts: Timeouts,
                        read: Callable[[Body], Body],
                        headers: Mapping[str, str] | None = None) -> Body:
        """A non-streamed call under `timeouts.total`, its answer checked by `read`."""
        response = await self.send(url, payload, call_timeout(timeouts), headers)
        try:
            raw = await response.read()
        except TimeoutError as exc:
            raise UpstreamError("timeout", f"{self.name}: no whole answer within "
                                           f"{timeouts.total:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError("connect", f"{self.name}: answer cut off: "
                                           f"{self.scrub(str(exc))}") from exc
        finally:
            response.release()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise self.malformed(f"not JSON ({exc}): {_excerpt(raw)}") from exc
        if not isinstance(data, dict):
            raise self.malformed(f"not a JSON object: {_excerpt(raw)}")
        try:
            return read(data)
        except Malformed as exc:
            raise self.malformed(str(exc)) from exc

    async def events(self, url: str, payload: Callable[[], Body], timeouts: Timeouts,
                     decoder: Decoder, headers: Mapping[str, str] | None = None
                     ) -> AsyncIterator[Body]:
        """A streamed call: the chunks `decoder` makes of its server-sent events.

        `payload` is called on the first step, so a client field the
        translation refuses raises there, like every other failure.
        """
        body = payload()
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async with asyncio.timeout(timeouts.first_byte):
                response = await self.send(url, body, stream_timeout(timeouts), headers)
        except TimeoutError as exc:
            raise UpstreamError("timeout", f"{self.name}: no response within "
                                           f"{timeouts.first_byte:g}s") from exc
        content = response.content
        read = content.readany
        watch = Watch(loop, content, began, timeouts.first_byte)
        parser = Parser()
        first = tail = True
        try:
            while not decoder.ended:
                piece = await read()
                for name, data in parser.feed(piece) if piece else parser.end():
                    if first:
                        first = False
                        watch.rearm(timeouts.idle)
                    try:
                        chunk = decoder.event(name, data)
                    except Malformed as exc:
                        if not decoder.started:
                            raise self.malformed(f"{exc}: {_excerpt(data)}") from exc
                        continue  # junk in mid-stream is skipped, as the peers do
                    if chunk is not None:
                        watch.since = 0.0  # the consumer's time is not the upstream's
                        yield chunk
                    watch.since = loop.time()
                    if decoder.ended:
                        break
                if not piece:
                    break
                if tail and decoder.complete:
                    tail = False
                    watch.rearm(min(TAIL, timeouts.idle))
            if decoder.ended and not content.at_eof():  # read to the end: the connection
                watch.rearm(min(TAIL, timeouts.idle))  # goes back to the pool
                while await read():
                    pass
        except Stalled as exc:
            if not (decoder.complete or decoder.ended):
                bound = "first event" if first else "next event"
                raise UpstreamError("timeout", f"{self.name}: no {bound} within "
                                               f"{watch.limit:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            if not (decoder.complete or decoder.ended):
                raise UpstreamError("connect", f"{self.name}: stream broke: "
                                               f"{self.scrub(str(exc))}") from exc
        except Malformed as exc:  # the framing itself, not one event
            if not (decoder.complete or decoder.ended):
                raise self.malformed(str(exc)) from exc
        finally:
            watch.stop()
            response.release()  # closes the connection unless the body was read to its end
        if not (decoder.complete or decoder.ended):
            if not decoder.started:
                raise self.malformed("the stream has no valid event")
            raise UpstreamError("connect", f"{self.name}: the stream ended before its finish")
        last = decoder.end()
        if last is not None:
            yield last


def _seconds_text(value: float | None) -> str:
    return "its bound" if value is None else f"{value:g}s"


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _excerpt(raw: bytes, size: int = 120) -> str:
    return repr(raw[:size])[2:-1] + ("..." if len(raw) > size else "")


def error_fields(data: Any, raw: bytes = b"") -> tuple[str, str | None]:
    """An error body's message and code, in any of the shapes providers use.

    OpenAI `{"error": {"message", "type", "code"}}`; Anthropic `{"type": "error",
    "error": {"type", "message"}}` (its `type` is the code); Gemini `{"error":
    {"code": 400, "message", "status"}}` (its `status` is the code), sometimes
    inside a list; vLLM and others `{"message", ...}` or `{"detail": ...}`.
    """
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            code = next((c for c in (error.get("code"), error.get("status"), error.get("type"))
                         if isinstance(c, str) and c), None)
            inner = error.get("innererror")
            if isinstance(inner, dict) and inner.get("code") == "ResponsibleAIPolicyViolation":
                code = "content_filter"
            if isinstance(message, str) and message:
                return message, code
            return (code or "no message"), code
        if isinstance(error, str) and error:
            return error, None
        for key in ("message", "detail"):
            if isinstance(data.get(key), str) and data[key]:
                code = data.get("code")
                return data[key], code if isinstance(code, str) else None
    return raw.decode("utf-8", "replace")[:MAX_MESSAGE] or "no message", None


def filtered_categories(data: Any) -> str:
    """Azure's content filter results as the categories it filtered: "hate, violence"."""
    error = data.get("error") if isinstance(data, dict) else None
    inner = error.get("innererror") if isinstance(error, dict) else None
    results = inner.get("content_filter_result") if isinstance(inner, dict) else None
    if not isinstance(results, dict):
        return ""
    return ", ".join(name for name, result in results.items()
                     if isinstance(result, dict) and result.get("filtered") is True)


def _seconds(value: float | None) -> float | None:
    return max(value, 0.0) if value is not None and math.isfinite(value) else None


def _retry_after(headers: Mapping[str, str], data: Any) -> float | None:
    """When to try again: `retry-after-ms`, `Retry-After` (seconds or an HTTP date),
    or Gemini's `RetryInfo.retryDelay` ("30s") in the error's details."""
    try:
        millis = headers.get("retry-after-ms")
        if millis:
            found = _seconds(float(millis) / 1000)
            if found is not None:
                return found
        found = _seconds(parse_retry_after(headers.get("retry-after")))
    except (ValueError, TypeError, OverflowError, IndexError):
        found = None
    if found is not None:
        return found
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return _seconds(float(delay[:-1]))
            except ValueError:
                return None
    return None
