"""Each named pass, through the diagnostics a user sees: code, position, message, span."""

from __future__ import annotations

import os

import pytest

from compiler.passes import PASSES
from dsl.source import MAX_BYTES
from tests.conftest import MOCK, assert_diagnostic, codes

ROUTE = "route { otherwise -> a }\n"


def test_passes_run_in_their_documented_order() -> None:
    assert [name for name, _ in PASSES] == [
        "LoadImports", "CollectDeclarations", "CheckAttributes", "ResolveNames",
        "CheckConditions", "LowerPolicy", "BuildGraph", "Lint", "FindShadowedRules",
        "FindShadowedGuards"]


# ------------------------------------------------------------ LoadImports

def test_imports_are_relative_to_the_importing_file(compile_text) -> None:
    ctx = compile_text('import "lib/models.gw"\n' + ROUTE, files={
        "lib/models.gw": 'import "providers.gw"\nmodel a { provider = local; input = $1/1M }\n',
        "lib/providers.gw": "provider local { type = mock }\n"})
    assert ctx.diagnostics == []
    assert set(ctx.policy.models) == {"a"}


def test_an_import_cycle_is_an_error_at_the_import_that_closes_it(compile_text) -> None:
    ctx = compile_text('import "a.gw"\n' + MOCK + ROUTE, files={
        "a.gw": 'import "b.gw"\n', "b.gw": '\nimport "a.gw"\n'})
    d = assert_diagnostic(ctx, "GW111", 2, 8, underlined='"a.gw"')
    assert d.message.startswith("import cycle: ") and d.message.endswith("a.gw")


def test_a_missing_import_names_the_file(compile_text) -> None:
    ctx = compile_text('import "nope.gw"\n' + MOCK + ROUTE)
    d = assert_diagnostic(ctx, "GW110", 1, 8, underlined='"nope.gw"')
    assert "nope.gw" in d.message


def test_a_diamond_import_is_read_once(compile_text) -> None:
    ctx = compile_text('import "x.gw"\nimport "y.gw"\nmodel a { provider = p; input = $1/1M }\n'
                       + ROUTE, files={"x.gw": 'import "p.gw"\n', "y.gw": 'import "p.gw"\n',
                                       "p.gw": "provider p { type = mock }\n"})
    assert ctx.diagnostics == []


# ---------------------------------------------------- CollectDeclarations

def test_a_name_declared_twice_points_at_both(compile_text) -> None:
    ctx = compile_text(MOCK + "pool a { members = [b] }\n" + ROUTE)
    d = assert_diagnostic(ctx, "GW103", 5, 6, "'a' is declared as both a model and a pool")
    assert d.related[0].span.line == 3


def test_a_policy_needs_exactly_one_route(compile_text) -> None:
    assert "GW109" in codes(compile_text(MOCK))
    ctx = compile_text(MOCK + ROUTE + ROUTE)
    assert_diagnostic(ctx, "GW109", 6, 1, "a policy has one 'route' block; this is a second")


def test_an_import_that_is_not_a_regular_file_is_an_error_not_a_hang(compile_text,
                                                                    tmp_path) -> None:
    os.mkfifo(tmp_path / "fifo.gw")
    (tmp_path / "dir.gw").mkdir()
    big = tmp_path / "big.gw"
    with open(big, "wb") as handle:
        handle.truncate(MAX_BYTES + 1)
    ctx = compile_text('import "fifo.gw"\nimport "/dev/zero"\nimport "dir.gw"\n'
                       'import "big.gw"\n' + MOCK + ROUTE)
    found = sorted((d.span.line, d.code, d.message.split(": ", 1)[1]) for d in ctx.diagnostics)
    assert found == [(1, "GW110", "not a regular file"), (2, "GW110", "not a regular file"),
                     (3, "GW110", "it is a directory"),
                     (4, "GW110", "larger than 4 MiB, too large for a policy")]
    assert ctx.graph is None


# ---------------------------------------------- syntax errors and the rest

def test_syntax_errors_leave_the_rest_of_the_file_checked(compile_text) -> None:
    ctx = compile_text("""\
        provider local {
          type    = mock
          timeout = 5M
        }
        model fast { provider = local; input = $1/1M; output = $2/1M }
        model smart {
          provider = local
          input    = $3/1M
        route {
          when model == "smart" -> smart, fast
          when team == "a"      -> fats
          otherwise             -> fast
        }
        """)
    assert [(d.code, d.span.line) for d in ctx.diagnostics] == [
        ("GW201", 3), ("GW006", 6), ("GW101", 11)]
    assert_diagnostic(ctx, "GW101", 11, 28, "unknown model or pool 'fats' (did you mean 'fast'?)",
                      underlined="fats")
    assert not ctx.syntax_ok and ctx.graph is None  # `smart` is not blamed, nor the graph built


@pytest.mark.parametrize(("broken", "rest"), [
    ("model b {\n  provider = local\n", ROUTE.replace("a", "b")),  # unclosed, used by the route
    ("modle b { provider = local }\n", ROUTE.replace("a", "b")),   # a misspelt keyword
    ("pool b\n  members = [a]\n}\n", ROUTE.replace("a", "b")),    # a header that cannot be read
    ("provider local { type: mock }\nmodel b { provider = local }\n", ROUTE.replace("a", "b")),
    ("model a { provider = local }\nroute {\n  otherwise -> a\n", ""),  # the route, unclosed
    ("model b { provider = local; route { otherwise -> b } }\n", ""),  # swallowed by a model
    ("route {\n  when team ==\n", ""),                               # given up on
    ('import common.gw\n', ROUTE.replace("a", "x")),                 # anything, from an import
])
def test_nothing_is_blamed_on_what_a_syntax_error_dropped(compile_text, broken: str,
                                                          rest: str) -> None:
    ctx = compile_text("provider local { type = mock }\n" + broken + "\n" + rest)
    assert ctx.diagnostics and all(d.code < "GW100" for d in ctx.diagnostics), \
        [(d.code, d.message) for d in ctx.diagnostics]


def test_a_syntax_error_in_an_import_leaves_both_files_checked(compile_text) -> None:
    ctx = compile_text('import "lib.gw"\nmodel a { provider = local; timeout = 5M }\n' + ROUTE,
                       files={"lib.gw": "provider local { type = mock }\nmodel b {\n"})
    assert [(d.span.file.rsplit("/", 1)[-1], d.code) for d in ctx.diagnostics] == [
        ("lib.gw", "GW006"), ("policy.gw", "GW201")]


def test_an_unreadable_import_blames_nothing_on_what_it_lacks(compile_text) -> None:
    ctx = compile_text('import "missing.gw"\nmodel a { provider = p }\n')
    assert [d.code for d in ctx.diagnostics] == ["GW110"]


# -------------------------------------------------------- CheckAttributes

@pytest.mark.parametrize(("attribute", "message"), [
    ("timeout = 5M", "expected a duration, found a count (did you mean '5m'?)"),
    ("timeout = 30", "expected a duration, found a plain number (did you mean '30s'?)"),
    ("max_concurrency = 10m", "expected a count, found a duration (did you mean '10M'?)"),
    ("api_key = OPENAI", "expected a string or env(...), found name 'OPENAI' "
                         "(did you mean '\"OPENAI\"'?)"),
    ("fail_rate = 150%", "'150%' is outside 0 to 1"),
    ("fail_status = 700", "'700' is above the most allowed, 599"),
    ("max_concurrency = 0", "'0' is below the least allowed, 1"),
    ("timeout = 30sec", "unknown unit 'sec' in '30sec' (did you mean 's'?)"),
    ("timout = 30s", "unknown attribute 'timout' in provider (did you mean 'timeout'?)"),
    ("type = openia", "unknown value 'openia' (did you mean 'openai'?)"),
])
def test_attribute_types_and_units(compile_text, attribute: str, message: str) -> None:
    text = "provider local {\n  type = mock\n  " + attribute + "\n}\n" + \
        "model a { provider = local }\n" + ROUTE
    if attribute.startswith("type"):
        text = text.replace("  type = mock\n", "")
    ctx = compile_text(text)
    errors = [d for d in ctx.diagnostics if d.is_error]
    assert [d.message for d in errors] == [message]
    assert errors[0].span.line in (2, 3)


def test_money_rates_prices_and_percents(compile_text) -> None:
    ctx = compile_text(MOCK + ROUTE + "budget per team {\n  limit = $500\n  alert = [0.8]\n}\n"
                       "model c { provider = local; input = $2.50 }\n")
    assert sorted(d.message for d in ctx.diagnostics) == [
        "expected a percent, found a plain number (did you mean '80%'?)",
        "expected a price per token count, found money (did you mean '$2.50/1M'?)",
        "expected money per period, found money (did you mean '$500 per month'?)",
    ]


def test_a_missing_required_attribute_and_a_repeated_one(compile_text) -> None:
    ctx = compile_text("provider local { type = mock; type = mock }\nmodel a { name = \"x\" }\n"
                       + ROUTE)
    assert_diagnostic(ctx, "GW103", 1, 31, "'type' is set twice in this block")
    assert_diagnostic(ctx, "GW108", 2, 9, "model is missing 'provider'")


def test_a_threshold_outside_zero_to_one(compile_text) -> None:
    ctx = compile_text(MOCK + ROUTE + "cache {\n  mode = semantic\n  threshold = 93\n}\n")
    assert_diagnostic(ctx, "GW203", 8, 15, "'93' is outside 0 to 1", underlined="93")


def test_a_backoff_range_must_rise(compile_text) -> None:
    ctx = compile_text(MOCK + ROUTE + "retry { backoff = 5s..200ms }\n")
    assert_diagnostic(ctx, "GW203", 6, 19, "the range's low end is above its high end")


# ----------------------------------------------------------- ResolveNames

def test_unknown_names_suggest_the_closest(compile_text) -> None:
    ctx = compile_text("provider local { type = mock }\nmodel gpt-4o { provider = locl }\n"
                       "pool p { members = [gpt-40] }\nroute { otherwise -> gpt-4 }\n")
    assert_diagnostic(ctx, "GW102", 2, 27, "unknown provider 'locl' (did you mean 'local'?)")
    found = {(d.span.line, d.span.column, d.message) for d in ctx.diagnostics if d.code == "GW101"}
    assert found == {(3, 21, "unknown model 'gpt-40' (did you mean 'gpt-4o'?)"),
                     (4, 22, "unknown model or pool 'gpt-4' (did you mean 'gpt-4o'?)")}


def test_unknown_notify_and_downgrade_targets(compile_text) -> None:
    ctx = compile_text(MOCK + ROUTE + "notify ops { webhook = \"https://hooks.example/x\" }\n"
                       "budget per team { limit = $5 per day; notify = opps; "
                       "over = downgrade(c) }\n")
    assert_diagnostic(ctx, "GW106", 7, 48, "unknown notify 'opps' (did you mean 'ops'?)")
    assert_diagnostic(ctx, "GW107", 7, 71, "unknown model or pool 'c'")


# -------------------------------------------------------- CheckConditions

@pytest.mark.parametrize(("cond", "code", "message"), [
    ('teem == "a"', "GW105", "unknown attribute 'teem' (did you mean 'team'?)"),
    ('team > "a"', "GW205", "'>' does not apply to a string ('team')"),
    ("team", "GW205", "'team' is a string, not a condition on its own"),
    ("team == a", "GW201", "expected a string, found name 'a' (did you mean '\"a\"'?)"),
    ('tokens > "100k"', "GW205", "'tokens' is a number; found a string"),
    ('endpoint == "chats"', "GW206", "unknown endpoint 'chats' (did you mean 'chat'?)"),
    ('model matches "gpt-(4"', "GW204",
     "invalid regular expression: missing ): gpt-(4"),
    ('header == "x"', "GW205", "'header' needs a name in brackets"),
    ("stream matches \"x\"", "GW205", "'matches' needs a string attribute; 'stream' is "
                                      "true or false"),
])
def test_conditions_fit_their_attributes(compile_text, cond: str, code: str, message: str) -> None:
    ctx = compile_text(MOCK + "route {\n  when " + cond + " -> a\n  otherwise -> b\n}\n")
    d = assert_diagnostic(ctx, code, 6, ctx.diagnostics[0].span.column, message)
    assert d.span.column >= 8


def test_counts_and_percents_compare_in_their_units(compile_text) -> None:
    ctx = compile_text(MOCK + "route {\n  when tokens > 100k and budget.team >= 90% -> a\n"
                       "  otherwise -> b\n}\n")
    assert ctx.diagnostics == []
    assert str(ctx.policy.rules[0].cond) == (
        "All(items=(Cmp(attr='tokens', op='>', value=100000.0, kind='cmp'), "
        "Cmp(attr='budget.team', op='>=', value=0.9, kind='cmp')), kind='all')")


# ------------------------------------------------------------------- Lint

def test_a_repeated_target_and_a_deny_with_company(compile_text) -> None:
    ctx = compile_text(MOCK + "route {\n  when team == \"x\" -> a, deny \"no\"\n"
                       "  otherwise -> a, b, a\n}\n")
    assert_diagnostic(ctx, "GW304", 6, 26, "'deny' must be the only target of its rule",
                      underlined='deny "no"')
    assert_diagnostic(ctx, "GW303", 7, 22, "'a' is already in this chain")


def test_an_empty_pool(compile_text) -> None:
    ctx = compile_text(MOCK + "pool p { members = [] }\nroute { otherwise -> p }\n")
    assert_diagnostic(ctx, "GW306", 5, 10, "pool 'p' has no members",
                      underlined="members = []")


def test_a_budget_over_a_model_without_price(compile_text) -> None:
    ctx = compile_text("provider local { type = mock }\nmodel a { provider = local }\n"
                       "model b { provider = local; input = $1/1M }\n"
                       "route {\n  when team == \"x\" -> a\n  otherwise -> b\n}\n"
                       "budget per team when model == \"y\" { limit = $5 per day }\n")
    d = assert_diagnostic(ctx, "GW305", 2, 1, "model 'a' has no price, so the budget at 8:1 "
                                              "cannot be enforced")
    assert d.related[0].span.line == 8


def test_a_budget_that_never_covers_the_unpriced_model_is_fine(compile_text) -> None:
    ctx = compile_text("provider local { type = mock }\nmodel a { provider = local }\n"
                       "model b { provider = local; input = $1/1M }\n"
                       "route {\n  when team == \"x\" -> a\n  otherwise -> b\n}\n"
                       "budget per team when team == \"y\" { limit = $5 per day }\n")
    assert "GW305" not in codes(ctx)


def test_requests_no_rule_matches(compile_text) -> None:
    ctx = compile_text(MOCK + 'route {\n  when team == "x" -> a\n}\n')
    assert_diagnostic(ctx, "GW302", 5, 1, "some requests match no rule and will be answered 404")
    covered = compile_text(MOCK + "route {\n  when stream -> a\n  when not stream -> b\n}\n")
    assert "GW302" not in codes(covered)


def test_unset_environment_variables_warn_unless_defaulted(compile_text) -> None:
    text = ('provider o {\n  type = openai\n  api_key = env("KEY_A")\n'
            '  headers = { "x": env("KEY_B", "d") }\n}\nmodel a { provider = o }\n' + ROUTE)
    assert_diagnostic(compile_text(text), "GW307", 3, 13,
                      "environment variable 'KEY_A' is not set")
    assert "GW307" not in codes(compile_text(text, env={"KEY_A": "x"}))


@pytest.mark.parametrize(("url", "warns"), [
    ("http://10.0.0.5:8000/v1", True), ("https://api.example/v1", False),
    ("http://127.0.0.1:8000/v1", False), ("http://localhost/v1", False),
])
def test_plain_http_to_another_host(compile_text, url: str, warns: bool) -> None:
    ctx = compile_text(f'provider v {{ type = openai_compatible; base_url = "{url}" }}\n'
                       "model a { provider = v }\n" + ROUTE)
    assert ("GW308" in codes(ctx)) is warns


# ------------------------------------------------------ FindShadowedRules

def test_a_rule_covered_by_several_earlier_rules_names_them_all(compile_text) -> None:
    ctx = compile_text(MOCK + "route {\n  when stream -> a\n  when not stream -> b\n"
                       "  when team == \"x\" -> a\n  otherwise -> b\n}\n")
    messages = {(d.span.line, d.message) for d in ctx.diagnostics}
    assert messages == {
        (8, "rule can never match: every request it matches is taken by the rules at 6:3 and "
            "7:3"),
        (9, "rule can never match: every request it matches is taken by the rules at 6:3 and "
            "7:3"),
    }


def test_a_self_contradicting_rule(compile_text) -> None:
    ctx = compile_text(MOCK + "route {\n  when tokens > 10 and tokens < 5 -> a\n"
                       "  otherwise -> b\n}\n")
    assert_diagnostic(ctx, "GW301", 6, 3, "rule can never match: no request satisfies its "
                                          "condition")


def test_numbers_split_exactly_at_their_bounds(compile_text) -> None:
    ctx = compile_text(MOCK + "route {\n  when tokens >= 10 -> a\n  when tokens > 10 -> b\n"
                       "  when tokens == 10 -> b\n  otherwise -> b\n}\n")
    assert [d.span.line for d in ctx.diagnostics if d.code == "GW301"] == [7, 8]


def test_matches_never_invents_a_shadow(compile_text) -> None:
    ctx = compile_text(MOCK + "route {\n  when model matches \"^gpt\" -> a\n"
                       "  when model == \"claude\" -> b\n  otherwise -> b\n}\n")
    assert "GW301" not in codes(ctx)
