"""The typed syntax tree of a `.gw` file.

Nodes are frozen dataclasses. Each carries its `span`, which is left out of
equality and repr so that two parses of the same policy compare equal however
they were laid out: that is what the formatter's round-trip property is
stated in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dsl.span import Span

# ----------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Quantity:
    """A number as written, with its suffix: `3`, `0.92`, `100k`, `250ms`, `80%`, `5xx`."""

    span: Span = field(compare=False, repr=False)
    number: str
    suffix: str

    @property
    def text(self) -> str:
        return self.number + self.suffix


@dataclass(frozen=True, slots=True)
class Money:
    span: Span = field(compare=False, repr=False)
    amount: str
    suffix: str

    @property
    def text(self) -> str:
        return f"${self.amount}{self.suffix}"


@dataclass(frozen=True, slots=True)
class Price:
    """Money per a count of tokens: `$2.50/1M`."""

    span: Span = field(compare=False, repr=False)
    money: Money
    per: Quantity


@dataclass(frozen=True, slots=True)
class Str:
    """A string's value; `raw` keeps it as written, for the formatter."""

    span: Span = field(compare=False, repr=False)
    value: str
    raw: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Ident:
    span: Span = field(compare=False, repr=False)
    name: str


@dataclass(frozen=True, slots=True)
class Bool:
    span: Span = field(compare=False, repr=False)
    value: bool


@dataclass(frozen=True, slots=True)
class Range:
    span: Span = field(compare=False, repr=False)
    low: Scalar
    high: Scalar


@dataclass(frozen=True, slots=True)
class Rate:
    """An amount per period: `60 per minute`, `$500 per month`."""

    span: Span = field(compare=False, repr=False)
    amount: Scalar
    unit: Ident


@dataclass(frozen=True, slots=True)
class Weighted:
    span: Span = field(compare=False, repr=False)
    name: Ident
    weight: Quantity


@dataclass(frozen=True, slots=True)
class ListValue:
    span: Span = field(compare=False, repr=False)
    items: tuple[Value | Weighted, ...]


@dataclass(frozen=True, slots=True)
class Pair:
    span: Span = field(compare=False, repr=False)
    key: Str
    value: Value


@dataclass(frozen=True, slots=True)
class MapValue:
    span: Span = field(compare=False, repr=False)
    pairs: tuple[Pair, ...]


@dataclass(frozen=True, slots=True)
class Call:
    """`env("NAME")`, `downgrade(gpt-4o-mini)`."""

    span: Span = field(compare=False, repr=False)
    name: Ident
    args: tuple[Value, ...]


Scalar = Quantity | Money | Str | Ident | Bool
Value = Quantity | Money | Str | Ident | Bool | Price | Range | Rate | ListValue | MapValue | Call


# ------------------------------------------------------------- conditions


@dataclass(frozen=True, slots=True)
class AttrRef:
    """A request attribute: `team`, `budget.team`, `header["x-feature"]`."""

    span: Span = field(compare=False, repr=False)
    name: str
    key: Str | None


@dataclass(frozen=True, slots=True)
class Compare:
    span: Span = field(compare=False, repr=False)
    attr: AttrRef
    op: str
    value: Scalar


@dataclass(frozen=True, slots=True)
class InTest:
    span: Span = field(compare=False, repr=False)
    attr: AttrRef
    values: ListValue
    negated: bool


@dataclass(frozen=True, slots=True)
class Matches:
    span: Span = field(compare=False, repr=False)
    attr: AttrRef
    pattern: Str


@dataclass(frozen=True, slots=True)
class Truth:
    span: Span = field(compare=False, repr=False)
    attr: AttrRef


@dataclass(frozen=True, slots=True)
class And:
    span: Span = field(compare=False, repr=False)
    items: tuple[Cond, ...]


@dataclass(frozen=True, slots=True)
class Or:
    span: Span = field(compare=False, repr=False)
    items: tuple[Cond, ...]


@dataclass(frozen=True, slots=True)
class Not:
    span: Span = field(compare=False, repr=False)
    item: Cond


Cond = Compare | InTest | Matches | Truth | And | Or | Not


# ---------------------------------------------------------------- members


@dataclass(frozen=True, slots=True)
class Attribute:
    span: Span = field(compare=False, repr=False)
    name: Ident
    value: Value


@dataclass(frozen=True, slots=True)
class Body:
    """A `{ ... }` of attributes and nested blocks; its span covers the braces."""

    span: Span = field(compare=False, repr=False)
    members: tuple[Attribute | Nested, ...]

    def attributes(self) -> dict[str, Attribute]:
        """The attributes by name; where one is repeated the last wins (and is flagged)."""
        return {m.name.name: m for m in self.members if isinstance(m, Attribute)}

    def blocks(self) -> dict[str, Nested]:
        return {m.name.name: m for m in self.members if isinstance(m, Nested)}


@dataclass(frozen=True, slots=True)
class Nested:
    """A block inside a block: `retry {}` in a provider, `given {}` in a test."""

    span: Span = field(compare=False, repr=False)
    name: Ident
    body: Body


# ----------------------------------------------------------- declarations


@dataclass(frozen=True, slots=True)
class Import:
    span: Span = field(compare=False, repr=False)
    path: Str


@dataclass(frozen=True, slots=True)
class NamedDecl:
    """`provider`, `model`, `pool` and `notify`: declarations others refer to by name."""

    span: Span = field(compare=False, repr=False)
    kind: str
    name: Ident
    body: Body


@dataclass(frozen=True, slots=True)
class UnnamedDecl:
    """`retry`, `breaker` and `auth`: one of each per policy."""

    span: Span = field(compare=False, repr=False)
    kind: str
    body: Body


@dataclass(frozen=True, slots=True)
class ModelTarget:
    span: Span = field(compare=False, repr=False)
    name: str


@dataclass(frozen=True, slots=True)
class Requested:
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Deny:
    span: Span = field(compare=False, repr=False)
    message: Str


Target = ModelTarget | Requested | Deny


@dataclass(frozen=True, slots=True)
class Rule:
    """`when COND -> targets`, or `otherwise -> targets` when `cond` is None."""

    span: Span = field(compare=False, repr=False)
    cond: Cond | None
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class RouteDecl:
    span: Span = field(compare=False, repr=False)
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class CacheDecl:
    span: Span = field(compare=False, repr=False)
    cond: Cond | None
    body: Body


@dataclass(frozen=True, slots=True)
class Subject:
    """`per team`, `global`, or one identity such as `team "research"`."""

    span: Span = field(compare=False, repr=False)
    kind: str  # "per", "global" or "one"
    dimension: str
    value: Str | None


@dataclass(frozen=True, slots=True)
class LimitDecl:
    """`budget` and `quota` share their shape: a subject, an optional `when`, a body."""

    span: Span = field(compare=False, repr=False)
    kind: str
    subject: Subject
    cond: Cond | None
    body: Body


@dataclass(frozen=True, slots=True)
class TestDecl:
    span: Span = field(compare=False, repr=False)
    name: Str
    body: Body


Decl = Import | NamedDecl | UnnamedDecl | RouteDecl | CacheDecl | LimitDecl | TestDecl


@dataclass(frozen=True, slots=True)
class Comment:
    span: Span = field(compare=False, repr=False)
    text: str


@dataclass(frozen=True, slots=True)
class Module:
    """One parsed file. Comments sit beside the tree, for the formatter."""

    file: str = field(default="", compare=False)
    decls: tuple[Decl, ...] = ()
    comments: tuple[Comment, ...] = field(default=(), compare=False)
