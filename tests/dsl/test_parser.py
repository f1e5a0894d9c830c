"""The parser: positions, plain-word errors, recovery, and no traceback on any input."""

from __future__ import annotations

import os

import pytest

from dsl import ast
from dsl.parser import parse, parse_bytes, unescape


def errors(text: str) -> list[tuple[int, int, str, str]]:
    module, diagnostics = parse(text, "t.gw")
    assert module is None or not diagnostics
    return [(d.span.line, d.span.column, d.code, d.message) for d in diagnostics]


def test_every_node_knows_where_it_came_from() -> None:
    module, _ = parse('route {\n  when team == "x" -> a, b\n}\n', "r.gw")
    assert module is not None
    route = module.decls[0]
    assert isinstance(route, ast.RouteDecl)
    rule = route.rules[0]
    assert (rule.span.file, rule.span.line, rule.span.column) == ("r.gw", 2, 3)
    assert isinstance(rule.cond, ast.Compare)
    assert (rule.cond.value.span.line, rule.cond.value.span.column) == (2, 16)
    assert [t.span.column for t in rule.targets] == [23, 26]


def test_keywords_are_names_where_a_name_is_expected() -> None:
    module, diagnostics = parse(
        'model model { provider = p }\ntest "t" { given { model = "x" } expect { deny = "d" } }',
        "k.gw")
    assert diagnostics == [] and module is not None
    assert isinstance(module.decls[0], ast.NamedDecl) and module.decls[0].name.name == "model"


def test_quantities_keep_number_and_suffix() -> None:
    module, _ = parse("retry { backoff = 200ms..5s }\nquota global { tokens = 1.5M per day }",
                      "q.gw")
    assert module is not None
    backoff = module.decls[0].body.members[0].value  # type: ignore[union-attr]
    assert isinstance(backoff, ast.Range)
    assert (backoff.low, backoff.high) == (ast.Quantity(None, "200", "ms"),  # type: ignore[arg-type]
                                           ast.Quantity(None, "5", "s"))  # type: ignore[arg-type]


def test_and_or_not_nest_by_precedence() -> None:
    module, _ = parse("route { when not stream or team == \"a\" and tools -> a }", "p.gw")
    assert module is not None
    cond = module.decls[0].rules[0].cond  # type: ignore[union-attr]
    assert isinstance(cond, ast.Or)
    assert isinstance(cond.items[0], ast.Not) and isinstance(cond.items[1], ast.And)


def test_three_mistakes_give_three_diagnostics() -> None:
    text = 'provider local {\n  type: mock\n}\nroute {\n  when team = "a" -> x\n' \
           '  if model == "b" -> x\n}\n'
    assert errors(text) == [
        (2, 7, "GW007", "attributes are set with '=', not ':'"),
        (5, 13, "GW008", "'=' sets an attribute; compare with '=='"),
        (6, 3, "GW001", "expected a rule ('when ...' or 'otherwise'), found name 'if'"),
    ]


def test_errors_name_what_was_expected_in_plain_words() -> None:
    assert errors("provider local { type mock }") == [
        (1, 23, "GW001", "expected '=' or '{', found name 'mock'")]
    assert errors("model m { input = }") == [(1, 19, "GW001", "expected a value, found '}'")]
    assert errors("providr local { type = mock }")[0][2:] == (
        "GW001", "expected a declaration, found name 'providr'")


def test_an_unclosed_block_points_at_its_brace() -> None:
    assert errors("model m {\n  provider = p\n") == [
        (1, 9, "GW006", "unclosed '{': the file ends before its '}'")]
    assert errors("model m { provider = p\nroute { otherwise -> m }") == [
        (1, 9, "GW006", "unclosed '{': 'route' starts before its '}'")]


def test_an_unterminated_string_is_one_error() -> None:
    assert errors('route {\n  when team == "x -> a\n}\n') == [
        (2, 16, "GW003", "unterminated string")]


def test_strings_unescape_three_escapes_and_keep_the_rest() -> None:
    assert unescape(r'a\"b\\c\nd\d') == 'a"b\\c\nd\\d'


@pytest.mark.parametrize("text", [
    "",
    "   \n\n# only a comment\n",
    "route { when " + "(" * 5000 + "stream" + ")" * 5000 + " -> a }",
    "route { when " + "not " * 5000 + "stream -> a }",
    "model a { x = " + "[" * 5000 + "]" * 5000 + " }",
    "\x00\x01\x02junk\x7f",
    "{" * 3000,
    "}" * 3000,
    '"' * 1001,
    "route {" + " when team == \"a\" -> a" * 2000,
])
def test_hostile_input_gives_diagnostics_not_tracebacks(text: str) -> None:
    module, diagnostics = parse(text, "h.gw")
    assert module is not None or diagnostics
    assert all(d.code.startswith("GW") for d in diagnostics)
    assert len(diagnostics) <= 51


def test_deep_nesting_is_refused_with_its_own_code() -> None:
    _, diagnostics = parse("route { when " + "not " * 500 + "stream -> a }", "d.gw")
    assert [d.code for d in diagnostics] == ["GW005"]


def test_non_utf8_is_one_diagnostic_at_the_bad_byte() -> None:
    module, diagnostics = parse_bytes(b'route {\n  otherwise -> caf\xe9\n}\n', "l.gw")
    assert module is None
    assert [(d.code, d.span.line, d.span.column) for d in diagnostics] == [("GW004", 2, 19)]


def test_random_bytes_never_raise() -> None:
    for seed in range(50):
        data = os.urandom(2000) if seed % 2 else bytes(range(256)) * seed
        parse_bytes(data, "r.gw")


def test_a_keyword_after_a_string_is_a_name_where_only_a_name_fits() -> None:
    text = ('provider p {\n  api_key = "k"\n  retry { attempts = 1 }\n}\n'
            'test "t" {\n  given {\n    team = "x"\n    model = "y"\n  }\n'
            '  expect { deny = "d" }\n}\nimport "a.gw"\nroute { otherwise -> m }\n')
    module, diagnostics = parse(text, "k.gw")
    assert diagnostics == [] and module is not None
    assert [type(d).__name__ for d in module.decls] == ["NamedDecl", "TestDecl", "Import",
                                                       "RouteDecl"]
