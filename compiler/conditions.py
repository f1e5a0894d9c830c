"""Conditions after checking: a small boolean algebra over request attributes.

Both the reference interpreter (`holds`) and the graph builder (`restrict`)
read conditions in this form, so they cannot disagree about what one means.

Every comparison with an absent attribute is false, `!=` and `not in`
included: `header["x"] != "a"` does not hold for a request without that
header. `not (...)` is the way to say "unless".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import re2  # type: ignore[import-untyped]

from compiler.needles import needles
from compiler.request import Request, Scalar

# ------------------------------------------------------------------ atoms


@dataclass(frozen=True, slots=True)
class Cmp:
    attr: str
    op: str  # == != < <= > >=
    value: Scalar
    kind: Literal["cmp"] = "cmp"


@dataclass(frozen=True, slots=True)
class In:
    attr: str
    values: frozenset[Scalar]
    negated: bool
    kind: Literal["in"] = "in"


@dataclass(frozen=True, slots=True)
class Match:
    """`attr matches "re"`: the one test the analyses cannot see inside."""

    attr: str
    pattern: str
    kind: Literal["match"] = "match"


@dataclass(frozen=True, slots=True)
class Truth:
    attr: str
    kind: Literal["truth"] = "truth"


@dataclass(frozen=True, slots=True)
class All:
    items: tuple[Cond, ...]
    kind: Literal["all"] = "all"


@dataclass(frozen=True, slots=True)
class Any_:
    items: tuple[Cond, ...]
    kind: Literal["any"] = "any"


@dataclass(frozen=True, slots=True)
class Neg:
    item: Cond
    kind: Literal["not"] = "not"


@dataclass(frozen=True, slots=True)
class Const:
    value: bool
    kind: Literal["const"] = "const"


TRUE = Const(True)
FALSE = Const(False)

Atom = Cmp | In | Match | Truth
Cond = Cmp | In | Match | Truth | All | Any_ | Neg | Const

_COMPARE: dict[str, Callable[[Scalar, Scalar], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,  # type: ignore[operator]
    "<=": lambda a, b: a <= b,  # type: ignore[operator]
    ">": lambda a, b: a > b,  # type: ignore[operator]
    ">=": lambda a, b: a >= b,  # type: ignore[operator]
}


_QUIET = re2.Options()
_QUIET.log_errors = False  # a bad pattern is the compiler's diagnostic, not a log line


class PatternError(ValueError):
    """A pattern RE2 cannot run: its syntax, or a construct it has no linear time for."""


@functools.lru_cache(maxsize=4096)
def regex(pattern: str) -> Any:
    """A `matches` pattern on RE2, whose time is linear in the text: the attributes it
    reads (headers, metadata) are the client's, and Python's `re` backtracks."""
    try:
        return re2.compile(pattern, options=_QUIET)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "not a pattern"
        raise PatternError(reason.decode() if isinstance(reason, bytes) else str(reason)) \
            from None


@functools.lru_cache(maxsize=4096)
def searcher(pattern: str) -> Callable[[str], bool]:
    """Whether `pattern` is found in a text, RE2 asked only when the text holds one of
    the pattern's needles (compiler/needles.py): google-re2's binding lets go of the GIL
    on every search, which in a server beside other threads costs tens of µs."""
    compiled = regex(pattern)
    found = needles([pattern])
    if found is None:
        return lambda text: compiled.search(text) is not None

    def search(text: str) -> bool:
        folded = text.casefold()
        return any(n in folded for n in found) and compiled.search(text) is not None
    return search


def atom_holds(atom: Atom, value: Scalar | None) -> bool:
    """One atom on one attribute's value (None when the request lacks it)."""
    if value is None:
        return False
    if isinstance(atom, Cmp):
        return _COMPARE[atom.op](value, atom.value)
    if isinstance(atom, In):
        return (value in atom.values) != atom.negated
    if isinstance(atom, Match):
        return isinstance(value, str) and searcher(atom.pattern)(value)
    return value is True


def holds(cond: Cond, request: Request) -> bool:
    """The reference meaning of a condition: read it, top to bottom."""
    if isinstance(cond, Const):
        return cond.value
    if isinstance(cond, All):
        return all(holds(c, request) for c in cond.items)
    if isinstance(cond, Any_):
        return any(holds(c, request) for c in cond.items)
    if isinstance(cond, Neg):
        return not holds(cond.item, request)
    return atom_holds(cond, request.get(cond.attr))


# ------------------------------------------------------ simplification


def all_of(items: list[Cond]) -> Cond:
    flat: list[Cond] = []
    for item in items:
        kind = type(item)
        if kind is Const:  # `item == FALSE` and `item == TRUE`, without dataclass equality
            if not item.value:  # type: ignore[union-attr]
                return FALSE
        elif kind is All:
            flat.extend(item.items)  # type: ignore[union-attr]
        else:
            flat.append(item)
    if not flat:
        return TRUE
    return flat[0] if len(flat) == 1 else All(tuple(flat))


def any_of(items: list[Cond]) -> Cond:
    flat: list[Cond] = []
    for item in items:
        kind = type(item)
        if kind is Const:
            if item.value:  # type: ignore[union-attr]
                return TRUE
        elif kind is Any_:
            flat.extend(item.items)  # type: ignore[union-attr]
        else:
            flat.append(item)
    if not flat:
        return FALSE
    return flat[0] if len(flat) == 1 else Any_(tuple(flat))


def negate(item: Cond) -> Cond:
    if isinstance(item, Const):
        return FALSE if item.value else TRUE
    if isinstance(item, Neg):
        return item.item
    return Neg(item)


def restrict(cond: Cond, decide: Callable[[Atom], bool | None]) -> Cond:
    """`cond` with every atom `decide` can settle replaced by its truth value.

    This is how the graph builder specialises the remaining rules to one branch
    of a switch: `decide` answers for the atoms on the attribute switched on.
    """
    if isinstance(cond, Const):
        return cond
    if isinstance(cond, All):
        return all_of([restrict(c, decide) for c in cond.items])
    if isinstance(cond, Any_):
        return any_of([restrict(c, decide) for c in cond.items])
    if isinstance(cond, Neg):
        return negate(restrict(cond.item, decide))
    verdict = decide(cond)
    return cond if verdict is None else Const(verdict)


OTHER: object = object()  # a string no rule names: equal to none, regex still unknown


def settle(cond: Cond, attr: str, value: object) -> Cond:
    """`restrict(cond, decide)` where `decide` knows that `attr` is `value`
    (None for absent, `OTHER` for a string no atom names), written out.

    The graph builder specialises every rule once per value it switches on
    (about 280,000 times for 10,000 rules); the general `restrict`, with a
    closure called per atom, was a fifth of compiling. This gives the very
    same conditions: the same settling, the same flattening by `all_of`,
    `any_of` and `negate`.
    """
    kind = type(cond)
    if kind is All or kind is Any_:
        return (all_of if kind is All else any_of)(
            [settle(c, attr, value) for c in cond.items])  # type: ignore[union-attr]
    if kind is Neg:
        return negate(settle(cond.item, attr, value))  # type: ignore[union-attr]
    if kind is Const or cond.attr != attr:  # type: ignore[union-attr]
        return cond
    if value is None:
        return FALSE
    if kind is Cmp:  # `atom_holds`, inlined
        return TRUE if _COMPARE[cond.op](value, cond.value) else FALSE  # type: ignore[arg-type,union-attr]
    if kind is In:
        return TRUE if (value in cond.values) != cond.negated else FALSE  # type: ignore[union-attr]
    if kind is Match:
        if value is OTHER:
            return cond
        return TRUE if isinstance(value, str) and \
            searcher(cond.pattern)(value) else FALSE  # type: ignore[union-attr]
    return TRUE if value is True else FALSE


def atoms(cond: Cond) -> list[Atom]:
    if isinstance(cond, Const):
        return []
    if isinstance(cond, (All, Any_)):
        return [a for c in cond.items for a in atoms(c)]
    if isinstance(cond, Neg):
        return atoms(cond.item)
    return [cond]


def constants(atom: Atom) -> list[Scalar]:
    """The values an atom compares its attribute with."""
    if isinstance(atom, Cmp):
        return [atom.value]
    if isinstance(atom, In):
        return list(atom.values)
    return []
