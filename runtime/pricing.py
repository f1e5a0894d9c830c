"""What an answer costs, and the most a request may cost before it is sent.

Usage arrives in OpenAI's terms from every adapter (runtime/providers): the
prompt's tokens include those read from the provider's prompt cache
(`prompt_tokens_details.cached_tokens`) and those written to it
(`cache_write_tokens`), each billed at the model's own price for them; the
completion's include reasoning tokens, billed as output, as providers bill
them. A price not given is the fresh input's; a model with no prices costs 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from compiler.compiled import Model


def cost(usage: dict[str, Any], model: Model) -> float:
    prompt = usage.get("prompt_tokens") or 0
    details = usage.get("prompt_tokens_details") or {}
    read = details.get("cached_tokens") or 0
    written = details.get("cache_write_tokens") or 0
    fresh_price = model.input_price or 0.0
    read_price = fresh_price if model.cached_input_price is None else model.cached_input_price
    write_price = fresh_price if model.cache_write_price is None else model.cache_write_price
    return max(0, prompt - read - written) * fresh_price + read * read_price + \
        written * write_price + (usage.get("completion_tokens") or 0) * (model.output_price or 0.0)


def bounds(model: Model) -> tuple[float, float, float]:
    """A model's figures for `most`, read once per decision: its input and output
    prices, and its `max_output` (0 when not given)."""
    return model.input_price or 0.0, model.output_price or 0.0, float(model.max_output or 0)


def most(tokens: float, max_tokens: float | None,
         models: Sequence[tuple[float, float, float]]) -> float:
    """The most a request may cost, at the dearest of the models (their `bounds`): every
    input token fresh, and as much output as it may get (its `max_tokens`, else the
    model's `max_output`). With neither known the output cannot be bounded, and only
    the input is reserved. On every request that meets a budget: a loop, no generator."""
    dearest = 0.0
    for input_price, output_price, max_output in models:
        cost = tokens * input_price + \
            (max_output if max_tokens is None else max_tokens) * output_price
        if cost > dearest:
            dearest = cost
    return dearest
