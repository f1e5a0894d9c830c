"""Properties over random policies and requests (hypothesis).

The decision graph must give every request the plan the reference
interpreter gives it (its guards included); that holds after a trip through
the graph's JSON too. What the analyses read off the graph, shadowed rules
and guards that never act, holds for every request the interpreter reads.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.conditions import holds
from compiler.driver import check
from compiler.graph.document import from_json, to_json
from compiler.interpreter import interpret
from compiler.passes.guard_shadowing import covers
from compiler.request import Request
from tests.strategies import compiled, policies, requests

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(text=policies(), batch=st.lists(requests, min_size=20, max_size=20))
def test_the_graph_agrees_with_the_reference_interpreter(tmp_path: Path, text: str,
                                                         batch: list[Request]) -> None:
    graph = compiled(tmp_path, text)
    for request in batch:
        assert graph.plan(request) == interpret(graph.policy, request), (text, request)
        assert graph.trace(request)[0] == graph.plan(request)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=policies(), batch=st.lists(requests, min_size=10, max_size=10))
def test_a_graph_read_back_from_json_decides_the_same(tmp_path: Path, text: str,
                                                      batch: list[Request]) -> None:
    graph = compiled(tmp_path, text)
    loaded = from_json(json.loads(json.dumps(to_json(graph))))
    assert loaded.version == graph.version
    for request in batch:
        assert loaded.plan(request) == graph.plan(request)
        assert interpret(loaded.policy, request) == graph.plan(request)


@SETTINGS
@given(text=policies(), batch=st.lists(requests, min_size=30, max_size=30))
def test_shadowed_rules_and_their_takers_agree_with_the_interpreter(
        tmp_path: Path, text: str, batch: list[Request]) -> None:
    """A rule reported shadowed never wins a request, and each request it would
    match goes to one of the rules the warning names."""
    path = tmp_path / "random.gw"
    path.write_text(text)
    ctx = check(str(path), env={})
    policy = ctx.policy
    by_line = {r.source.line: r for r in policy.rules}
    for diagnostic in (d for d in ctx.diagnostics if d.code == "GW301"):
        shadowed = by_line[diagnostic.span.line]
        takers = {by_line[r.span.line].index for r in diagnostic.related}
        for request in batch:
            winner = interpret(policy, request).rule
            assert winner != shadowed.index
            if holds(shadowed.cond, request):
                assert winner in takers, (text, request)


@SETTINGS
@given(text=policies(), batch=st.lists(requests, min_size=30, max_size=30))
def test_guards_reported_as_never_acting_agree_with_the_interpreter(
        tmp_path: Path, text: str, batch: list[Request]) -> None:
    """A guard said never to apply applies to no request; one said to be shadowed
    applies only where the guard the warning names applies too, and that guard
    refuses whatever it could act on."""
    path = tmp_path / "random.gw"
    path.write_text(text)
    ctx = check(str(path), env={})
    policy = ctx.policy
    by_line = {g.source.line: g for g in policy.guards}
    for diagnostic in (d for d in ctx.diagnostics if d.code == "GW315"):
        guard = by_line[diagnostic.span.line]
        earlier = [by_line[r.span.line] for r in diagnostic.related]
        assert all(covers(e, guard) and e.index < guard.index for e in earlier)
        for request in batch:
            applied = interpret(policy, request).guards
            if guard.index in applied:
                assert earlier and all(e.index in applied for e in earlier), (text, request)
