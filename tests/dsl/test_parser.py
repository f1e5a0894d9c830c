"""The parser: positions, plain-word errors, recovery, and no traceback on any input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsl import ast, lark_loader
from dsl.parser import parse, parse_bytes, parse_partial, unescape
from tests.conftest import ROOT


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


# ------------------------------------------------- what recovery leaves whole

BROKEN = '''provider local {
  type    = mock
  timeout = 5M
}

model fast { provider = local }

model smart {
  provider = local

route {
  when model == "smart" -> smart, fast
  when team = "a"       -> fast
  otherwise             -> fats
}
'''


def test_a_partial_parse_keeps_every_declaration_no_error_fell_inside() -> None:
    parsed = parse_partial(BROKEN, "b.gw")
    assert [(d.code, d.span.line, d.span.column) for d in parsed.diagnostics] == [
        ("GW006", 8, 13), ("GW008", 13, 13)]
    kept = parsed.module.decls
    assert [getattr(d, "name", None) for d in kept[:2]] == [ast.Ident(None, "local"),  # type: ignore[arg-type]
                                                           ast.Ident(None, "fast")]  # type: ignore[arg-type]
    route = kept[2]
    assert isinstance(route, ast.RouteDecl) and len(kept) == 3
    assert [r.span.line for r in route.rules] == [12, 14]  # the rule with `=` for `==` is dropped
    assert [(d.span.line, d.names) for d in parsed.dropped] == [
        (8, frozenset({"smart"})), (13, frozenset())]


def test_a_declaration_keyword_starting_a_line_ends_an_unclosed_block() -> None:
    parsed = parse_partial('model m {\n  provider = p\n  retry { attempts = 2\n\n'
                           'route { otherwise -> m }\n', "u.gw")
    assert [(d.code, d.message) for d in parsed.diagnostics] == [
        ("GW006", "unclosed '{': 'route' starts before its '}'")]
    assert parsed.diagnostics[0].span.line == 3  # the innermost block left open
    (route,) = parsed.module.decls
    assert isinstance(route, ast.RouteDecl) and len(route.rules) == 1
    # the same words inside a block are names, in every other shape
    module, diagnostics = parse('test "t" {\n  given { model = "m" }\n  expect {\n'
                                '    route = [a]\n  }\n}\n', "n.gw")
    assert diagnostics == [] and module is not None


def test_a_guard_is_a_named_declaration_with_an_optional_when() -> None:
    module, diagnostics = parse('guard pii when team == "x" {\n  detect = [email]\n}\n'
                                'guard words { deny = ["x"] }\n', "g.gw")
    assert diagnostics == [] and module is not None
    pii, words = module.decls
    assert isinstance(pii, ast.GuardDecl) and isinstance(words, ast.GuardDecl)
    assert (pii.name.name, words.name.name, words.cond) == ("pii", "words", None)
    assert isinstance(pii.cond, ast.Compare) and pii.cond.attr.name == "team"
    assert (pii.span.line, pii.span.column, pii.span.end_line, pii.span.end_column) == (1, 1, 3, 2)
    header = pii.header
    assert (header.line, header.column, header.end_line, header.end_column) == (1, 1, 1, 10)


def test_guard_is_a_keyword_only_where_a_declaration_starts() -> None:
    module, diagnostics = parse('model guard { provider = p }\n'
                                'test "t" { given { meta = { "guard": "x" } } '
                                'expect { guards = [guard] } }\n'
                                'route { when meta["guard"] == "x" -> guard }\n', "k.gw")
    assert diagnostics == [] and module is not None
    assert [type(d).__name__ for d in module.decls] == ["NamedDecl", "TestDecl", "RouteDecl"]
    parsed = parse_partial('model m {\n  provider = p\nguard pii when stream {\n'
                           '  detect = [email]\n}\n', "u.gw")
    assert [(d.code, d.message) for d in parsed.diagnostics] == [
        ("GW006", "unclosed '{': 'guard' starts before its '}'")]
    assert [type(d).__name__ for d in parsed.module.decls] == ["GuardDecl"]


def test_an_unfinished_declaration_is_given_up_on_at_the_next_one() -> None:
    parsed = parse_partial('budget per team\nroute { otherwise -> m }\nquota per', "f.gw")
    assert [(d.code, d.span.line) for d in parsed.diagnostics] == [("GW001", 2), ("GW001", 3)]
    assert [type(d).__name__ for d in parsed.module.decls] == ["RouteDecl"]


@pytest.mark.parametrize(("text", "names", "kinds"), [
    ("model smart {\n  provider = p\n", {"smart"}, set()),
    ("modle smart { provider = p }\n", {"smart"}, set()),
    ("model {\n  provider = p\n", set(), {"model"}),
    ("pool p\n  members = [a]\n}\n", set(), {"pool"}),
    ('import common.gw\n', set(), {"*"}),
    ("m%ute { otherwise -> a }\n", set(), {"*"}),
    ("model m { provider = p; route { otherwise -> m } }\n", {"m"}, {"route"}),
    ('guard pii when team == {\n  detect = [email]\n}\n', {"pii"}, set()),
    ("guard pii {\n  detect = [email\n}\n", {"pii"}, set()),
    ("guard {\n  detect = [email]\n}\n", set(), {"guard"}),
])
def test_a_dropped_part_says_what_it_may_have_declared(text: str, names: set[str],
                                                        kinds: set[str]) -> None:
    parsed = parse_partial("provider p { type = mock }\n" + text, "d.gw")
    assert parsed.diagnostics
    assert [type(d).__name__ for d in parsed.module.decls] == ["NamedDecl"]
    assert set().union(*(d.names for d in parsed.dropped)) == names
    assert set().union(*(d.kinds for d in parsed.dropped)) == kinds


def test_a_file_given_up_on_keeps_the_declarations_before() -> None:
    text = "provider p { type = mock }\n" + "model { = }\n" * 200
    parsed = parse_partial(text, "g.gw")
    assert parsed.diagnostics[-1].code == "GW009"
    assert [type(d).__name__ for d in parsed.module.decls] == ["NamedDecl"]
    assert any("*" in d.kinds or "model" in d.kinds for d in parsed.dropped)


def test_a_long_chain_of_and_is_one_level_deep() -> None:
    for op in ("and", "or"):
        module, diagnostics = parse(
            "route { when " + f" {op} ".join(['team == "a"'] * 300) + " -> a }", "c.gw")
        assert diagnostics == [] and module is not None
    parsed = parse_partial('route {\n  when ' + "not " * 150 + 'stream -> a\n'
                           '  otherwise -> a\n}\n', "n.gw")
    assert [d.code for d in parsed.diagnostics] == ["GW005"]
    (route,) = parsed.module.decls
    assert isinstance(route, ast.RouteDecl) and len(route.rules) == 1  # the deep rule dropped


def test_unprintable_characters_are_named_escaped() -> None:
    assert errors("route \x1b{ otherwise -> a }") == [
        (1, 7, "GW002", "unexpected character '\\x1b'")]


# ------------------------------------------------------ how the parser loads

def test_the_grammar_passes_lark_strict_mode() -> None:
    """The parser is built without strict mode's checks (they need interegular
    loaded, see dsl/lark_loader.py), so they are made here: no shift/reduce
    conflict, no terminals that collide."""
    code = ("import lark, interegular\n"
            "grammar = open('dsl/grammar.lark', encoding='utf-8').read()\n"
            "lark.Lark(grammar, start='module', parser='lalr', strict=True,"
            " maybe_placeholders=True)\n"
            "lark.Lark(grammar, start='module', parser='lalr', strict=True)\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.stdout == "ok\n", result.stderr


def test_the_parse_table_is_cached_where_the_package_or_the_user_may_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = os.path.join(os.path.dirname(lark_loader.__file__), "__pycache__")
    assert lark_loader.cache_file("parser") == os.path.join(package, "parser.lark-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(lark_loader, "_writable", lambda folder: folder.startswith(str(tmp_path)))
    assert lark_loader.cache_file("never-built") == str(tmp_path / "gwc" / "never-built.lark-cache")
    monkeypatch.setattr(lark_loader, "_writable", lambda folder: False)
    assert lark_loader.cache_file("never-built") is False  # a read-only install, no home
    assert not (tmp_path / "never-built.lark-cache").exists()
