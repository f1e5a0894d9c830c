"""`gwc diff`: its classes held to the plans the two graphs give each request.

For random policy pairs and random requests, a request's plan changes if and
only if it falls in a class the diff reports (tested through `where`), with
that very change; every witness is in its class and changes as said; a
policy against itself, reformatted, re-laid out or joined by an unrelated
block, reports nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.diff import Differ, holds
from compiler.request import Request
from dsl.format import format_module
from dsl.parser import parse
from tests.strategies import compiled, policies, relaid, requests

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(old=policies(), new=policies(), batch=st.lists(requests, min_size=25, max_size=25))
def test_a_request_changes_plan_iff_it_is_in_a_reported_class(
        tmp_path: Path, old: str, new: str, batch: list[Request]) -> None:
    differ = Differ(compiled(tmp_path, old, "old.gw"), compiled(tmp_path, new, "new.gw"))
    found = differ.changes()
    for request in batch:
        changes = differ.request_changes(request)
        inside = [f for f in found if holds(f.where, request)]
        for change in changes:
            assert any(f.change == change for f in inside), (old, new, request, change)
        for f in inside:
            if f.exact:
                assert f.change in changes, (old, new, request, f.text)


@SETTINGS
@given(old=policies(), new=policies())
def test_every_witness_is_in_its_class_and_changes_as_said(
        tmp_path: Path, old: str, new: str) -> None:
    differ = Differ(compiled(tmp_path, old, "old.gw"), compiled(tmp_path, new, "new.gw"))
    for f in differ.changes():
        request = Request.from_fields(f.witness)
        if f.exact:
            assert holds(f.where, request), (old, new, f.text, f.witness)
            assert f.change in differ.request_changes(request), (old, new, f.text, f.witness)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=policies(), layout=relaid())
def test_the_same_policy_in_another_layout_changes_nothing(
        tmp_path: Path, text: str, layout: tuple[str, str]) -> None:
    module, _ = parse(text, "p.gw")
    assert module is not None
    formatted = format_module(module, text)
    comment, extra = layout
    moved = "".join(f"{comment}\n{line}\n" for line in text.splitlines()) + extra
    original = compiled(tmp_path, text, "a.gw")
    for other in (text, formatted, moved):
        assert Differ(original, compiled(tmp_path, other, "b.gw")).changes() == [], other


def diff_of_production_with_itself(*flags: str) -> subprocess.CompletedProcess[str]:
    policy = Path(__file__).resolve().parents[2] / "examples" / "production.gw"
    return subprocess.run([sys.executable, "-m", "compiler.cli", "diff", str(policy),
                           str(policy), *flags], capture_output=True, text=True)


def test_the_command_says_so_when_nothing_changes() -> None:
    result = diff_of_production_with_itself("--fail-on", "route-changed")
    assert result.returncode == 0
    assert result.stdout == "no request changes plan\n"


def test_an_unknown_kind_is_a_usage_error() -> None:
    result = diff_of_production_with_itself("--fail-on", "route-moved")
    assert result.returncode == 2
    assert "unknown kind 'route-moved'" in result.stderr
