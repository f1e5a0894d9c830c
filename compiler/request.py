"""What a policy can ask about a request, and the request as routing sees it.

The same attribute names serve conditions, `given { }` blocks in tests and
`gwc explain --request` JSON, so they are defined once, here.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Scalar = str | float | bool

# attribute -> its type: "str", "num" or "bool"
ATTRIBUTES: dict[str, str] = {
    "model": "str", "user": "str", "team": "str", "key": "str", "endpoint": "str",
    "stream": "bool", "tools": "bool",
    "tokens": "num", "max_tokens": "num", "temperature": "num",
    "budget.team": "num", "budget.user": "num", "budget.key": "num",
}
KEYED = {"header": "headers", "meta": "meta"}  # header["x"], meta["x"]: strings
ENDPOINTS = ("chat", "embeddings", "messages", "responses")
PERCENT_ATTRIBUTES = ("budget.team", "budget.user", "budget.key")


class RequestError(ValueError):
    """A request description that does not fit the attributes above."""


def attr_kind(attr: str) -> str | None:
    """The type of an attribute key (`team`, `header:x-feature`), or None if unknown."""
    prefix, sep, _ = attr.partition(":")
    if sep:
        return "str" if prefix in KEYED else None
    return ATTRIBUTES.get(attr)


@dataclass(slots=True)
class Request:
    model: str | None = None
    user: str | None = None
    team: str | None = None
    key: str | None = None
    endpoint: str = "chat"
    stream: bool = False
    tools: bool = False
    tokens: float = 0
    max_tokens: float | None = None
    temperature: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)
    budget: Mapping[str, float] = field(default_factory=dict)

    def get(self, attr: str) -> Scalar | None:
        return getter(attr)(self)

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> Request:
        """Build from `--request` JSON or a test's `given`, checking every field."""
        if not isinstance(data, Mapping):
            raise RequestError("a request is an object of attributes")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name in ("headers", "meta", "budget"):
                values[name] = _mapping(name, value)
            elif name in ATTRIBUTES and "." not in name:
                values[name] = _scalar(name, ATTRIBUTES[name], value)
            else:
                known = sorted([*(a for a in ATTRIBUTES if "." not in a), "headers", "meta",
                                "budget"])
                raise RequestError(f"unknown request field '{name}' (known: {', '.join(known)})")
        if "endpoint" in values and values["endpoint"] not in ENDPOINTS:
            raise RequestError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
        return cls(**values)


def _scalar(name: str, kind: str, value: Any) -> Scalar | None:
    if value is None and name in ("model", "user", "team", "key", "max_tokens", "temperature"):
        return None
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "num" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    wanted = {"str": "a string", "bool": "true or false", "num": "a number"}[kind]
    raise RequestError(f"request field '{name}' must be {wanted}")


def _mapping(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise RequestError(f"request field '{name}' must be an object")
    if name == "budget":
        out: dict[str, Any] = {}
        for dim, share in value.items():
            if dim not in ("team", "user", "key"):
                raise RequestError(f"budget share '{dim}' must be one of team, user, key")
            if isinstance(share, bool) or not isinstance(share, (int, float)):
                raise RequestError(f"budget share '{dim}' must be a number (0.93 for 93%)")
            out[dim] = float(share)
        return out
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise RequestError(f"request field '{name}' must map strings to strings")
    return {k.lower(): v for k, v in value.items()} if name == "headers" else dict(value)


@functools.lru_cache(maxsize=1024)
def getter(attr: str) -> Callable[[Request], Scalar | None]:
    """The accessor for one attribute, made once: graph nodes hold it, and the
    slow paths (`Request.get`) look it up here."""
    prefix, sep, key = attr.partition(":")
    if sep:
        mapping = KEYED[prefix]
        if mapping == "headers":
            key = key.lower()
        return lambda r: getattr(r, mapping).get(key)
    if attr.startswith("budget."):
        dim = attr.removeprefix("budget.")
        return lambda r: r.budget.get(dim)
    return _plain_getters[attr]


_plain_getters: dict[str, Callable[[Request], Scalar | None]] = {
    name: operator.attrgetter(name) for name in ATTRIBUTES if "." not in name
}
