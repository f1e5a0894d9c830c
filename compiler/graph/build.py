"""Rules to decision graph, the way pattern matching is compiled (Maranget 2008).

A policy's conditional blocks form two matrices, decided side by side under
a `Product` root: the route rules (first match wins), and the limits: cache
blocks (first match) with quotas, budgets and guards (every match applies).
At each node the builder picks a test that the first undecided entry needs,
choosing among those the one most entries use; it switches on that attribute,
and in each branch every entry is specialised (`restrict`) to what the branch
knows.
An entry that becomes true or false is settled; when nothing is left to
decide, the node is a leaf whose plan says what matched.

States already built are remembered, and nodes are hash-consed, so equal
sub-graphs are shared and the result is a DAG.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter

from compiler.conditions import (
    FALSE,
    OTHER,
    TRUE,
    Atom,
    Cmp,
    Cond,
    Const,
    In,
    Match,
    all_of,
    atom_holds,
    atoms,
    constants,
    restrict,
    settle,
)
from compiler.graph.nodes import (
    BoolSwitch,
    Leaf,
    Node,
    NumSwitch,
    Product,
    RegexTest,
    StrSwitch,
)
from compiler.interpreter import Plan
from compiler.policy import Policy, Subject
from compiler.request import Scalar, attr_kind
from dsl.record import Record

UNDECIDED = -1
ROUTE, CACHE, QUOTA, BUDGET, GUARD = range(5)  # the matrix's groups, in matrix order

Entry = tuple[int, Cond]  # (position in the matrix, condition left to decide)
# what is settled so far: the route rule, the cache, and the quotas, budgets and guards on
Decided = tuple[int | None, int | None, tuple[int, ...], tuple[int, ...], tuple[int, ...]]
State = tuple[tuple[Entry, ...], int | None, int | None, tuple[int, ...], tuple[int, ...],
              tuple[int, ...]]
Key = tuple[str, ...]  # ("attr", name) or ("regex", name, pattern)
_position = itemgetter(0)


class Matrix(Record):
    """How many entries of each group the matrix holds, in matrix order."""

    routes: int
    caches: int
    quotas: int
    budgets: int
    guards: int


def subject_cond(subject: Subject, peers: Sequence[Subject]) -> Cond:
    """A subject as a condition: what `interpreter.applies` checks, folded in."""
    if subject.kind == "global":
        return TRUE
    if subject.kind == "one":
        return Cmp(subject.dimension, "==", subject.value)
    named = frozenset(p.value for p in peers
                      if p.kind == "one" and p.dimension == subject.dimension)
    return In(subject.dimension, named, negated=True)  # present, and not named


def matrix_of(policy: Policy) -> tuple[Matrix, list[Cond]]:
    quota_subjects = [q.subject for q in policy.quotas]
    budget_subjects = [b.subject for b in policy.budgets]
    conds = [r.cond for r in policy.rules] + [c.cond for c in policy.caches]
    conds += [all_of([subject_cond(q.subject, quota_subjects), q.cond]) for q in policy.quotas]
    conds += [all_of([subject_cond(b.subject, budget_subjects), b.cond]) for b in policy.budgets]
    conds += [g.cond for g in policy.guards]  # a guard has no subject: its `when` is all
    matrix = Matrix(len(policy.rules), len(policy.caches), len(policy.quotas),
                    len(policy.budgets), len(policy.guards))
    return matrix, conds


@functools.lru_cache(maxsize=1 << 16)
def keys_of(cond: Cond) -> frozenset[Key]:
    return frozenset(_key(a) for a in atoms(cond))


def _key(atom: Atom) -> Key:
    return ("regex", atom.attr, atom.pattern) if isinstance(atom, Match) else ("attr", atom.attr)


def regex_decider(attr: str, pattern: str, verdict: bool) -> Callable[[Atom], bool | None]:
    def decide(atom: Atom) -> bool | None:
        same = isinstance(atom, Match) and atom.attr == attr and atom.pattern == pattern
        return verdict if same else None
    return decide


class Builder:
    def __init__(self, matrix: Matrix, conds: list[Cond]) -> None:
        self.matrix = matrix
        self.initial = tuple(enumerate(conds))
        self.kinds: list[int] = []
        self.indexes: list[int] = []
        for kind, size in enumerate((matrix.routes, matrix.caches, matrix.quotas,
                                     matrix.budgets, matrix.guards)):
            self.kinds += [kind] * size
            self.indexes += list(range(size))
        self.nodes: list[Node] = []
        self.plans: list[Plan] = []
        self.node_ids: dict[tuple[object, ...], int] = {}
        self.plan_ids: dict[Plan, int] = {}
        self.memo: dict[State, int] = {}

    def build(self) -> int:
        """The root: the route decision and, where the policy has limits or caches,
        their decision beside it as a product."""
        undecided: Decided = (UNDECIDED, UNDECIDED, (), (), ())
        route = [e for e in self.initial if self.kinds[e[0]] == ROUTE]
        limits = [e for e in self.initial if self.kinds[e[0]] != ROUTE]
        route_root = self.node(self.normalize(route, undecided))
        if not limits:
            return route_root
        limits_root = self.node(self.normalize(limits, undecided))
        return self.intern(Product(route_root, limits_root), ("product", route_root, limits_root))

    # -------------------------------------------------------------- states

    def normalize(self, entries: Sequence[Entry], decided: Decided) -> State:
        """Settle what can be settled: a first-match group is won by its first
        entry once that is true; an all-match entry is on once it is true.

        Entries come in matrix order, so once a first-match group is won its
        later entries are dropped here and none of its earlier ones are left.
        """
        route, cache, quotas, budgets, guards = decided
        on_q, on_b, on_g = list(quotas), list(budgets), list(guards)
        open_route = open_cache = False
        pending: list[Entry] = []
        kinds, indexes = self.kinds, self.indexes
        for pos, cond in entries:
            settled = cond.value if type(cond) is Const else None
            if settled is False:
                continue
            kind, index = kinds[pos], indexes[pos]
            if kind == ROUTE:
                if route != UNDECIDED:
                    continue
                if settled and not open_route:
                    route = index
                    continue
                open_route = True
            elif kind == CACHE:
                if cache != UNDECIDED:
                    continue
                if settled and not open_cache:
                    cache = index
                    continue
                open_cache = True
            elif settled:
                (on_q if kind == QUOTA else on_b if kind == BUDGET else on_g).append(index)
                continue
            pending.append((pos, cond))
        if route == UNDECIDED and not open_route:
            route = None
        if cache == UNDECIDED and not open_cache:
            cache = None
        return (tuple(pending), route, cache, tuple(sorted(on_q)), tuple(sorted(on_b)),
                tuple(sorted(on_g)))

    # --------------------------------------------------------------- nodes

    def node(self, state: State) -> int:
        found = self.memo.get(state)
        if found is None:
            found = self.memo[state] = self._node(state)
        return found

    def _node(self, state: State) -> int:
        entries, route, cache, quotas, budgets, guards = state
        if not entries:
            plan = Plan(route, quotas, budgets, cache, guards)  # type: ignore[arg-type]
            if plan not in self.plan_ids:
                self.plan_ids[plan] = len(self.plans)
                self.plans.append(plan)
            return self.intern(Leaf(self.plan_ids[plan]), ("leaf", self.plan_ids[plan]))
        key = self.choose(entries)
        decided: Decided = (route, cache, quotas, budgets, guards)
        if key[0] == "regex":
            _, attr, pattern = key
            touched = self.touching(entries, key)
            yes = self.branch(entries, decided, touched, functools.partial(
                restrict, decide=regex_decider(attr, pattern, True)))
            no = self.branch(entries, decided, touched, functools.partial(
                restrict, decide=regex_decider(attr, pattern, False)))
            if yes == no:
                return yes
            return self.intern(RegexTest(attr, pattern, yes, no), ("regex", attr, pattern, yes, no))
        attr = key[1]
        kind = attr_kind(attr)
        if kind == "bool":
            touched = self.touching(entries, key)
            yes = self.branch(entries, decided, touched, lambda c: settle(c, attr, True))
            no = self.branch(entries, decided, touched, lambda c: settle(c, attr, False))
            if yes == no:
                return yes
            return self.intern(BoolSwitch(attr, yes, no), ("bool", attr, yes, no))
        if kind == "num":
            return self.num_switch(attr, entries, decided)
        return self.str_switch(attr, entries, decided)

    def intern(self, node: Node, key: tuple[object, ...]) -> int:
        """Hash-consing: an equal node is made once and shared."""
        found = self.node_ids.get(key)
        if found is None:
            found = self.node_ids[key] = len(self.nodes)
            self.nodes.append(node)
        return found

    def choose(self, entries: tuple[Entry, ...]) -> Key:
        """A test the first entry needs, preferring the one most entries use."""
        needed = keys_of(entries[0][1])
        if len(needed) == 1:
            return next(iter(needed))
        counts = Counter(k for _, cond in entries for k in keys_of(cond) if k in needed)
        return max(sorted(needed), key=lambda k: counts[k])

    @staticmethod
    def touching(entries: Sequence[Entry], key: Key) -> list[int]:
        """Where in `entries` the conditions that test `key` are: the only ones a
        branch on it changes, found once for all the branches."""
        return [i for i, (_, cond) in enumerate(entries) if key in keys_of(cond)]

    def branch(self, entries: Sequence[Entry], decided: Decided, touched: list[int],
               specialise: Callable[[Cond], Cond]) -> int:
        specialised = list(entries)
        for i in touched:
            pos, cond = specialised[i]
            specialised[i] = (pos, specialise(cond))
        return self.node(self.normalize(specialised, decided))

    def num_switch(self, attr: str, entries: tuple[Entry, ...], decided: Decided) -> int:
        touched = self.touching(entries, ("attr", attr))
        mine = [a for i in touched for a in atoms(entries[i][1]) if a.attr == attr]
        bounds = tuple(sorted({float(v) for a in mine for v in constants(a)}))  # type: ignore[arg-type]
        # What a branch makes of the entries depends only on which of these atoms
        # hold there: neighbouring intervals that agree on all of them share a child.
        made: dict[tuple[bool, ...], int] = {}

        def child(value: float | None) -> int:
            holds = tuple([atom_holds(a, value) for a in mine])
            found = made.get(holds)
            if found is None:
                found = made[holds] = self.branch(entries, decided, touched,
                                                  lambda c: settle(c, attr, value))
            return found

        children = tuple(child(value) for value in representatives(bounds))
        absent = child(None)
        if all(c == absent for c in children):
            return absent
        return self.intern(NumSwitch(attr, bounds, children, absent),
                           ("num", attr, bounds, children, absent))

    def str_switch(self, attr: str, entries: tuple[Entry, ...], decided: Decided) -> int:
        """One branch per string the entries name, one for any other, one for absent.

        Entries that do not test `attr` are the same in every branch, and an
        entry that only ever holds for the values it names is only placed in
        those branches: this keeps a switch over thousands of teams linear.
        """
        untouched: list[Entry] = []
        everywhere: list[tuple[int, Cond, dict[Scalar, Cond]]] = []
        only: dict[Scalar, list[Entry]] = {}
        other: list[Entry] = []
        absent: list[Entry] = []
        values: set[Scalar] = set()
        for pos, cond in entries:
            mine = [a for a in atoms(cond) if a.attr == attr]
            if not mine:
                untouched.append((pos, cond))
                continue
            named = {v for a in mine for v in constants(a)}
            values |= named
            own = {v: settle(cond, attr, v) for v in named}
            rest = settle(cond, attr, OTHER)
            gone = settle(cond, attr, None)
            if gone != FALSE:
                absent.append((pos, gone))
            if rest == FALSE and not any(isinstance(a, Match) for a in mine):
                for value, specialised in own.items():
                    if specialised != FALSE:
                        only.setdefault(value, []).append((pos, specialised))
            else:
                everywhere.append((pos, cond, own))
                other.append((pos, rest))

        def for_value(value: Scalar) -> Iterator[Entry]:
            for pos, cond, own in everywhere:
                if value in own:
                    yield pos, own[value]
                else:
                    yield pos, settle(cond, attr, value)

        def child(extra: Sequence[Entry]) -> int:
            merged = sorted([*untouched, *extra], key=_position)  # two sorted runs: one merge
            return self.node(self.normalize(merged, decided))

        cases = {}
        for value in sorted(values, key=str):
            specific = sorted([*for_value(value), *only.get(value, [])], key=lambda e: e[0])
            cases[value] = child(specific)
        other_child, absent_child = child(other), child(absent)
        distinct = {c for c in cases.values() if c != other_child}
        if not distinct and absent_child == other_child:
            return other_child
        kept = {str(v): c for v, c in cases.items() if c != other_child}
        return self.intern(StrSwitch(attr, kept, other_child, absent_child),
                           ("str", attr, tuple(sorted(kept.items())), other_child, absent_child))


def representatives(bounds: tuple[float, ...]) -> list[float]:
    """One value from each class the bounds cut the number line into, in order."""
    if not bounds:
        return [0.0]
    values = [bounds[0] - 1.0]
    for i, bound in enumerate(bounds):
        values.append(bound)
        values.append((bound + bounds[i + 1]) / 2 if i + 1 < len(bounds) else bound + 1.0)
    return values
