"""The formatter: canonical, idempotent, comment-keeping, and faithful to the tree."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings

from dsl.format import format_module
from dsl.parser import parse
from tests.conftest import ROOT, SHARED_EXAMPLES
from tests.strategies import policies


def fmt(text: str) -> str:
    module, diagnostics = parse(text, "f.gw")
    assert module is not None, diagnostics
    return format_module(module, text)


def test_layout_is_canonical_and_comments_stay() -> None:
    messy = textwrap.dedent("""\
        # header comment

        provider   local{type=mock;latency=20ms   # trailing
        }
        model a {provider=local
           input=$1/1M ; output=$2/1M}
        model bb { provider = local }
        route{
        # before the first rule
        when team=="x"and(stream or tools)->a,bb
          otherwise->bb}
        """)
    assert fmt(messy) == textwrap.dedent("""\
        # header comment

        provider local {
          type    = mock
          latency = 20ms  # trailing
        }

        model a {
          provider = local
          input    = $1/1M
          output   = $2/1M
        }

        model bb { provider = local }

        route {
          # before the first rule
          when team == "x" and (stream or tools) -> a, bb
          otherwise                              -> bb
        }
        """)


def test_guards_are_laid_out_like_every_block() -> None:
    messy = textwrap.dedent("""\
        guard   pii   when team=="x"and not(stream or tools){detect=[email,phone]  # pii
        on=both}
        guard words{deny=["(?i)secret\\d+"];action=flag}
        guard hook when model matches "^gpt" {
        webhook=env("HOOK") ; on_error=deny
          timeout=500ms }
        """)
    assert fmt(messy) == textwrap.dedent("""\
        guard pii when team == "x" and not (stream or tools) {
          detect = [email, phone]  # pii
          on     = both
        }

        guard words { deny = ["(?i)secret\\d+"]; action = flag }

        guard hook when model matches "^gpt" {
          webhook  = env("HOOK")
          on_error = deny
          timeout  = 500ms
        }
        """)


def test_parentheses_are_kept_exactly_where_the_tree_needs_them() -> None:
    text = 'route {\n  when not (a or b) and (c and d) or not e -> x\n}\n'
    assert fmt(text) == text


def _files() -> list[Path]:
    found = sorted((ROOT / "examples").glob("*.gw"))
    return found + (sorted(SHARED_EXAMPLES.glob("*.gw")) if SHARED_EXAMPLES.is_dir() else [])


@pytest.mark.parametrize("path", _files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_examples_round_trip(path: Path) -> None:
    text = path.read_text()
    once = fmt(text)
    assert parse(once, "f.gw")[0] == parse(text, "f.gw")[0]
    assert fmt(once) == once


def test_the_projects_examples_are_formatted() -> None:
    for path in (ROOT / "examples").glob("*.gw"):
        assert fmt(path.read_text()) == path.read_text(), path.name


@settings(max_examples=300, deadline=None)
@given(text=policies())
def test_format_is_idempotent_and_keeps_the_tree(text: str) -> None:
    once = fmt(text)
    assert parse(once, "f.gw")[0] == parse(text, "f.gw")[0]
    assert fmt(once) == once
