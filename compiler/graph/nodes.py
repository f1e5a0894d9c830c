"""The decision graph's nodes, and the two ways to walk it.

Nodes refer to their children by index into one list, which is also how the
graph is written to JSON. `Evaluator` turns that list into closures once, so
a request costs one dict lookup or bisection per level; `trace` is the slow,
explaining walk over the same nodes, for `gwc explain`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from compiler.conditions import searcher
from compiler.interpreter import Plan
from compiler.request import Request, getter


@dataclass(frozen=True, slots=True)
class Leaf:
    plan: int
    kind: Literal["leaf"] = "leaf"


@dataclass(frozen=True, slots=True)
class StrSwitch:
    """A string attribute: one dict lookup; values not listed take `other`."""

    attr: str
    cases: dict[str, int]
    other: int
    absent: int
    kind: Literal["str"] = "str"


@dataclass(frozen=True, slots=True)
class NumSwitch:
    """A number attribute split at sorted bounds.

    `children` has 2n+1 entries for n bounds: below the first bound, at it,
    between it and the next, ..., above the last.
    """

    attr: str
    bounds: tuple[float, ...]
    children: tuple[int, ...]
    absent: int
    kind: Literal["num"] = "num"


@dataclass(frozen=True, slots=True)
class BoolSwitch:
    attr: str
    true: int
    false: int
    kind: Literal["bool"] = "bool"


@dataclass(frozen=True, slots=True)
class RegexTest:
    """`matches`: the only test that cannot be a lookup."""

    attr: str
    pattern: str
    true: int
    false: int
    kind: Literal["regex"] = "regex"


@dataclass(frozen=True, slots=True)
class Product:
    """Two independent decisions, taken one after the other, their plans joined.

    The route (first match over rules) and the limits (every quota, budget and
    guard that applies, the first cache) depend on the same request but not on
    each other. One matrix would copy the limits' sub-graph under every route
    region; as a product the graph grows with their sum, not their product.
    """

    route: int
    limits: int
    kind: Literal["product"] = "product"


Node = Leaf | StrSwitch | NumSwitch | BoolSwitch | RegexTest | Product


def joined(route: Plan, limits: Plan) -> Plan:
    return Plan(route.rule, limits.quotas, limits.budgets, limits.cache, limits.guards)


def num_index(bounds: tuple[float, ...], value: float) -> int:
    i = bisect.bisect_left(bounds, value)
    return 2 * i + 1 if i < len(bounds) and bounds[i] == value else 2 * i


def step(node: Node, request: Request) -> tuple[int, str]:
    """The child a request goes to, and why, in words."""
    if isinstance(node, Leaf | Product):
        raise ValueError("a leaf or product has no single next node")
    value = request.get(node.attr)
    name = node.attr.replace(":", "[\"", 1) + "\"]" if ":" in node.attr else node.attr
    if isinstance(node, RegexTest):
        hit = isinstance(value, str) and searcher(node.pattern)(value)
        return (node.true if hit else node.false), f"{name} matches {node.pattern!r}: {hit}"
    if isinstance(node, BoolSwitch):
        return (node.true if value else node.false), f"{name} is {bool(value)}"
    if value is None:
        return node.absent, f"{name} is absent"
    if isinstance(node, StrSwitch):
        if value in node.cases:
            return node.cases[value], f"{name} is {value!r}"  # type: ignore[index]
        listed = ", none of the listed values" if node.cases else ""
        return node.other, f"{name} is {value!r}{listed}"
    index = num_index(node.bounds, value)  # type: ignore[arg-type]
    return node.children[index], f"{name} is {value:g}"


class Evaluator:
    """The graph compiled to closures: the fast path the gateway runs per request."""

    def __init__(self, nodes: list[Node], plans: list[Plan], root: int) -> None:
        self.plans = plans
        compiled: dict[int, Callable[[Request], Plan]] = {}
        for index in children_first(nodes, root):
            compiled[index] = self._compile(nodes[index], compiled)
        self.evaluate = compiled[root]

    def _compile(self, node: Node, done: dict[int, Callable[[Request], Plan]]
                 ) -> Callable[[Request], Plan]:
        if isinstance(node, Leaf):
            plan = self.plans[node.plan]
            return lambda request: plan
        if isinstance(node, Product):
            route, limits = done[node.route], done[node.limits]
            combined: dict[tuple[int, int], Plan] = {}

            def on_product(request: Request) -> Plan:
                a, b = route(request), limits(request)
                key = (id(a), id(b))
                plan = combined.get(key)
                if plan is None:
                    plan = combined[key] = joined(a, b)
                return plan
            return on_product
        get = getter(node.attr)
        if isinstance(node, StrSwitch):
            cases = {value: done[child] for value, child in node.cases.items()}
            other, absent = done[node.other], done[node.absent]

            def on_str(request: Request) -> Plan:
                value = get(request)
                if value is None:
                    return absent(request)
                return cases.get(value, other)(request)  # type: ignore[arg-type]
            return on_str
        if isinstance(node, NumSwitch):
            bounds, kids, none = node.bounds, [done[c] for c in node.children], done[node.absent]

            def on_num(request: Request) -> Plan:
                value = get(request)
                if value is None:
                    return none(request)
                i = bisect.bisect_left(bounds, value)  # type: ignore[arg-type]
                if i < len(bounds) and bounds[i] == value:
                    return kids[2 * i + 1](request)
                return kids[2 * i](request)
            return on_num
        yes, no = done[node.true], done[node.false]
        if isinstance(node, BoolSwitch):
            return lambda request: yes(request) if get(request) else no(request)
        search = searcher(node.pattern)

        def on_regex(request: Request) -> Plan:
            value = get(request)
            return yes(request) if isinstance(value, str) and search(value) else no(request)
        return on_regex


def children(node: Node) -> list[int]:
    if isinstance(node, Leaf):
        return []
    if isinstance(node, StrSwitch):
        return [*node.cases.values(), node.other, node.absent]
    if isinstance(node, NumSwitch):
        return [*node.children, node.absent]
    if isinstance(node, Product):
        return [node.route, node.limits]
    return [node.true, node.false]


def children_first(nodes: list[Node], root: int) -> list[int]:
    """Node indexes ordered so that every node comes after its children."""
    order: list[int] = []
    seen: set[int] = set()
    stack: list[tuple[int, bool]] = [(root, False)]
    while stack:
        index, expanded = stack.pop()
        if expanded:
            order.append(index)
            continue
        if index in seen:
            continue
        seen.add(index)
        stack.append((index, True))
        stack.extend((child, False) for child in children(nodes[index]) if child not in seen)
    return order
