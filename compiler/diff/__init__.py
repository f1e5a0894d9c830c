"""`gwc diff`: the exact classes of requests whose plan changes between two policies.

`Differ(old, new).changes()` walks the two decision graphs together
(`walk`), compares the plans at each pair of leaves by value (`kinds`),
gathers the classes of each change and merges them into few readable boxes
(`domain.merge`), and gives each a witness: a concrete request in the class
for which the change really happens. `request_changes` is the same
comparison for one request, read off the two graphs directly: the property
tests hold the classes to it, and `holds` (re-exported) tests a request
against a class's `where`, for this command's `--traffic` and for any tool
reading its JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from compiler.conditions import Match, atoms, constants
from compiler.diff.domain import Box, Strs, as_text, holds, merge, pieces, where, witness
from compiler.diff.kinds import KINDS, Change, Side, limit_changes, route_changes
from compiler.diff.walk import Part, narrowed, parts, walk
from compiler.graph import Graph
from compiler.plan import Plan
from compiler.policy import Policy
from compiler.request import Request
from compiler.traffic import Logged

WEEK = 7 * 86400.0

__all__ = ["KINDS", "Change", "Differ", "Found", "holds"]


@dataclass
class Found:
    """One change over one class: the class as a box, as `where` and in words."""

    change: Change
    box: Box
    where: list[dict[str, Any]]
    text: str
    witness: dict[str, Any]
    share: float | None = None
    usd_week: float | None = None

    @property
    def exact(self) -> bool:
        return self.box.exact


class Differ:
    def __init__(self, old: Graph, new: Graph) -> None:
        self.old_graph, self.new_graph = old, new
        self.old, self.new = Side(old.policy), Side(new.policy)
        self.hints = _hints(old, new)

    # ------------------------------------------------------------- classes

    def changes(self) -> list[Found]:
        found: dict[Change, list[Box]] = {}
        for box, change in self._classes():
            found.setdefault(change, []).append(box)
        out = []
        for change, boxes in found.items():
            for merged in merge(boxes):
                for piece in pieces(merged):
                    clauses = where(piece)
                    out.append(Found(change, piece, clauses, as_text(clauses),
                                     self._witness(piece, clauses, change)))
        out.sort(key=_order)
        return out

    def _classes(self) -> Iterable[tuple[Box, Change]]:
        old_route, old_limits = parts(self.old_graph)
        new_route, new_limits = parts(self.new_graph)
        ids: dict[Any, int] = {}
        a = Part(self.old_graph, old_route, lambda p: self.old.route_value(p.rule), ids)
        b = Part(self.new_graph, new_route, lambda p: self.new.route_value(p.rule), ids)
        for box, pa, pb in walk(a, b, Box()):
            yield from self._route_classes(box, pa, pb)
        ids = {}
        a = Part(self.old_graph, old_limits, self.old.limits_value, ids)
        b = Part(self.new_graph, new_limits, self.new.limits_value, ids)
        for box, pa, pb in walk(a, b, Box()):
            for change in limit_changes(self.old, self.new, pa, pb):
                yield box, change

    def _route_classes(self, box: Box, pa: Plan, pb: Plan) -> Iterable[tuple[Box, Change]]:
        """A route leaf pair's changes; where either rule names `requested`, the
        chain depends on the model named, so the box is split by declared model."""
        if not (_requested(self.old, pa.rule) or _requested(self.new, pb.rule)):
            for change in route_changes(self.old, self.new, pa.rule, pb.rule, None):
                yield box, change
            return
        held = box.get("model")
        assert isinstance(held, Strs)
        names = frozenset(self.old.declared | self.new.declared)
        for name in sorted(names):
            if held.allows(name):
                sub = narrowed(box, "model", Strs(frozenset({name})))
                if sub is not None:
                    for change in route_changes(self.old, self.new, pa.rule, pb.rule, name):
                        yield sub, change
        rest = narrowed(box, "model", Strs(held.without(names).values,
                                           held.without(names).excluded, held.absent))
        if rest is not None:
            for change in route_changes(self.old, self.new, pa.rule, pb.rule, None):
                yield rest, change

    def _witness(self, box: Box, clauses: list[dict[str, Any]], change: Change
                 ) -> dict[str, Any]:
        """The first candidate request in the class whose plan changes as said."""
        first: dict[str, Any] | None = None
        for fields in witness(box, self.hints):
            request = Request.from_fields(fields)
            if first is None:
                first = fields
            if holds(clauses, request) and change in self.request_changes(request):
                return fields
        assert first is not None
        return first

    # ------------------------------------------------------------- traffic

    def weigh(self, found: Sequence[Found], logged: Sequence[Logged]) -> None:
        """Each class's share of the logged requests; for a route change, what the
        new first target would cost against the old on those requests' tokens,
        scaled to a week by the log's span (none for a log of one instant)."""
        total = len(logged)
        times = [entry.at for entry in logged]
        span = max(times) - min(times) if times else 0.0
        for item in found:
            members = [e for e in logged if holds(item.where, e.request)]
            item.share = len(members) / total if total else 0.0
            change = item.change
            if change.kind != "route-changed" or not change.old_route or not change.new_route \
                    or span <= 0 or not members:
                continue
            delta = sum(_price(self.new.policy, change.new_route[0], e)
                        - _price(self.old.policy, change.old_route[0], e) for e in members)
            item.usd_week = delta * WEEK / span

    # ---------------------------------------------------------- one request

    def request_changes(self, request: Request) -> list[Change]:
        """What changes for one request: the same comparison as the classes', on
        the plans the two graphs give it."""
        pa, pb = self.old_graph.plan(request), self.new_graph.plan(request)
        named = request.model if request.model in self.old.declared | self.new.declared \
            else None
        return (route_changes(self.old, self.new, pa.rule, pb.rule, named)
                + limit_changes(self.old, self.new, pa, pb))


def _price(policy: Policy, name: str, entry: Logged) -> float:
    """A logged request's tokens at a target's prices; a pool's, its members' mean by
    weight (its pick happens per request)."""
    if name in policy.pools:
        members = policy.pools[name].members
        weight = sum(m.weight for m in members)
        return sum(m.weight * _price(policy, m.model, entry) for m in members) / weight \
            if weight else 0.0
    model = policy.models[name]
    return (entry.request.tokens * (model.input_price or 0.0)
            + entry.tokens_out * (model.output_price or 0.0))


def _requested(side: Side, rule: int | None) -> bool:
    if rule is None:
        return False
    return any(t.kind == "requested" for t in side.policy.rules[rule].targets)


def _hints(*graphs: Graph) -> dict[str, list[str]]:
    """The strings each attribute's conditions name, in both policies, and each
    `matches` pattern's literal characters: where a witness must satisfy a
    `matches`, these are the likeliest values to."""
    out: dict[str, list[str]] = {}
    for graph in graphs:
        p = graph.policy
        for cond in [*(r.cond for r in p.rules), *(c.cond for c in p.caches),
                     *(q.cond for q in p.quotas), *(b.cond for b in p.budgets),
                     *(g.cond for g in p.guards)]:
            for atom in atoms(cond):
                if isinstance(atom, Match):
                    literal = re.sub(r"[\\^$.*+?()\[\]{}|]", "", atom.pattern)
                    out.setdefault(atom.attr, []).append(literal)
                for value in constants(atom):
                    if isinstance(value, str):
                        out.setdefault(atom.attr, []).append(value)
        out.setdefault("model", []).extend(sorted(p.declared))
    return {attr: sorted(set(values)) for attr, values in out.items()}


def _order(found: Found) -> tuple[Any, ...]:
    c = found.change
    return (KINDS.index(c.kind), c.new.line if c.new else 0, c.old.line if c.old else 0,
            found.text)
