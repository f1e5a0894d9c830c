"""Sets of requests as boxes: one domain per attribute, and what a box says as `where`.

The product walk narrows a box at every switch it passes, so a box is always
what the tests on its path allow, attribute by attribute: a string attribute
is a finite set of values or every value but some, a number a union of
intervals, a boolean one or both truth values; each may or may not be
absent. `matches` cannot be folded into a domain over values no policy names,
so a box keeps those verdicts aside (`regexes`) and is then not exact.

`where` is a box as the conjunction of interface.md (`attr`, `op`, `values`),
and `holds` tests a request against one, for `gwc diff` and for any other
tool reading its JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from compiler import units
from compiler.conditions import regex
from compiler.request import ENDPOINTS, PERCENT_ATTRIBUTES, Request, attr_kind, getter

INF = math.inf


@dataclass(frozen=True, slots=True)
class Strs:
    """String values: exactly `values` when it is not None, else any but `excluded`."""

    values: frozenset[str] | None
    excluded: frozenset[str] = frozenset()
    absent: bool = False

    @property
    def empty(self) -> bool:
        return self.values is not None and not self.values and not self.absent

    def allows(self, value: str) -> bool:
        return value in self.values if self.values is not None else value not in self.excluded

    def only(self, chosen: frozenset[str]) -> Strs:
        """The values of `chosen` this allows, present."""
        return Strs(frozenset(v for v in chosen if self.allows(v)))

    def without(self, named: frozenset[str]) -> Strs:
        """The present values this allows that are not in `named`."""
        if self.values is not None:
            return Strs(self.values - named)
        return Strs(None, self.excluded | named)

    def union(self, other: Strs) -> Strs:
        absent = self.absent or other.absent
        if self.values is not None and other.values is not None:
            return Strs(self.values | other.values, absent=absent)
        if self.values is None and other.values is None:
            return Strs(None, self.excluded & other.excluded, absent)
        finite, open_ = (self, other) if self.values is not None else (other, self)
        return Strs(None, open_.excluded - (finite.values or frozenset()), absent)


Interval = tuple[float, bool, float, bool]  # low, low included, high, high included


@dataclass(frozen=True, slots=True)
class Nums:
    """Numbers: disjoint sorted intervals, and whether absent is allowed."""

    intervals: tuple[Interval, ...]
    absent: bool = False

    @property
    def empty(self) -> bool:
        return not self.intervals and not self.absent

    def meet(self, piece: Interval) -> Nums:
        out = [m for i in self.intervals if (m := _meet(i, piece)) is not None]
        return Nums(tuple(out))

    def union(self, other: Nums) -> Nums:
        return Nums(_merged([*self.intervals, *other.intervals]), self.absent or other.absent)


def _meet(a: Interval, b: Interval) -> Interval | None:
    low, low_in = max((a[0], not a[1]), (b[0], not b[1]))
    high, high_in = min((a[2], a[3]), (b[2], b[3]))
    low_in = not low_in
    if low > high or (low == high and not (low_in and high_in)):
        return None
    return (low, low_in, high, high_in)


def _merged(intervals: list[Interval]) -> tuple[Interval, ...]:
    out: list[Interval] = []
    for piece in sorted(intervals, key=lambda i: (i[0], not i[1])):
        if out:
            low, low_in, high, high_in = out[-1]
            if piece[0] < high or (piece[0] == high and (high_in or piece[1])):
                if (piece[2], piece[3]) > (high, high_in):
                    out[-1] = (low, low_in, piece[2], piece[3])
                continue
        out.append(piece)
    return tuple(out)


Bools = frozenset[bool]
Domain = Strs | Nums | Bools
EVERY_NUMBER: Interval = (-INF, False, INF, False)


def full(attr: str) -> Domain:
    """What a request can hold for an attribute. A `Request` always has an endpoint
    (one of four), a token count and both booleans, so those are never absent."""
    kind = attr_kind(attr)
    if kind == "bool":
        return frozenset({True, False})
    if kind == "num":
        return Nums((EVERY_NUMBER,), absent=attr != "tokens")
    if attr == "endpoint":
        return Strs(frozenset(ENDPOINTS))
    return Strs(None, absent=True)


def is_empty(domain: Domain) -> bool:
    return not domain if isinstance(domain, frozenset) else domain.empty


def union(a: Domain, b: Domain) -> Domain:
    if isinstance(a, frozenset) and isinstance(b, frozenset):
        return a | b
    return a.union(b)  # type: ignore[union-attr,arg-type]


Regexes = tuple[tuple[str, str, bool], ...]  # (attr, pattern, verdict), sorted


@dataclass(frozen=True, slots=True)
class Box:
    """A set of requests: each attribute's domain (attributes not named are free)."""

    domains: tuple[tuple[str, Domain], ...] = ()
    regexes: Regexes = ()

    @property
    def exact(self) -> bool:
        return not self.regexes

    def get(self, attr: str) -> Domain:
        for name, domain in self.domains:
            if name == attr:
                return domain
        return full(attr)

    def having(self, attr: str, domain: Domain) -> Box:
        kept = tuple((n, d) for n, d in self.domains if n != attr)
        return replace(self, domains=tuple(sorted((*kept, (attr, domain)), key=_first)))

    def verdict(self, attr: str, pattern: str) -> bool | None:
        for a, p, v in self.regexes:
            if a == attr and p == pattern:
                return v
        return None

    def guessing(self, attr: str, pattern: str, verdict: bool) -> Box:
        return replace(self, regexes=tuple(sorted({*self.regexes, (attr, pattern, verdict)})))


def _first(item: tuple[str, Domain]) -> str:
    return item[0]


def merge(boxes: Sequence[Box]) -> list[Box]:
    """Fewer, larger boxes with the same union: boxes alike but for one attribute
    become one, that attribute's domains joined, until no two are alike so.

    The boxes a walk yields are disjoint, so the union is exact; numbers are
    joined only where the result still reads as one conjunction.
    """
    current = list(dict.fromkeys(boxes))
    changed = True
    while changed and len(current) > 1:
        changed = False
        attrs = sorted({n for b in current for n, _ in b.domains})
        for attr in attrs:
            groups: dict[Box, list[Domain]] = {}
            for box in current:
                rest = box.having(attr, full(attr))
                groups.setdefault(rest, []).append(box.get(attr))
            merged: list[Box] = []
            for rest, domains in groups.items():
                joined = _join(domains)
                merged += [rest.having(attr, d) for d in joined]
            if len(merged) < len(current):
                current, changed = merged, True
    return [_tidy(b) for b in current]


def _join(domains: list[Domain]) -> list[Domain]:
    """Domains of one attribute joined as far as each result stays one conjunction."""
    if not isinstance(domains[0], Nums):
        out: Domain = domains[0]
        for d in domains[1:]:
            out = union(out, d)
        return [out]
    total = Nums(())
    for d in domains:
        total = total.union(d)  # type: ignore[arg-type]
    return [total] if _readable(total) else list(dict.fromkeys(domains))


def _readable(nums: Nums) -> bool:
    return len(nums.intervals) <= 1 or _point_hole(nums.intervals) is not None


def _point_hole(intervals: tuple[Interval, ...]) -> float | None:
    """The one number missing, when the intervals are every number but one."""
    if len(intervals) != 2:
        return None
    (a_low, _, a_high, a_in), (b_low, b_in, b_high, _) = intervals
    if a_low == -INF and b_high == INF and a_high == b_low and not a_in and not b_in:
        return a_high
    return None


def _tidy(box: Box) -> Box:
    """Drop domains that say nothing: an attribute allowed all it can hold."""
    kept = tuple((n, d) for n, d in box.domains if d != full(n))
    return replace(box, domains=kept)


def pieces(box: Box) -> Iterator[Box]:
    """The box as conjunctions: absent split from present, intervals from each other."""
    options: list[list[tuple[str, Domain]]] = []
    for attr, domain in box.domains:
        if isinstance(domain, Strs) and domain.absent and domain != full(attr):
            present = replace(domain, absent=False)
            choices: list[tuple[str, Domain]] = [(attr, Strs(frozenset(), absent=True))]
            if not present.empty:
                choices.append((attr, present))
            options.append(choices)
        elif isinstance(domain, Nums) and domain != full(attr):
            parts: list[Nums] = [Nums(domain.intervals)] if _readable(Nums(domain.intervals)) \
                else [Nums((i,)) for i in domain.intervals]
            numbers: list[tuple[str, Domain]] = [(attr, p) for p in parts if p.intervals]
            if domain.absent:
                numbers.append((attr, Nums((), absent=True)))
            options.append(numbers)
        else:
            options.append([(attr, domain)])
    for choice in _product(options):
        yield _tidy(Box(tuple(choice), box.regexes))


def _product(options: list[list[tuple[str, Domain]]]) -> Iterator[list[tuple[str, Domain]]]:
    if not options:
        yield []
        return
    for head in options[0]:
        for rest in _product(options[1:]):
            yield [head, *rest]


# ------------------------------------------------------------ where and text


def spelled(attr: str) -> str:
    """An attribute key as a condition writes it: `header["x-feature"]`."""
    prefix, sep, key = attr.partition(":")
    return f'{prefix}["{key}"]' if sep else attr


def _key(spelling: str) -> str:
    if spelling.endswith('"]') and '["' in spelling:
        prefix, _, rest = spelling.partition('["')
        return f"{prefix}:{rest[:-2]}"
    return spelling


def where(box: Box) -> list[dict[str, Any]]:
    """A conjunctive piece of a box as clauses `{"attr", "op", "values"}`."""
    out: list[dict[str, Any]] = []
    for attr, domain in box.domains:
        name = spelled(attr)
        if isinstance(domain, frozenset):
            out.append({"attr": name, "op": "==", "values": sorted(domain)})
        elif isinstance(domain, Strs):
            if not domain.values and domain.absent:
                out.append({"attr": name, "op": "absent", "values": []})
            elif domain.values is not None:
                listed = sorted(domain.values)
                out.append({"attr": name, "op": "==" if len(listed) == 1 else "in",
                            "values": listed})
            elif domain.excluded:
                listed = sorted(domain.excluded)
                out.append({"attr": name, "op": "!=" if len(listed) == 1 else "not in",
                            "values": listed})
            else:
                out.append({"attr": name, "op": "present", "values": []})
        else:
            out += _num_clauses(name, domain)
    return out


def _num_clauses(name: str, nums: Nums) -> list[dict[str, Any]]:
    if not nums.intervals:
        return [{"attr": name, "op": "absent", "values": []}]
    hole = _point_hole(nums.intervals)
    if hole is not None:
        return [{"attr": name, "op": "!=", "values": [hole]}]
    low, low_in, high, high_in = nums.intervals[0]
    if low == high:
        return [{"attr": name, "op": "==", "values": [low]}]
    out = []
    if low > -INF:
        out.append({"attr": name, "op": ">=" if low_in else ">", "values": [low]})
    if high < INF:
        out.append({"attr": name, "op": "<=" if high_in else "<", "values": [high]})
    return out or [{"attr": name, "op": "present", "values": []}]


_TEXT_OPS = {"==": "=", "!=": "!=", "in": "in", "not in": "not in", "<": "<", "<=": "<=",
             ">": ">", ">=": ">="}


def as_text(clauses: list[dict[str, Any]]) -> str:
    """A class in words: `team in {legal, research} ∧ model = "smart" ∧ tokens > 100k`."""
    if not clauses:
        return "every request"
    parts = []
    for clause in clauses:
        attr, op, values = clause["attr"], clause["op"], clause["values"]
        if op in ("absent", "present"):
            parts.append(f"{attr} {op}")
            continue
        listed = op in ("in", "not in")
        shown = [_value(attr, v, quoted=not listed) for v in values]
        if listed:
            parts.append(f"{attr} {op} {{{', '.join(shown)}}}")
        else:
            parts.append(f"{attr} {_TEXT_OPS[op]} {shown[0]}")
    return " ∧ ".join(parts)


def _value(attr: str, value: Any, quoted: bool) -> str:
    """A value as the class's text shows it: strings quoted, except in a set's braces."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if quoted else value
    if attr in PERCENT_ATTRIBUTES:
        return f"{value * 100:g}%"
    if attr == "tokens":
        return units.format_count(value)
    return f"{value:g}"


def holds(clauses: Sequence[Mapping[str, Any]], request: Request) -> bool:
    """Whether a request is in the class a `where` conjunction describes.

    Comparisons with an absent attribute are false, `!=` and `not in` included,
    as in conditions; `absent` and `present` say which one a clause wants.
    """
    for clause in clauses:
        value = getter(_key(clause["attr"]))(request)
        op, values = clause["op"], clause["values"]
        if op == "absent":
            if value is not None:
                return False
            continue
        if value is None:
            return False
        if op == "present":
            continue
        if op == "in" or op == "==":
            ok = value in values
        elif op == "not in" or op == "!=":
            ok = value not in values
        else:
            bound = values[0]
            ok = {"<": value < bound, "<=": value <= bound, ">": value > bound,  # type: ignore[operator]
                  ">=": value >= bound}[op]  # type: ignore[operator]
        if not ok:
            return False
    return True


# ------------------------------------------------------------------ witness


def witness(box: Box, hints: Mapping[str, Sequence[str]]) -> Iterator[dict[str, Any]]:
    """Requests in the `--request` shape inside a conjunctive box, the likeliest first.

    One is enough for an exact box; where the box guesses `matches` verdicts,
    strings are tried from `hints` (the values the policies name, per attribute)
    until one satisfies them, and the caller keeps the first that changes plan.
    """
    fixed: dict[str, Any] = {}
    open_: dict[str, list[str]] = {}
    for attr, domain in box.domains:
        if isinstance(domain, frozenset):
            fixed[attr] = min(domain)
        elif isinstance(domain, Nums):
            if domain.intervals:
                fixed[attr] = _number(attr, domain.intervals[0])
        elif domain.values is not None:
            if domain.values:
                open_[attr] = sorted(domain.values)
        else:
            candidates = [*hints.get(attr, ()), "other"]
            candidates += [f"{c}-x" for c in candidates] + [f"x-{c}" for c in candidates]
            open_[attr] = [c for c in dict.fromkeys(candidates) if domain.allows(c)]
    for attr, pattern, verdict in box.regexes:
        if attr not in open_:
            open_[attr] = [c for c in dict.fromkeys([*hints.get(attr, ()), "other"])
                           if isinstance(box.get(attr), Strs)
                           and box.get(attr).allows(c)]  # type: ignore[union-attr]
        good = [c for c in open_[attr] if (regex(pattern).search(c) is not None) == verdict]
        open_[attr] = good + [c for c in open_[attr] if c not in good]
    rounds = max([len(c) for c in open_.values()] + [1])
    for i in range(min(rounds, 8)):
        chosen = dict(fixed)
        for attr, candidates in open_.items():
            if candidates:
                chosen[attr] = candidates[min(i, len(candidates) - 1)]
        yield _fields(chosen)


def _number(attr: str, interval: Interval) -> float:
    """A number inside an interval, just past a bound where it has one."""
    low, low_in, high, high_in = interval
    step = 0.01 if attr in PERCENT_ATTRIBUTES or attr == "temperature" else 1.0
    if low_in:
        return low
    if high_in and low == -INF:
        return high
    if low > -INF:
        value = low + step
        return value if value < high or (value == high and high_in) else (low + high) / 2
    if high < INF:
        return 0.0 if attr == "tokens" and high > 0 else high - step
    return 0.0


def _fields(chosen: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr, value in sorted(chosen.items()):
        prefix, sep, key = attr.partition(":")
        if sep:
            out.setdefault("headers" if prefix == "header" else "meta", {})[key] = value
        elif attr.startswith("budget."):
            out.setdefault("budget", {})[attr.removeprefix("budget.")] = value
        elif isinstance(value, float) and value.is_integer():
            out[attr] = int(value)
        else:
            out[attr] = value
    return out
