"""Cost as providers bill it: cached input and cache writes at their own prices,
reasoning as output, and the most a request may cost before it is sent."""

from __future__ import annotations

import pytest

from compiler.compiled import Model
from runtime import pricing
from runtime.formats.messages import usage as anthropic_usage
from runtime.providers.gemini import _usage as gemini_usage

SONNET = Model("sonnet", "claude", "claude-sonnet-4-5", input_price=3e-6, output_price=15e-6,
               cached_input_price=0.3e-6, cache_write_price=3.75e-6, max_output=1000)


def test_openais_cached_tokens_are_billed_at_the_cached_price() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 200,
             "prompt_tokens_details": {"cached_tokens": 800},
             "completion_tokens_details": {"reasoning_tokens": 150}}
    assert pricing.cost(usage, SONNET) == pytest.approx(
        200 * 3e-6 + 800 * 0.3e-6 + 200 * 15e-6)


def test_anthropics_cache_reads_and_writes_are_billed_apart() -> None:
    usage = anthropic_usage({"input_tokens": 50, "cache_read_input_tokens": 2000,
                             "cache_creation_input_tokens": 1000, "output_tokens": 10})
    assert usage["prompt_tokens"] == 3050
    assert pricing.cost(usage, SONNET) == pytest.approx(
        50 * 3e-6 + 2000 * 0.3e-6 + 1000 * 3.75e-6 + 10 * 15e-6)


def test_geminis_thinking_is_output_and_its_cache_is_cached_input() -> None:
    usage = gemini_usage({"promptTokenCount": 100, "cachedContentTokenCount": 60,
                          "candidatesTokenCount": 5, "thoughtsTokenCount": 20})
    assert usage["completion_tokens"] == 25
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 20}
    assert pricing.cost(usage, SONNET) == pytest.approx(40 * 3e-6 + 60 * 0.3e-6 + 25 * 15e-6)


def test_unset_cache_prices_are_the_input_price() -> None:
    plain = Model("m", "p", "m", input_price=1e-6, output_price=2e-6)
    usage = {"prompt_tokens": 10, "completion_tokens": 1,
             "prompt_tokens_details": {"cached_tokens": 10}}
    assert pricing.cost(usage, plain) == pytest.approx(10 * 1e-6 + 2e-6)


def test_the_most_a_request_may_cost_uses_max_tokens_else_max_output() -> None:
    sonnet = [pricing.bounds(SONNET)]
    assert pricing.most(100, 50, sonnet) == pytest.approx(100 * 3e-6 + 50 * 15e-6)
    assert pricing.most(100, None, sonnet) == pytest.approx(100 * 3e-6 + 1000 * 15e-6)


def test_the_most_is_the_dearest_models() -> None:
    cheap = Model("c", "p", "c", input_price=1e-7, output_price=1e-7, max_output=10)
    assert pricing.most(100, None, [pricing.bounds(cheap), pricing.bounds(SONNET)]) == \
        pytest.approx(100 * 3e-6 + 1000 * 15e-6)
    assert pricing.most(100, None, []) == 0.0
