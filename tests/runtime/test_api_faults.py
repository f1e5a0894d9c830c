"""Upstream faults on the Messages and Responses routes, to every provider family.

The chat routes' fault suite (test_faults.py) is repeated here for the two
APIs the gateway gained, in each wire format an upstream of theirs may speak:
Anthropic's Messages (an `anthropic` provider, passed through for Messages,
translated for Responses), OpenAI's Responses (an `openai` provider, passed
through for Responses) and chat completions (`openai` for Messages,
`openai_compatible` for both), and Gemini's. Every upstream here is the fault
fake (tests/fakes/faults.py), scripted byte by byte with `Reply`; the
fallbacks are the ordinary fakes.

What a client must get, whatever the upstream does: a whole answer, or a
clean error in its API's shape within a bound. A stream that broke after it
began ends with an `error` event and a dropped connection, never with
`message_stop` (Messages) or `response.completed` (Responses); nothing is
stored of a failed response, and a stream cut after text reached the client
is still charged for it.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
import pytest

from policies.memory_counters import MemoryCounters
from policies.records import open_records
from runtime.access_log import AccessLog
from runtime.app import create_app
from runtime.gateway import Gateway
from runtime.limiting import Limiter
from runtime.state import State
from tests.fakes import API_KEY, Script, anthropic_fake, gemini_fake, openai_fake, serving
from tests.fakes.faults import Faults, Reply, json_reply, resume_text, serving_faults, sse_reply

FAMILIES = ("claude", "native", "compat", "gemini")  # anthropic, openai, openai_compatible, gemini
APIS = ("messages", "responses")
SLOTS = 120  # fault models per family: each test takes fresh ones, so breakers never meet
TEAM = {"x-team": "faults"}
BOUND = 6.0  # seconds: no fault may hold a client longer than this

PROVIDERS = """
provider f-claude {{ type = anthropic; base_url = "{faults}"; api_key = "{key}"
  {limits} }}
provider f-native {{ type = openai; base_url = "{faults}/v1"; api_key = "{key}"
  {limits} }}
provider f-compat {{ type = openai_compatible; base_url = "{faults}/v1"; api_key = "{key}"
  {limits} }}
provider f-gemini {{ type = gemini; base_url = "{faults}/v1beta"; api_key = "{key}"
  {limits} }}
provider f-resume {{ type = openai_compatible; base_url = "{faults}/v1"; api_key = "{key}"
  retry {{ attempts = 2; backoff = 50ms..200ms; resume = true }} }}
provider g-claude {{ type = anthropic; base_url = "{anthropic}"; api_key = "{key}" }}
provider g-openai {{ type = openai; base_url = "{openai}/v1"; api_key = "{key}" }}
provider g-gemini {{ type = gemini; base_url = "{gemini}/v1beta"; api_key = "{key}" }}

model backup-claude {{ provider = g-claude; name = "ok"; input = $1/1M; output = $2/1M }}
model backup-native {{ provider = g-openai; name = "ok"; input = $1/1M; output = $2/1M }}
model backup-compat {{ provider = f-compat; name = "ok"; input = $1/1M; output = $2/1M }}
model backup-gemini {{ provider = g-gemini; name = "ok"; input = $1/1M; output = $2/1M }}
model resume-cut {{ provider = f-resume; name = "resume-cut"; input = $1/1M; output = $2/1M }}
model resume-continue {{ provider = f-resume; name = "resume-continue"; prefill = true }}
model claude-cache {{ provider = f-claude; name = "claude-cache" }}
model native-cache {{ provider = f-native; name = "native-cache" }}
cache when model in ["claude-cache", "native-cache"] {{ mode = exact; ttl = 10m }}
"""
LIMITS = ("connect_timeout = 1s\n  first_byte_timeout = 300ms\n  idle_timeout = 300ms\n"
          "  timeout = 600ms\n  retry { attempts = 2; backoff = 10ms..20ms }\n"
          "  breaker { failures = 50; window = 30s; cooldown = 30s }")


def _policy(faults: str, anthropic: str, openai: str, gemini: str) -> str:
    lines = [PROVIDERS.format(faults=faults, anthropic=anthropic, openai=openai, gemini=gemini,
                              key=API_KEY, limits=LIMITS)]
    alone: list[str] = []
    rules: list[str] = []
    for family in FAMILIES:
        backed: list[str] = []
        for n in range(SLOTS):
            name = f"{family}-{n}"
            for model in (name, f"{name}-fb"):
                lines.append(f'model {model} {{ provider = f-{family}; name = "{name}"; '
                             "input = $1000/1M; output = $2000/1M }")
            alone.append(f'"{name}"')
            backed.append(f'"{name}-fb"')
        rules.append(f"  when model in [{', '.join(backed)}] -> requested, backup-{family}")
    lines.append("route {\n" + "\n".join(rules) +
                 f"\n  when model in [{', '.join(alone)}] -> requested\n"
                 '  when model == "resume-cut" -> resume-cut, resume-continue\n'
                 '  when model in ["claude-cache", "native-cache"] -> requested\n'
                 "  otherwise -> requested\n}")
    lines.append('auth { mode = headers; team_header = "x-team" }')
    return "\n".join(lines)


@dataclass
class Stack:
    url: str
    faults: Faults
    gateway: Gateway
    log: Path
    taken: dict[str, Iterator[int]] = field(default_factory=dict)

    def slot(self, family: str) -> str:
        """A fault model of `family` no other test has used (its upstream name too)."""
        counter = self.taken.setdefault(family, iter(range(SLOTS)))
        taken = next(counter, None)
        assert taken is not None, f"every {family} fault model is taken: raise SLOTS"
        return f"{family}-{taken}"

    def lines(self) -> list[dict[str, Any]]:
        self.gateway.log.flush()
        return [json.loads(line) for line in self.log.read_text().splitlines()
                if '"request_id"' in line]

    def line(self, request_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 5
        while True:
            found = [line for line in self.lines() if line["request_id"] == request_id]
            if found or time.monotonic() > deadline:
                assert found, f"no log line for {request_id}"
                return found[0]
            time.sleep(0.02)

    def stored(self) -> int:
        """How many responses the gateway keeps."""
        records = self.gateway.state.records
        assert records is not None
        return int(records.rows("SELECT COUNT(*) FROM responses")[0][0])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("api-faults")
    scripts = Script(), Script(), Script()
    with serving_faults(Faults(hold=10.0)) as (url, faults), \
            serving(openai_fake.app(scripts[0])) as o, \
            serving(anthropic_fake.app(scripts[1])) as a, \
            serving(gemini_fake.app(scripts[2])) as g:
        policy = folder / "policy.gw"
        policy.write_text(_policy(url, a, o, g))
        log_path = folder / "access.log"
        log = log_path.open("wb")
        state = State(Limiter(MemoryCounters()), open_records(f"sqlite:///{folder}/gw.db"))
        gateway = Gateway(str(policy), {}, log=AccessLog(log), state=state)
        with serving(create_app(gateway)) as served:
            yield Stack(served, faults, gateway, log_path)
        gateway.log.close()
        log.close()


# ------------------------------------------------------------ the wire formats

ids = itertools.count(1)


def _words(text: str) -> list[str]:
    return [w if i == 0 else " " + w for i, w in enumerate(text.split())]


class Wire:
    """One upstream wire format: a good answer, its stream, and their broken kin."""

    def plain(self, text: str) -> Any:
        raise NotImplementedError

    def events(self, text: str) -> list[bytes | dict[str, Any]]:
        """A whole stream of `text`, its end marker included."""
        raise NotImplementedError

    def begun(self, text: str) -> list[bytes | dict[str, Any]]:
        """The stream's first events, with the first words of `text`, and nothing more."""
        raise NotImplementedError

    def finish(self) -> list[bytes | dict[str, Any]]:
        """The events after the text: its finish and usage, no end marker."""
        raise NotImplementedError

    def malformed(self) -> bytes:
        raise NotImplementedError

    def error_event(self) -> bytes | dict[str, Any]:
        raise NotImplementedError

    def error_body(self, status: int) -> Any:
        return {"error": {"message": f"scripted {status}", "type": "server_error",
                          "code": None, "param": None}}


class AnthropicWire(Wire):
    def _message(self, content: list[Any], stop: str | None, out: int) -> dict[str, Any]:
        return {"id": f"msg_f{next(ids)}", "type": "message", "role": "assistant",
                "model": "m", "content": content, "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": out,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}

    def plain(self, text: str) -> Any:
        return self._message([{"type": "text", "text": text}], "end_turn", 5)

    def begun(self, text: str) -> list[bytes | dict[str, Any]]:
        return [{"type": "message_start", "message": self._message([], None, 1)},
                {"type": "ping"},
                {"type": "content_block_start", "index": 0,
                 "content_block": {"type": "text", "text": ""}},
                *({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": w}} for w in _words(text)[:2])]

    def rest(self, text: str) -> list[bytes | dict[str, Any]]:
        return [{"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": w}} for w in _words(text)[2:]]

    def finish(self) -> list[bytes | dict[str, Any]]:
        return [{"type": "content_block_stop", "index": 0},
                {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                    "stop_sequence": None},
                 "usage": {"output_tokens": 5}}]

    def events(self, text: str) -> list[bytes | dict[str, Any]]:
        return [*self.begun(text), *self.rest(text), *self.finish(), {"type": "message_stop"}]

    def malformed(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "ind\n\n'

    def error_event(self) -> bytes | dict[str, Any]:
        return {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

    def error_body(self, status: int) -> Any:
        return {"type": "error", "error": {"type": "api_error", "message": f"scripted {status}"}}


class ChatWire(Wire):
    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return b"data: " + orjson.dumps({
            "id": "chatcmpl-f", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"

    def plain(self, text: str) -> Any:
        return {"id": "chatcmpl-f", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}

    def begun(self, text: str) -> list[bytes | dict[str, Any]]:
        return [self._chunk({"role": "assistant", "content": ""}),
                *(self._chunk({"content": w}) for w in _words(text)[:2])]

    def rest(self, text: str) -> list[bytes | dict[str, Any]]:
        return [self._chunk({"content": w}) for w in _words(text)[2:]]

    def finish(self) -> list[bytes | dict[str, Any]]:
        usage = {"id": "chatcmpl-f", "object": "chat.completion.chunk", "created": 1,
                 "model": "m", "choices": [],
                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
        return [self._chunk({}, "stop"), b"data: " + orjson.dumps(usage) + b"\n\n"]

    def events(self, text: str) -> list[bytes | dict[str, Any]]:
        return [*self.begun(text), *self.rest(text), *self.finish(), b"data: [DONE]\n\n"]

    def malformed(self) -> bytes:
        return b'data: {"id": "chatcmpl-f", "choices": [{"delta": {"con\n\n'

    def error_event(self) -> bytes | dict[str, Any]:
        return b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'


class ResponsesWire(Wire):
    def _response(self, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
        return {"id": f"resp_f{next(ids)}", "object": "response", "created_at": 1,
                "status": status, "error": None, "incomplete_details": None, "model": "m",
                "output": output, "usage": usage, "store": True, "metadata": {}}

    USAGE: ClassVar[dict[str, Any]] = {
        "input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}

    def _item(self, text: str, status: str) -> dict[str, Any]:
        return {"id": "msg_f", "type": "message", "role": "assistant", "status": status,
                "content": [{"type": "output_text", "text": text, "annotations": []}]}

    def plain(self, text: str) -> Any:
        return self._response("completed", [self._item(text, "completed")], self.USAGE)

    def begun(self, text: str) -> list[bytes | dict[str, Any]]:
        self.text = text
        where = {"item_id": "msg_f", "output_index": 0, "content_index": 0}
        return [{"type": "response.created", "sequence_number": 0,
                 "response": self._response("in_progress", [], None)},
                {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
                 "item": {**self._item("", "in_progress"), "content": []}},
                {"type": "response.content_part.added", "sequence_number": 2, **where,
                 "part": {"type": "output_text", "text": "", "annotations": []}},
                *({"type": "response.output_text.delta", "sequence_number": 3 + i, **where,
                   "delta": w} for i, w in enumerate(_words(text)[:2]))]

    def rest(self, text: str) -> list[bytes | dict[str, Any]]:
        where = {"item_id": "msg_f", "output_index": 0, "content_index": 0}
        return [{"type": "response.output_text.delta", "sequence_number": 10 + i, **where,
                 "delta": w} for i, w in enumerate(_words(text)[2:])]

    def finish(self) -> list[bytes | dict[str, Any]]:
        return [{"type": "response.output_item.done", "sequence_number": 50, "output_index": 0,
                 "item": self._item(getattr(self, "text", ""), "completed")}]

    def events(self, text: str) -> list[bytes | dict[str, Any]]:
        return [*self.begun(text), *self.rest(text), *self.finish(),
                {"type": "response.completed", "sequence_number": 51,
                 "response": self.plain(text)}]

    def malformed(self) -> bytes:
        return b'event: response.output_text.delta\ndata: {"type": "response.output_te\n\n'

    def error_event(self) -> bytes | dict[str, Any]:
        return {"type": "response.failed", "sequence_number": 60, "response": {
            **self._response("failed", [], None),
            "error": {"code": "server_error", "message": "scripted failure"}}}


class GeminiWire(Wire):
    USAGE: ClassVar[dict[str, Any]] = {"promptTokenCount": 10, "candidatesTokenCount": 5,
                                       "totalTokenCount": 15}

    def _piece(self, text: str, finish: bool = False) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]},
                                     "index": 0}
        payload: dict[str, Any] = {"candidates": [candidate], "modelVersion": "m",
                                   "responseId": "g"}
        if finish:
            candidate["finishReason"] = "STOP"
            payload["usageMetadata"] = self.USAGE
        return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"

    def plain(self, text: str) -> Any:
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": self.USAGE, "modelVersion": "m", "responseId": "g"}

    def begun(self, text: str) -> list[bytes | dict[str, Any]]:
        return [self._piece(w) for w in _words(text)[:2]]

    def rest(self, text: str) -> list[bytes | dict[str, Any]]:
        return [self._piece(w) for w in _words(text)[2:]]

    def finish(self) -> list[bytes | dict[str, Any]]:
        return [self._piece("", finish=True)]

    def events(self, text: str) -> list[bytes | dict[str, Any]]:
        # Gemini's stream has no end marker: its finish reason ends it
        return [*self.begun(text), *self.rest(text), *self.finish()]

    def malformed(self) -> bytes:
        return b'data: {"candidates": [{"content": {"role": "mod\r\n\r\n'

    def error_event(self) -> bytes | dict[str, Any]:
        return b'data: {"error": {"code": 503, "message": "overloaded", ' \
               b'"status": "UNAVAILABLE"}}\r\n\r\n'

    def error_body(self, status: int) -> Any:
        return {"error": {"code": status, "message": f"scripted {status}", "status": "INTERNAL"}}


def wire(family: str, api: str) -> Wire:
    """The wire format a family's upstream speaks for a route's calls."""
    if family == "claude":
        return AnthropicWire()
    if family == "gemini":
        return GeminiWire()
    if family == "native" and api == "responses":
        return ResponsesWire()
    return ChatWire()


BACKUP = "hello from ok"  # what every family's fallback answers
TEXT = "one two three four five"


# ------------------------------------------------------------------ the client

PATHS = {"messages": "/v1/messages", "responses": "/v1/responses"}


def request_body(api: str, model: str, stream: bool, **extra: Any) -> dict[str, Any]:
    if api == "messages":
        body: dict[str, Any] = {"model": model, "max_tokens": 50,
                                "messages": [{"role": "user", "content": "hi there"}]}
    else:
        body = {"model": model, "input": "hi there"}
    return {**body, "stream": stream, **extra}


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    body: Any = None  # a plain answer or an error, parsed
    events: list[dict[str, Any]] = field(default_factory=list)  # a stream's, parsed
    names: list[str] = field(default_factory=list)  # their SSE event names
    dropped: bool = False  # the connection broke before the stream's end
    seconds: float = 0.0

    @property
    def kinds(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]


def call(stack: Stack, api: str, model: str, stream: bool, hang_up_after: int | None = None,
         path: str | None = None, **extra: Any) -> Answer:
    """One request, read to its end; after `hang_up_after` pieces of text, the client
    leaves."""
    body = request_body(api, model, stream, **extra)
    started = time.monotonic()
    with httpx.stream("POST", stack.url + (path or PATHS[api]), json=body, headers=TEAM,
                      timeout=20) as reply:
        answer = Answer(reply.status_code, reply.headers)
        if not reply.headers.get("content-type", "").startswith("text/event-stream"):
            answer.body = json.loads(reply.read())
        else:
            name, held = "", b""
            try:
                for piece in reply.iter_bytes():  # SSE lines end at LF (not U+2028 and kin)
                    *lines, held = (held + piece).split(b"\n")
                    for line in (raw.decode().rstrip("\r") for raw in lines):
                        if line.startswith("event:"):
                            name = line[6:].strip()
                        elif line.startswith("data:"):
                            answer.events.append(json.loads(line[5:]))
                            answer.names.append(name)
                    said = sum(kind in DELTAS for kind in answer.kinds)
                    if hang_up_after is not None and said >= hang_up_after:
                        break
            except httpx.RemoteProtocolError:
                answer.dropped = True
    answer.seconds = time.monotonic() - started
    return answer


DELTAS = ("content_block_delta", "response.output_text.delta")


def text_of(api: str, answer: Answer) -> str:
    """The answer's text, plain or streamed."""
    if answer.events:
        if api == "messages":
            return "".join(e["delta"].get("text", "") for e in answer.events
                           if e.get("type") == "content_block_delta")
        return "".join(e["delta"] for e in answer.events
                       if e.get("type") == "response.output_text.delta")
    if api == "messages":
        return "".join(b.get("text", "") for b in answer.body["content"])
    return "".join(part.get("text", "") for item in answer.body["output"]
                   if item.get("type") == "message" for part in item["content"])


def is_error_shape(api: str, body: Any) -> bool:
    if api == "messages":
        return isinstance(body, dict) and body.get("type") == "error" and \
            set(body["error"]) == {"type", "message"} and bool(body["error"]["message"])
    return isinstance(body, dict) and set(body.get("error") or {}) == {
        "message", "type", "code", "param"} and bool(body["error"]["message"])


FINAL = {"messages": "message_stop", "responses": "response.completed"}


def assert_whole(api: str, answer: Answer, text: str) -> None:
    """A whole answer: every word, and a stream ending as its API ends one."""
    assert answer.status == 200, (answer.status, answer.body)
    assert answer.seconds < BOUND
    assert text_of(api, answer) == text
    if answer.events:
        assert not answer.dropped and answer.kinds[-1] == FINAL[api], answer.kinds
        assert "error" not in answer.kinds


def assert_clean_error(api: str, answer: Answer, statuses: tuple[int, ...] = (502, 503, 504)
                       ) -> None:
    """A refusal before any byte of an answer, or a stream that says it broke: never a
    500, never a final event after a failure."""
    assert answer.seconds < BOUND, answer.seconds
    if answer.events:
        assert answer.status == 200
        assert answer.kinds[-1] == "error" and answer.names[-1] == "error", answer.kinds
        assert FINAL[api] not in answer.kinds and "response.incomplete" not in answer.kinds
        assert answer.dropped  # so that no client takes what it has for the whole
        error = answer.events[-1]
        if api == "messages":
            assert is_error_shape(api, error), error
        else:
            assert isinstance(error.get("message"), str) and error["message"], error
        return
    assert answer.status in statuses, (answer.status, answer.body)
    assert is_error_shape(api, answer.body), answer.body
    assert answer.headers.get("x-gw-request-id")


def script(stack: Stack, model: str, *replies: Reply) -> None:
    stack.faults.replies[model] = list(replies)


# ---------------------------------------------------------- faults before a byte

STATUS_FAULTS = [429, 500, 503, 529]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_error_status_falls_back_or_is_a_clean_error(stack: Stack, family: str, api: str,
                                                        stream: bool) -> None:
    """429 (with a Retry-After), 500, 503 and Anthropic's 529: retried, then the next
    model; with none left, a 502 in the route's shape."""
    form = wire(family, api)
    for status in STATUS_FAULTS:
        slot = stack.slot(family)
        headers = {"retry-after": "0.01"} if status == 429 else {}
        script(stack, slot, json_reply(status, form.error_body(status), headers))
        before = stack.stored()
        assert_whole(api, call(stack, api, f"{slot}-fb", stream), BACKUP)
        assert_clean_error(api, call(stack, api, slot, stream))
        assert len(stack.faults.calls_to(slot)) == 4  # two tries each: the retry budget
        if api == "responses":
            assert stack.stored() == before + 1  # the backup's answer, and nothing else


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_reset_or_silence_before_any_byte_falls_back_within_its_bound(
        stack: Stack, family: str, api: str, stream: bool) -> None:
    slot = stack.slot(family)
    script(stack, slot, Reply(b"", "reset"))
    assert_whole(api, call(stack, api, f"{slot}-fb", stream), BACKUP)
    assert_clean_error(api, call(stack, api, slot, stream))
    slot = stack.slot(family)
    script(stack, slot, Reply(b"", "stall"))
    if stream:  # the first byte's bound (300ms), tried twice
        alone = call(stack, api, slot, stream)
        assert_clean_error(api, alone, (504,))
        assert alone.seconds < 2 * 0.3 + 1.0
    else:  # the whole call's bound (600ms), and a timeout goes elsewhere at once
        backed = call(stack, api, f"{slot}-fb", stream)
        assert_whole(api, backed, BACKUP)
        assert 0.6 <= backed.seconds < 0.6 + 1.0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("api", APIS)
def test_a_junk_answer_falls_back(stack: Stack, family: str, api: str) -> None:
    for junk in (b"<html>502 Bad Gateway</html>", b'{"id": "x", "cho', b"[1, 2]", b'{"id": "x"}',
                 b"null"):
        slot = stack.slot(family)
        script(stack, slot, json_reply(200, junk))
        assert_whole(api, call(stack, api, f"{slot}-fb", False), BACKUP)
        assert_clean_error(api, call(stack, api, slot, False), (502,))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("api", APIS)
def test_a_stream_without_one_valid_event_falls_back(stack: Stack, family: str,
                                                     api: str) -> None:
    slot = stack.slot(family)
    script(stack, slot, sse_reply(b": a comment\n\n", b"data: not json\n\n",
                                  b"data: \xff\xfe{\n\n", b"event: ping\n\n"))
    assert_whole(api, call(stack, api, f"{slot}-fb", True), BACKUP)
    assert_clean_error(api, call(stack, api, slot, True), (502,))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("api", APIS)
def test_a_late_first_event_falls_back(stack: Stack, family: str, api: str) -> None:
    slot = stack.slot(family)
    script(stack, slot, sse_reply(*wire(family, api).events(TEXT), delay=1.5))
    answer = call(stack, api, f"{slot}-fb", True)
    assert_whole(api, answer, BACKUP)
    assert answer.seconds < 0.3 + 1.0  # the first byte's bound, not the upstream's delay


# ------------------------------------------------------------ faults mid-stream

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("api", APIS)
def test_a_whole_stream_is_passed_on_whole(stack: Stack, family: str, api: str) -> None:
    slot = stack.slot(family)
    script(stack, slot, sse_reply(*wire(family, api).events(TEXT)))
    before = stack.stored()
    answer = call(stack, api, slot, True)
    assert_whole(api, answer, TEXT)
    if api == "responses":
        assert stack.stored() == before + 1


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("then", ["stall", "reset", "close"])
def test_a_stream_that_breaks_after_it_began_ends_with_an_error_event(
        stack: Stack, family: str, api: str, then: str) -> None:
    """Stalled past the idle bound, reset, or ended without its finish: no fallback once
    the client has text, an error event, a dropped connection, and nothing stored."""
    slot = stack.slot(family)
    form = wire(family, api)
    script(stack, slot, sse_reply(*form.begun(TEXT), then=then))
    before = stack.stored()
    answer = call(stack, api, f"{slot}-fb", True)
    assert_clean_error(api, answer)
    assert text_of(api, answer) == "one two"  # what arrived, and nothing made up
    assert stack.stored() == before
    assert len(stack.faults.calls_to(slot)) == 1  # a stream begun is not tried again
    line = stack.line(answer.headers["x-gw-request-id"])
    assert line["status"] == 502 and line["model"] == f"{slot}-fb"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("api", APIS)
def test_an_error_the_upstream_streams_after_it_began_ends_with_an_error_event(
        stack: Stack, family: str, api: str) -> None:
    slot = stack.slot(family)
    form = wire(family, api)
    script(stack, slot, sse_reply(*form.begun(TEXT), form.error_event()))
    before = stack.stored()
    answer = call(stack, api, f"{slot}-fb", True)
    assert_clean_error(api, answer)
    assert stack.stored() == before


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("api", APIS)
def test_a_malformed_event_mid_stream_is_skipped(stack: Stack, family: str, api: str) -> None:
    slot = stack.slot(family)
    form = wire(family, api)
    begun = form.begun(TEXT)
    script(stack, slot, sse_reply(*begun, form.malformed(), *form.events(TEXT)[len(begun):]))
    assert_whole(api, call(stack, api, slot, True), TEXT)


@pytest.mark.parametrize(("family", "api"), [
    ("native", "messages"), ("compat", "messages"), ("compat", "responses"),
    ("gemini", "messages"), ("gemini", "responses")])
def test_a_stream_whole_but_for_its_end_marker_ends_whole(stack: Stack, family: str,
                                                          api: str) -> None:
    """Chat's `[DONE]` missing after the finish and usage (Gemini has no marker at all;
    the Responses API's is its `response.completed`, whose loss is a break, above; and
    Anthropic's `message_stop`: below)."""
    slot = stack.slot(family)
    form = wire(family, api)
    script(stack, slot, sse_reply(*form.begun(TEXT), *form.rest(TEXT), *form.finish()))
    assert_whole(api, call(stack, api, slot, True), TEXT)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("api", APIS)
def test_an_error_event_before_the_first_chunk_falls_back(stack: Stack, family: str,
                                                          api: str) -> None:
    slot = stack.slot(family)
    form = wire(family, api)
    script(stack, slot, sse_reply(form.error_event()))
    assert_whole(api, call(stack, api, f"{slot}-fb", True), BACKUP)
    assert_clean_error(api, call(stack, api, slot, True))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("api", APIS)
def test_an_upstreams_refusal_of_the_request_is_passed_on_not_retried(
        stack: Stack, family: str, api: str) -> None:
    """A 4xx other than 429 is the request's fault: the next model would refuse it too."""
    form = wire(family, api)
    for status, kind in ((400, "invalid_request_error"), (404, "not_found_error")):
        slot = stack.slot(family)
        script(stack, slot, json_reply(status, form.error_body(status)))
        before = stack.stored()
        answer = call(stack, api, f"{slot}-fb", False)
        assert_clean_error(api, answer, (status,))
        if api == "messages":
            assert answer.body["error"]["type"] == kind
        assert len(stack.faults.calls_to(slot)) == 1
        assert stack.stored() == before


@pytest.mark.parametrize("family", ["native", "compat"])
def test_an_incomplete_response_is_passed_on_as_incomplete_and_not_stored(
        stack: Stack, family: str) -> None:
    slot = stack.slot(family)
    form = wire(family, "responses")
    if isinstance(form, ResponsesWire):
        cut = {**form.plain("one two"), "status": "incomplete",
               "incomplete_details": {"reason": "max_output_tokens"}}
        events: list[bytes | dict[str, Any]] = [
            *form.begun(TEXT), {"type": "response.incomplete", "sequence_number": 9,
                                "response": cut}]
    else:
        assert isinstance(form, ChatWire)
        events = [*form.begun(TEXT), form._chunk({}, "length"), *form.finish()[1:],
                  b"data: [DONE]\n\n"]
    script(stack, slot, sse_reply(*events))
    before = stack.stored()
    answer = call(stack, "responses", slot, True)
    assert answer.status == 200 and not answer.dropped
    assert answer.kinds[-1] == "response.incomplete" and "response.completed" not in answer.kinds
    assert stack.stored() == before  # only a completed response is kept


def test_count_tokens_falls_back_past_a_failing_upstream_or_fails_cleanly(stack: Stack) -> None:
    """Anthropic's own count is a call like any other: retried, fallen back from."""
    path = "/v1/messages/count_tokens"
    form = AnthropicWire()
    for fault in (json_reply(500, form.error_body(500)), json_reply(200, b"<html>"),
                  json_reply(200, {"input_tokens": "many"}), Reply(b"", "reset")):
        slot = stack.slot("claude")
        script(stack, slot, fault)
        backed = call(stack, "messages", f"{slot}-fb", False, path=path)
        assert backed.status == 200 and backed.body["input_tokens"] > 0, backed.body
        assert_clean_error("messages", call(stack, "messages", slot, False, path=path))
    slot = stack.slot("claude")
    script(stack, slot, Reply(b"", "stall"))
    assert_clean_error("messages", call(stack, "messages", slot, False, path=path), (504,))


# ------------------------------------- junk that passes the adapters' own checks

def _completion(message: dict[str, Any]) -> dict[str, Any]:
    return {"id": "chatcmpl-f", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


JUNK_CALLS = {"not-objects": {"content": None, "tool_calls": ["junk"]},
              "a-string": {"content": None, "tool_calls": "abc"},
              "function-not-an-object": {"content": None, "tool_calls": [
                  {"id": "c", "type": "function", "function": "f"}]},
              "id-not-a-string": {"content": None, "tool_calls": [
                  {"id": 5, "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
              "content-a-number": {"content": 5},
              "content-a-list": {"content": ["a"]}}
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("junk", list(JUNK_CALLS))
def test_junk_in_a_chat_answer_is_a_bad_answer_fallen_back_from(stack: Stack, api: str,
                                                                junk: str) -> None:
    """What the chat adapter's check lets through (it reads only `choices[i].message`
    and `usage`) but the Message or Response conversion cannot read: a malformed answer,
    not a 500 nor a silently emptied answer (both, before 8a5a343)."""
    slot = stack.slot("compat")
    script(stack, slot, json_reply(200, _completion(JUNK_CALLS[junk])))
    assert_whole(api, call(stack, api, f"{slot}-fb", False), BACKUP)
    assert_clean_error(api, call(stack, api, slot, False), (502,))


def _chunk(delta: Any) -> bytes:
    return b"data: " + orjson.dumps({
        "id": "chatcmpl-f", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}) + b"\n\n"


JUNK_DELTAS = {"tool-calls-a-string": {"tool_calls": "abc"}, "tool-calls-not-objects": {
    "tool_calls": [5]}, "function-not-an-object": {"tool_calls": [{"index": 0, "function": "f"}]},
    "content-a-number": {"content": 5}, "index-not-a-number": {"tool_calls": [{"index": "x"}]}}
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("junk", list(JUNK_DELTAS))
def test_junk_in_a_chat_chunk_mid_stream_is_skipped(stack: Stack, api: str, junk: str) -> None:
    """As the adapters skip junk once a stream began; the Messages translation read a
    tool call's junk as objects (a 500 mid-stream before 8a5a343)."""
    slot = stack.slot("compat")
    form = ChatWire()
    script(stack, slot, sse_reply(*form.begun(TEXT), _chunk(JUNK_DELTAS[junk]),
                                  *form.rest(TEXT), *form.finish(), b"data: [DONE]\n\n"))
    answer = call(stack, api, slot, True)
    assert_whole(api, answer, TEXT)
    assert stack.line(answer.headers["x-gw-request-id"])["status"] == 200


@pytest.mark.parametrize("then", ["backup-native", "backup-compat"])
def test_junk_output_items_from_an_upstream_never_make_a_chain_a_500(stack: Stack,
                                                                     then: str) -> None:
    """Output items that are not objects are a malformed answer, so never stored: stored
    (before 8a5a343), they made every follow-up to the chain a 500 for 30 days."""
    slot = stack.slot("native")
    answer = ResponsesWire().plain("x")
    answer["output"] = [5, "junk", {"type": "message"}]
    script(stack, slot, json_reply(200, answer))
    before = stack.stored()
    assert_clean_error("responses", call(stack, "responses", slot, False), (502,))
    assert stack.stored() == before
    ident = answer["id"]
    follow = call(stack, "responses", then, False, previous_response_id=ident)
    assert follow.status in (200, 400), follow.body
    if follow.status == 400:
        assert follow.body["error"]["param"] == "previous_response_id"


def test_a_native_message_stream_whole_but_for_message_stop_still_ends_with_one(
        stack: Stack) -> None:
    """Its message_delta (stop reason and usage) came, so it is whole: the client gets the
    closing event the upstream left out, as chat's clients get `[DONE]` (it got none
    before 8a5a343)."""
    slot = stack.slot("claude")
    form = AnthropicWire()
    script(stack, slot, sse_reply(*form.begun(TEXT), *form.rest(TEXT), *form.finish()))
    assert_whole("messages", call(stack, "messages", slot, True), TEXT)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("how", ["cut", "hang-up"])
def test_a_stream_cut_after_text_reached_the_client_is_charged_for_it(
        stack: Stack, family: str, api: str, how: str) -> None:
    """By the upstream or by a client hanging up: the prompt and what was delivered.
    (A translated Messages stream was free before 8a5a343: its opening message_start's
    zeros counted as the usage.)"""
    slot = stack.slot(family)
    form = wire(family, api)
    if how == "cut":
        script(stack, slot, sse_reply(*form.begun(TEXT), then="reset"))
        answer = call(stack, api, slot, True)
    else:
        script(stack, slot, sse_reply(*form.begun(TEXT), then="stall"))
        answer = call(stack, api, slot, True, hang_up_after=2)
    assert text_of(api, answer) == "one two"
    line = stack.line(answer.headers["x-gw-request-id"])
    assert line["status"] in ((502,) if how == "cut" else (499, 502))  # 502: the idle bound won
    assert line["cost"] and line["cost"] > 0, line
    assert line["tokens"]["prompt_tokens"] > 0 and line["tokens"]["completion_tokens"] > 0


@pytest.mark.parametrize("api", APIS)
def test_a_cut_stream_is_resumed_only_from_the_text_the_client_has(stack: Stack,
                                                                   api: str) -> None:
    """A resume rebuilds a chat conversation from the chat text delivered: none of a
    Messages or Responses stream's events are chat chunks, so such a stream is not
    resumed, and the model that could have continued it is neither called with a prefix
    it cannot use (empty, or none) nor charged with the `malformed` answers it would then
    seem to give. (Before 4883e31 it was both.)"""
    before = len(stack.faults.calls_to("resume-continue"))
    answer = call(stack, api, "resume-cut", True)
    if answer.kinds and answer.kinds[-1] == "error":
        assert_clean_error(api, answer)
    else:
        assert_whole(api, answer, resume_text(60))
    delivered = resume_text(40)
    for tried in stack.faults.calls_to("resume-continue")[before:]:
        last = tried.body["messages"][-1]
        assert last == {"role": "assistant", "content": delivered}, last
    assert stack.gateway.breakers().get("resume-continue", {}).get("recent_failures", 0) == 0


@pytest.mark.parametrize("api", APIS)
def test_an_upstream_answer_with_junk_blocks_is_never_replayed_as_a_500(stack: Stack,
                                                                        api: str) -> None:
    """Blocks or items that are not objects make the answer malformed, so it is never
    cached: cached (before 8a5a343), each streamed request for it was replayed into a
    500 for as long as the entry lived."""
    if api == "messages":
        model, answer = "claude-cache", AnthropicWire().plain("hi")
        answer["content"] = [5, *answer["content"]]
        asked: dict[str, Any] = {"messages": [{"role": "user", "content": "cache me"}]}
    else:
        model, answer = "native-cache", ResponsesWire().plain("hi")
        answer["output"] = [5, *answer["output"]]
        asked = {"input": "cache me"}
    script(stack, model, json_reply(200, answer))
    assert_clean_error(api, call(stack, api, model, False, **asked), (502,))
    again = call(stack, api, model, True, **asked)
    assert_clean_error(api, again, (502,))
    assert stack.line(again.headers["x-gw-request-id"])["cache"] == "miss"
