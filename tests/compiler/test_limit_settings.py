"""What the language says about limits: keyed subjects, their cap, the store's
failure setting, and the prices of cached input."""

from __future__ import annotations

from dsl.format import format_module
from dsl.parser import parse
from tests.conftest import assert_diagnostic, codes

PRICED = """
provider local { type = mock }
model a {
  provider     = local
  input        = $3/1M
  output       = $15/1M
  cached_input = $0.30/1M
  cache_write  = $3.75/1M
}
route { otherwise -> a }
auth { mode = headers }
"""


def test_keyed_subjects_lower_to_one_counter_per_value(compile_text) -> None:
    ctx = compile_text(PRICED + """
budget per meta["feature"] { limit = $200 per month }
quota per header["X-App"] { requests = 10 per minute; max_values = 5; on_store_error = local }
""")
    assert codes(ctx) == []
    budget, quota = ctx.policy.budgets[0], ctx.policy.quotas[0]
    assert (budget.subject.dimension, str(budget.subject)) == ("meta:feature",
                                                               'per meta["feature"]')
    assert budget.max_values == 1000 and budget.on_store_error == "refuse"  # the defaults
    assert quota.subject.dimension == "header:x-app"  # headers arrive lowercased
    assert (quota.max_values, quota.on_store_error) == (5, "local")


def test_a_keyed_subject_counts_only_requests_that_carry_the_key(compile_text) -> None:
    from compiler.explain import explain
    from compiler.request import Request

    ctx = compile_text(PRICED + 'budget per meta["feature"] { limit = $200 per month }\n')
    assert ctx.graph is not None
    with_key = explain(ctx.graph, Request(model="a", meta={"feature": "search"}))
    assert [b["counter"] for b in with_key["budgets"]] == ["search"]
    assert explain(ctx.graph, Request(model="a"))["budgets"] == []


def test_cached_input_prices_are_kept_beside_the_fresh_ones(compile_text) -> None:
    model = compile_text(PRICED).policy.models["a"]
    assert (model.input_price, model.cached_input_price, model.cache_write_price) == \
        (3e-6, 3e-7, 3.75e-6)


def test_keys_only_where_a_subject_has_values(compile_text) -> None:
    ctx = compile_text(PRICED + """
quota per meta { requests = 1 per second }
quota per team["x"] { requests = 1 per second }
budget meta "x" { limit = $1 per day }
""")
    assert codes(ctx) == ["GW206", "GW206", "GW206"]
    messages = [d.message for d in ctx.diagnostics]
    assert messages == ["'per meta' needs a key: which meta value to count by",
                        "'team' takes no key: only meta[...] and header[...] count one value "
                        "per key",
                        "a meta value is not an identity"]


def test_max_values_on_a_subject_without_values_is_a_warning(compile_text) -> None:
    ctx = compile_text(PRICED + "budget per team { limit = $1 per day; max_values = 3 }\n")
    assert_diagnostic(ctx, "GW311", 12, 39, "'max_values' does nothing on a budget per team",
                      underlined="max_values = 3")
    assert ctx.policy.budgets[0].max_values is None


def test_an_unknown_store_setting_is_named(compile_text) -> None:
    ctx = compile_text(PRICED + "quota global { requests = 5 per second; "
                                "on_store_error = ignore }\n")
    assert codes(ctx) == ["GW206"]


def test_keyed_subjects_format_as_written() -> None:
    text = 'budget per meta["feature"] { limit = $200 per month }\n'
    module, diagnostics = parse(text, "p.gw")
    assert diagnostics == [] and format_module(module, text) == text


def test_limits_that_could_never_admit_are_refused(compile_text) -> None:
    ctx = compile_text(PRICED + """
quota per team { requests = 0 per minute }
budget per team { limit = $5 per hour }
budget per user { limit = $0 per day }
""")
    assert codes(ctx) == ["GW203", "GW203", "GW203"]
    assert [d.message for d in ctx.diagnostics][1:] == [
        "a budget is spent per calendar day, week or month, not per hour",
        "a budget above $0 is needed: $0 admits nothing (route to `deny` to refuse)"]


def test_the_compiler_knows_the_embedders_the_gateway_runs() -> None:
    from compiler.values import EMBEDDERS
    from policies.embedders import NAMES

    assert EMBEDDERS == NAMES


CACHED = """
provider local { type = mock }
model a { provider = local; input = $1/1M; output = $1/1M }
model vectors { provider = local }
route { otherwise -> a }
"""


def test_an_embedder_is_hash_minilm_or_a_declared_model(compile_text) -> None:
    ctx = compile_text(CACHED + "cache { mode = semantic; embedder = model(vectors) }\n")
    assert not [d for d in ctx.diagnostics if d.severity == "error"]
    cache = ctx.policy.caches[0]
    assert (cache.embedder, cache.embedder_model, cache.scope) == ("model", "vectors", None)
    assert_diagnostic(compile_text(CACHED + "cache { mode = semantic; embedder = minlm }\n"),
                      "GW206", 6, 37, "unknown embedder 'minlm' (did you mean 'minilm'?)")
    assert_diagnostic(compile_text(CACHED + "cache { embedder = model(nope) }\n"),
                      "GW101", 6, 26, underlined="nope")
