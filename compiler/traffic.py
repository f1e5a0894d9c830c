"""The traffic format: one request a line, as `gwc log export` writes it.

`gwc simulate` replays it and `gwc diff --traffic` weighs changes by it, so a
team can run last week's production traffic against tomorrow's policy. A line
holds what the policy's conditions read (the request's attributes, the
headers and metadata conditions name) and what happened to it then (the
model that answered, its cost, the cache, the status); never a prompt.
`SCHEMA` is the format as JSON Schema (`docs/traffic.schema.json` is written
from it, and a test holds the two equal); `read` checks every line against
the same rules and says where one is wrong.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from compiler.request import ENDPOINTS, Request, RequestError

_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_COUNT = {"type": "integer", "minimum": 0}
_OPTIONAL_STRING = {"type": ["string", "null"]}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://gwc.dev/schemas/traffic.schema.json",
    "title": "gwc traffic log line",
    "description": "One request the gateway served or refused, as `gwc log export` writes "
                   "it and `gwc simulate` reads it. Absent fields are absent attributes.",
    "type": "object",
    "required": ["ts"],
    "additionalProperties": False,
    "properties": {
        "ts": {"type": "string", "format": "date-time",
               "description": "when the request arrived, RFC 3339 in UTC"},
        "team": _OPTIONAL_STRING, "user": _OPTIONAL_STRING, "key": _OPTIONAL_STRING,
        "endpoint": {"enum": list(ENDPOINTS)},
        "model": {"type": "string", "description": "the model the request named"},
        "stream": {"type": "boolean"}, "tools": {"type": "boolean"},
        "tokens_in": _COUNT, "tokens_out": _COUNT,
        "max_tokens": {"type": ["number", "null"], "minimum": 0},
        "temperature": {"type": ["number", "null"]},
        "meta": _STRINGS,
        "headers": {**_STRINGS, "description": "the headers the policy's conditions read"},
        "answered_by": {**_OPTIONAL_STRING, "description": "the model that answered, as "
                        "the policy names it"},
        "usd": {"type": ["number", "null"], "minimum": 0},
        "cache": {"enum": ["hit", "miss", "bypass"]},
        "status": {"type": "integer", "minimum": 100, "maximum": 599},
    },
}
_REQUEST_FIELDS = ("team", "user", "key", "endpoint", "model", "stream", "tools",
                   "max_tokens", "temperature", "meta", "headers")


class TrafficError(ValueError):
    """A line that is not in the traffic format: where, and what is wrong with it."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Logged:
    """One logged request: when it came (seconds since the epoch), the request as the
    policy sees it, and what happened to it then."""

    at: float
    request: Request
    tokens_out: int = 0
    answered_by: str | None = None
    usd: float | None = None
    cache: str | None = None
    status: int | None = None


def parse(record: Any, line: int = 1) -> Logged:
    """One line's object as a `Logged`, or `TrafficError` naming the line."""
    if not isinstance(record, dict):
        raise TrafficError(line, "a line is a JSON object")
    unknown = sorted(set(record) - set(SCHEMA["properties"]))
    if unknown:
        raise TrafficError(line, f"unknown field '{unknown[0]}'")
    at = _timestamp(record.get("ts"), line)
    fields = {name: record[name] for name in _REQUEST_FIELDS if name in record}
    tokens_in = _count(record, "tokens_in", line)
    try:
        request = Request.from_fields({**fields, "tokens": tokens_in})
    except RequestError as exc:
        raise TrafficError(line, str(exc)) from None
    usd = record.get("usd")
    if usd is not None and (isinstance(usd, bool) or not isinstance(usd, (int, float))
                            or usd < 0):
        raise TrafficError(line, "'usd' must be a number of dollars, 0 or more")
    cache = record.get("cache")
    if cache is not None and cache not in ("hit", "miss", "bypass"):
        raise TrafficError(line, "'cache' must be hit, miss or bypass")
    status = record.get("status")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)
                               or not 100 <= status <= 599):
        raise TrafficError(line, "'status' must be an HTTP status")
    answered = record.get("answered_by")
    if answered is not None and not isinstance(answered, str):
        raise TrafficError(line, "'answered_by' must be a string")
    return Logged(at, request, _count(record, "tokens_out", line), answered,
                  float(usd) if usd is not None else None, cache, status)


def read(lines: Iterable[str]) -> Iterator[Logged]:
    """Every line's `Logged`, in file order; blank lines are skipped."""
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrafficError(number, f"not JSON: {exc.msg}") from None
        yield parse(record, number)


def line(logged: Logged) -> dict[str, Any]:
    """A `Logged` as its line's object: what `read` gives back whole (absent stays absent)."""
    request = logged.request
    out: dict[str, Any] = {"ts": timestamp(logged.at)}
    for name in ("team", "user", "key"):
        if getattr(request, name) is not None:
            out[name] = getattr(request, name)
    out.update(endpoint=request.endpoint, stream=request.stream, tools=request.tools)
    if request.model is not None:
        out["model"] = request.model
    out["tokens_in"] = int(request.tokens)
    out["tokens_out"] = logged.tokens_out
    for name in ("max_tokens", "temperature"):
        if getattr(request, name) is not None:
            out[name] = getattr(request, name)
    if request.meta:
        out["meta"] = dict(request.meta)
    if request.headers:
        out["headers"] = dict(request.headers)
    for name in ("answered_by", "usd", "cache", "status"):
        if getattr(logged, name) is not None:
            out[name] = getattr(logged, name)
    return out


def write(logged: Iterable[Logged], out: TextIO) -> int:
    """The lines, one JSON object each; how many were written."""
    count = 0
    for entry in logged:
        out.write(json.dumps(line(entry), separators=(",", ":")) + "\n")
        count += 1
    return count


def timestamp(at: float) -> str:
    """Seconds since the epoch as RFC 3339 in UTC, to the millisecond."""
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _timestamp(value: Any, line: int) -> float:
    if not isinstance(value, str):
        raise TrafficError(line, "'ts' is required: an RFC 3339 time, like "
                                 "2026-12-01T09:30:00Z")
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TrafficError(line, f"'ts' is not an RFC 3339 time: {value!r}") from None
    if moment.tzinfo is None:
        raise TrafficError(line, f"'ts' needs its offset (Z for UTC): {value!r}")
    return moment.timestamp()


def _count(record: Mapping[str, Any], name: str, line: int) -> int:
    value = record.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TrafficError(line, f"'{name}' must be a whole number, 0 or more")
    return value
