"""Which route rules a condition's requests reach, read off the graph.

The graph is walked with the condition, specialised at each node to each
branch and pruned where it turns false; the route leaves still reached are
where requests satisfying it go. Splits are taken at the union of the node's
values and the condition's own, so the walk is exact even where the graph
merged branches the condition tells apart. `matches` stays opaque: a leaf
whose leftover condition only regexes could falsify counts as reached.
"""

from __future__ import annotations

import functools

from compiler.conditions import OTHER, Cond, Const, Match, atoms, constants, restrict, settle
from compiler.graph import Graph
from compiler.graph.build import Builder, Matrix, regex_decider, representatives
from compiler.graph.nodes import (
    BoolSwitch,
    Leaf,
    NumSwitch,
    Product,
    RegexTest,
    StrSwitch,
    num_index,
)


def rules_reached(graph: Graph, cond: Cond) -> set[int | None]:
    """The route rules that win some request satisfying `cond`; None among them
    when some such request matches no rule at all."""
    found: set[int | None] = set()
    seen: set[tuple[int, Cond]] = set()
    stack: list[tuple[int, Cond]] = [(graph.root, cond)]
    while stack:
        index, residual = stack.pop()
        if _false(residual) or (index, residual) in seen:
            continue
        seen.add((index, residual))
        node = graph.nodes[index]
        if isinstance(node, Product):
            stack.append((node.route, residual))
        elif isinstance(node, Leaf):
            if satisfiable(residual):
                found.add(graph.plans[node.plan].rule)
        elif isinstance(node, RegexTest):
            for verdict, child in ((True, node.true), (False, node.false)):
                stack.append((child, restrict(residual, regex_decider(
                    node.attr, node.pattern, verdict))))
        elif isinstance(node, BoolSwitch):
            for value, child in ((True, node.true), (False, node.false)):
                stack.append((child, settle(residual, node.attr, value)))
        else:
            stack.extend(_branches(node, residual))
    return found


def _branches(node: StrSwitch | NumSwitch, residual: Cond) -> list[tuple[int, Cond]]:
    """Each child of a switch with what the condition says there.

    Values the condition does not name all leave it the same (regexes aside),
    so it is specialised once for them and each distinct child visited once.
    """
    attr = node.attr
    mine = [a for a in atoms(residual) if a.attr == attr]
    if not mine:
        kids = [*node.cases.values(), node.other] if isinstance(node, StrSwitch) \
            else list(node.children)
        return [(child, residual) for child in {*kids, node.absent}]
    out = [(node.absent, settle(residual, attr, None))]
    own = {v for a in mine for v in constants(a)}
    if isinstance(node, NumSwitch):
        bounds = tuple(sorted({*node.bounds, *(float(v) for v in own)}))  # type: ignore[arg-type]
        for point in representatives(bounds):
            child = node.children[num_index(node.bounds, point)]
            out.append((child, settle(residual, attr, point)))
        return out
    for value in own:
        child = node.cases.get(str(value), node.other)
        out.append((child, settle(residual, attr, value)))
    rest = settle(residual, attr, OTHER)
    if any(isinstance(a, Match) for a in mine):
        out += [(child, settle(residual, attr, value))
                for value, child in node.cases.items() if value not in own]
        out.append((node.other, rest))
    elif not _false(rest):
        others = {child for value, child in node.cases.items() if value not in own}
        out += [(child, rest) for child in {*others, node.other}]
    return out


def _false(cond: Cond) -> bool:
    """`cond == FALSE`, without the dataclass's comparison: this is asked at every step."""
    return type(cond) is Const and cond.value is False


@functools.lru_cache(maxsize=4096)
def satisfiable(cond: Cond) -> bool:
    """Whether some request satisfies a condition (regexes read as free)."""
    if type(cond) is Const:
        return cond.value
    builder = Builder(Matrix(1, 0, 0, 0, 0), [cond])
    builder.build()
    return any(plan.rule == 0 for plan in builder.plans)
