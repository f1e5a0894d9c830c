"""Reading what crosses the wire, in both directions, without trusting it.

Upstream answers are read with the getters here, which raise `Malformed`
naming the field that is missing or of the wrong type; the adapter turns that
into `UpstreamError("malformed")`, which the chain falls back from. Client
fields that a provider's translation cannot express raise `invalid(param,
...)`, a 400 naming the field as OpenAI does (`messages[1].tool_calls[0]`).
"""

from __future__ import annotations

from typing import Any

from runtime.errors import GatewayError

Body = dict[str, Any]


# Parsed JSON holds exactly these number types; unlike isinstance, the test leaves out
# bool, and a tuple is not rebuilt at each call as `int | float` is.
NUMBERS = (int, float)


class Malformed(Exception):
    """An upstream answer that is not in its wire format: the message names the field."""


def obj(value: Any, where: str) -> Body:
    if not isinstance(value, dict):
        raise Malformed(f"{where} is not an object")
    return value


def opt_obj(value: Any, where: str) -> Body:
    """An object that may be absent or null (then empty)."""
    return {} if value is None else obj(value, where)


def lst(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise Malformed(f"{where} is not a list")
    return value


def opt_lst(value: Any, where: str) -> list[Any]:
    return [] if value is None else lst(value, where)


def text(value: Any, where: str, default: str = "") -> str:
    """A string that may be absent or null (then `default`)."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise Malformed(f"{where} is not a string")
    return value


def count(value: Any, where: str) -> int:
    """A token count: a non-negative number, absent or null meaning 0."""
    if value is None:
        return 0
    if type(value) not in NUMBERS or not value >= 0:
        raise Malformed(f"{where} is not a count")
    return int(value) if value < 2 ** 63 else 2 ** 63 - 1


USAGE_COUNTS = {
    "": ("prompt_tokens", "completion_tokens", "total_tokens"),
    "prompt_tokens_details": ("cached_tokens", "cache_write_tokens"),
    "completion_tokens_details": ("reasoning_tokens",),
}


def openai_usage(value: Any, where: str = "usage") -> None:
    """OpenAI's `usage`, which the gateway reads for cost: null, or an object of counts,
    with the cached and reasoning parts in its `*_details` objects."""
    if value is None:
        return
    usage = obj(value, where)
    for part, keys in USAGE_COUNTS.items():  # on every answer: names written only on error
        counts = usage if not part else usage.get(part)
        if counts is None:
            continue
        if not isinstance(counts, dict):
            raise Malformed(f"{where}.{part} is not an object")
        for key in keys:
            found = counts.get(key)
            if found is not None and type(found) not in NUMBERS:
                raise Malformed(f"{where}.{part}.{key} is not a count" if part
                                else f"{where}.{key} is not a count")


def invalid(param: str, message: str) -> GatewayError:
    """A client field this provider cannot take, as the 400 that names it."""
    return GatewayError(400, f"invalid '{param}': {message}", "invalid_value", param=param)
