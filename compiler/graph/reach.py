"""Which route rules a condition's requests reach, read off the graph.

The graph is walked with the condition, specialised at each node to each
branch and pruned where it turns false; the route leaves still reached are
where requests satisfying it go. Splits are taken at the union of the node's
values and the condition's own, so the walk is exact even where the graph
merged branches the condition tells apart. `matches` stays opaque: a leaf
whose leftover condition only regexes could falsify counts as reached.
"""

from __future__ import annotations

from compiler.conditions import FALSE, TRUE, Cond, atoms, constants, restrict
from compiler.graph import Graph
from compiler.graph.build import OTHER, Builder, Matrix, decider, regex_decider, representatives
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
        if residual == FALSE or (index, residual) in seen:
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
                stack.append((child, restrict(residual, decider(node.attr, value))))
        else:
            stack.append((node.absent, restrict(residual, decider(node.attr, None))))
            own = {v for a in atoms(residual) if a.attr == node.attr for v in constants(a)}
            if isinstance(node, StrSwitch):
                for value in {*node.cases, *own}:
                    child = node.cases.get(value, node.other)  # type: ignore[call-overload]
                    stack.append((child, restrict(residual, decider(node.attr, value))))
                stack.append((node.other, restrict(residual, decider(node.attr, OTHER))))
            else:
                assert isinstance(node, NumSwitch)
                bounds = tuple(sorted({*node.bounds, *(float(v) for v in own)}))  # type: ignore[arg-type]
                for value in representatives(bounds):
                    child = node.children[num_index(node.bounds, value)]
                    stack.append((child, restrict(residual, decider(node.attr, value))))
    return found


def satisfiable(cond: Cond) -> bool:
    """Whether some request satisfies a condition (regexes read as free)."""
    if cond == TRUE:
        return True
    builder = Builder(Matrix(1, 0, 0, 0), [cond])
    builder.build()
    return any(plan.rule == 0 for plan in builder.plans)
