"""The two decision graphs walked together, over boxes of requests.

Why a walk of the two graphs and not one graph rebuilt from both matrices:
the builder's matrix knows one route group, and a combined build would
compile both policies again from their conditions (for 300 rules, most of a
second each) to learn what the two graphs already say. The walk starts at both
roots with the box of every request; at each step it takes one switch of
either graph and splits the box by that switch's branches, values that go
to the same child kept together, empty pieces dropped. A box is therefore
always exactly what the tests on its path allow, whatever order each graph
tests attributes in, and where both graphs reach leaves the box is a class
of requests with one old and one new plan.

Two things keep it small. The route and the limits are decided apart
(`Product`), and every kind of change belongs to one of them, so the route
graphs are walked together and the limits graphs together, never the product
of all four. And each node knows the plan values below it: where both sides
can only reach the same single value, nothing below can change and the walk
goes no further.

`matches` is decided exactly where the box holds finitely many strings
(each is tried); over values no policy names, the verdict is assumed both
ways and kept in the box, which is then not exact.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import replace

from compiler.conditions import regex
from compiler.diff.domain import INF, Box, Domain, Interval, Nums, Strs, is_empty, union
from compiler.graph import Graph
from compiler.graph.nodes import (
    BoolSwitch,
    Leaf,
    Node,
    NumSwitch,
    Product,
    RegexTest,
    StrSwitch,
    children,
    children_first,
)
from compiler.plan import Plan

NOTHING = -1  # a policy without limits: its limits part is one empty plan
EMPTY = Plan(None)


class Part:
    """One half of one graph (its route or its limits), each node's reachable values known."""

    def __init__(self, graph: Graph, root: int, value: Callable[[Plan], Hashable],
                 ids: dict[Hashable, int]) -> None:
        self.nodes = graph.nodes
        self.plans = graph.plans
        self.root = root
        self.value = value
        self.reach: dict[int, frozenset[int]] = {}
        if root == NOTHING:
            self.reach[NOTHING] = frozenset({ids.setdefault(value(EMPTY), len(ids))})
            return
        for index in children_first(self.nodes, root):
            node = self.nodes[index]
            if isinstance(node, Leaf):
                found = value(self.plans[node.plan])
                self.reach[index] = frozenset({ids.setdefault(found, len(ids))})
            else:
                self.reach[index] = frozenset().union(
                    *(self.reach[c] for c in children(node)))

    def plan(self, index: int) -> Plan:
        if index == NOTHING:
            return EMPTY
        node = self.nodes[index]
        assert isinstance(node, Leaf)
        return self.plans[node.plan]

    def is_leaf(self, index: int) -> bool:
        return index == NOTHING or isinstance(self.nodes[index], Leaf)


def parts(graph: Graph) -> tuple[int, int]:
    """A graph's route root and limits root (`NOTHING` when it has no limits)."""
    root = graph.nodes[graph.root]
    if isinstance(root, Product):
        return root.route, root.limits
    return graph.root, NOTHING


def walk(old: Part, new: Part, start: Box) -> Iterator[tuple[Box, Plan, Plan]]:
    """Every class of requests where the two parts may decide differently, with
    the plan each gives it."""
    stack = [(old.root, new.root, start)]
    while stack:
        a, b, box = stack.pop()
        seen_a, seen_b = old.reach[a], new.reach[b]
        if len(seen_a) == 1 and seen_a == seen_b:
            continue
        if not old.is_leaf(a):
            stack.extend((child, b, piece) for child, piece in split(old.nodes[a], box))
        elif not new.is_leaf(b):
            stack.extend((a, child, piece) for child, piece in split(new.nodes[b], box))
        else:
            yield box, old.plan(a), new.plan(b)


def narrowed(box: Box, attr: str, domain: Domain) -> Box | None:
    """The box with `attr` in `domain`; a `matches` verdict assumed over strings the
    box could not list is settled once the strings are listed. None when empty."""
    if isinstance(domain, Strs) and domain.values is not None:
        guesses = [(p, v) for a, p, v in box.regexes if a == attr]
        if guesses:
            kept = frozenset(s for s in domain.values
                             if all((regex(p).search(s) is not None) == v for p, v in guesses))
            absent = domain.absent and not any(v for _, v in guesses)
            domain = Strs(kept, absent=absent)
            box = replace(box, regexes=tuple(r for r in box.regexes if r[0] != attr))
    if is_empty(domain):
        return None
    return box.having(attr, domain)


def split(node: Node, box: Box) -> list[tuple[int, Box]]:
    """The node's children, each with the part of the box that goes there."""
    out: dict[int, Domain] = {}

    def add(child: int, domain: Domain) -> None:
        if is_empty(domain):
            return
        out[child] = union(out[child], domain) if child in out else domain

    if isinstance(node, BoolSwitch):
        held = box.get(node.attr)
        assert isinstance(held, frozenset)
        for truth, child in ((True, node.true), (False, node.false)):
            if truth in held:
                add(child, frozenset({truth}))
    elif isinstance(node, StrSwitch):
        held = box.get(node.attr)
        assert isinstance(held, Strs)
        named = frozenset(node.cases)
        for value, child in node.cases.items():
            if held.allows(value):
                add(child, Strs(frozenset({value})))
        add(node.other, held.without(named))
        if held.absent:
            add(node.absent, Strs(frozenset(), absent=True))
    elif isinstance(node, NumSwitch):
        held = box.get(node.attr)
        assert isinstance(held, Nums)
        for cell, child in zip(_cells(node.bounds), node.children, strict=True):
            add(child, held.meet(cell))
        if held.absent:
            add(node.absent, Nums((), absent=True))
    elif isinstance(node, RegexTest):
        return _regex(node, box)
    else:
        raise ValueError(f"no switch to split on: {node!r}")
    attr = node.attr
    return [(child, found) for child, domain in out.items()
            if (found := narrowed(box, attr, domain)) is not None]


def _regex(node: RegexTest, box: Box) -> list[tuple[int, Box]]:
    attr, pattern = node.attr, node.pattern
    known = box.verdict(attr, pattern)
    if known is not None:
        return [(node.true if known else node.false, box)]
    held = box.get(attr)
    assert isinstance(held, Strs)
    if held.values is not None:
        hits = frozenset(v for v in held.values if regex(pattern).search(v) is not None)
        out = []
        if hits:
            out.append((node.true, box.having(attr, Strs(hits))))
        if held.values - hits or held.absent:
            out.append((node.false, box.having(attr, Strs(held.values - hits,
                                                          absent=held.absent))))
        return out
    present = box.having(attr, replace(held, absent=False)).guessing(attr, pattern, True)
    return [(node.true, present), (node.false, box.guessing(attr, pattern, False))]


def _cells(bounds: tuple[float, ...]) -> list[Interval]:
    """The 2n+1 intervals n bounds cut the line into, in `NumSwitch.children` order."""
    cells: list[Interval] = []
    low, low_in = -INF, False
    for bound in bounds:
        cells.append((low, low_in, bound, False))
        cells.append((bound, True, bound, True))
        low, low_in = bound, False
    cells.append((low, low_in, INF, False))
    return cells
