"""The tuned parser (dsl/lark_speedups.py) against lark's own: the same answer, spans and all."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.policies import policy
from dsl.parser import _parser, parse_partial
from dsl.record import Record
from tests.conftest import ROOT
from tests.dsl.test_fuzz import mutations

FILES = sorted([*(ROOT / "examples").glob("*.gw"), *(ROOT / "tests" / "golden").glob("*.gw")])


def shape(value: Any) -> Any:
    """Everything a parse result holds, spans and comments included (equality skips them)."""
    if isinstance(value, Record):
        return (type(value).__name__,
                tuple((name, shape(getattr(value, name))) for name in value.__match_args__))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__,
                tuple((f.name, shape(getattr(value, f.name))) for f in dataclasses.fields(value)))
    if isinstance(value, tuple | list):
        return tuple(shape(v) for v in value)
    if isinstance(value, frozenset):
        return tuple(sorted(value))
    return value


def assert_same(text: str) -> None:
    assert shape(parse_partial(text, "p.gw")) == shape(parse_partial(text, "p.gw", tuned=False))


def test_the_parser_is_tuned() -> None:
    frontend: Any = _parser().parser
    assert type(frontend.lexer).__name__ == "_FastContextualLexer"
    assert all(type(rule).__name__ == "_RuleStandIn" for rule in frontend.parser.parser.callbacks)
    assert type(frontend.parser.parser).__name__ == "_FusedParser"
    assert type(_parser(tuned=False).parser.lexer).__name__ == "ContextualLexer"
    parse_partial("route { otherwise -> a }", "p.gw")
    assert frontend.lexer._whole, "the one-pattern scanner was left off"


def test_keywords_are_reserved_only_where_the_parser_takes_them() -> None:
    """The one-pattern scanner retypes a name as a keyword only where the
    state's own lexer would; elsewhere that lexer reads the token itself."""
    for text in ['model m { provider = p }\nroute { when model == "x" -> model\n'
                 '  when team in [model, "a"] and not stream -> deny "no" otherwise -> a }',
                 'models m { }', 'route { when x -> a when y -> b }', 'modelx', 'route{when',
                 'test "t" { given { model = "x"; route = "y" } expect { model = m } }',
                 'quota per header["x"] when model matches "^a" { requests = 1 per minute }',
                 '# only a comment', '\n\n  \t', 'provider p { a = 1..2 }  # end',
                 'route { when a -> b }\n"unterminated\n', 'cache when x {}}}']:
        assert_same(text)


def test_the_same_on_every_example_and_a_large_policy() -> None:
    for path in FILES:
        assert_same(path.read_text())
    assert_same(policy(300))
    assert_same("")
    assert_same("route { otherwise -> a }")  # no final newline


@settings(max_examples=200, deadline=None)
@given(text=mutations())
def test_the_same_on_broken_policies(text: str) -> None:
    assert_same(text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list('{}[]()=;:,."#$%-><\\ \n\t\r\x0b\x1b'
                                                  'amoderlutpiwhn0123456789_')), max_size=200))
def test_the_same_on_junk(text: str) -> None:
    assert_same(text)

