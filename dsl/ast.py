"""The typed syntax tree of a `.gw` file.

Nodes are frozen records (`dsl.record`: dataclasses, made cheaply). Each
carries its `span`, which is left out of equality and repr so that two
parses of the same policy compare equal however they were laid out: that is
what the formatter's round-trip property is stated in.
"""

from __future__ import annotations

from dsl.record import Record, field
from dsl.span import Span

# ----------------------------------------------------------------- values


class Quantity(Record):
    """A number as written, with its suffix: `3`, `0.92`, `100k`, `250ms`, `80%`, `5xx`."""

    span: Span = field(compare=False, repr=False)
    number: str
    suffix: str

    @property
    def text(self) -> str:
        return self.number + self.suffix


class Money(Record):
    span: Span = field(compare=False, repr=False)
    amount: str
    suffix: str

    @property
    def text(self) -> str:
        return f"${self.amount}{self.suffix}"


class Price(Record):
    """Money per a count of tokens: `$2.50/1M`."""

    span: Span = field(compare=False, repr=False)
    money: Money
    per: Quantity


class Str(Record):
    """A string's value; `raw` keeps it as written, for the formatter."""

    span: Span = field(compare=False, repr=False)
    value: str
    raw: str = field(default="", compare=False)


class Ident(Record):
    span: Span = field(compare=False, repr=False)
    name: str


class Bool(Record):
    span: Span = field(compare=False, repr=False)
    value: bool


class Range(Record):
    span: Span = field(compare=False, repr=False)
    low: Scalar
    high: Scalar


class Rate(Record):
    """An amount per period: `60 per minute`, `$500 per month`."""

    span: Span = field(compare=False, repr=False)
    amount: Scalar
    unit: Ident


class Weighted(Record):
    span: Span = field(compare=False, repr=False)
    name: Ident
    weight: Quantity


class ListValue(Record):
    span: Span = field(compare=False, repr=False)
    items: tuple[Value | Weighted, ...]


class Pair(Record):
    span: Span = field(compare=False, repr=False)
    key: Str
    value: Value


class MapValue(Record):
    span: Span = field(compare=False, repr=False)
    pairs: tuple[Pair, ...]


class Call(Record):
    """`env("NAME")`, `downgrade(gpt-4o-mini)`."""

    span: Span = field(compare=False, repr=False)
    name: Ident
    args: tuple[Value, ...]


Scalar = Quantity | Money | Str | Ident | Bool
Value = Quantity | Money | Str | Ident | Bool | Price | Range | Rate | ListValue | MapValue | Call


# ------------------------------------------------------------- conditions


class AttrRef(Record):
    """A request attribute: `team`, `budget.team`, `header["x-feature"]`."""

    span: Span = field(compare=False, repr=False)
    name: str
    key: Str | None


class Compare(Record):
    span: Span = field(compare=False, repr=False)
    attr: AttrRef
    op: str
    value: Scalar


class InTest(Record):
    span: Span = field(compare=False, repr=False)
    attr: AttrRef
    values: ListValue
    negated: bool


class Matches(Record):
    span: Span = field(compare=False, repr=False)
    attr: AttrRef
    pattern: Str


class Truth(Record):
    span: Span = field(compare=False, repr=False)
    attr: AttrRef


class And(Record):
    span: Span = field(compare=False, repr=False)
    items: tuple[Cond, ...]


class Or(Record):
    span: Span = field(compare=False, repr=False)
    items: tuple[Cond, ...]


class Not(Record):
    span: Span = field(compare=False, repr=False)
    item: Cond


Cond = Compare | InTest | Matches | Truth | And | Or | Not


# ---------------------------------------------------------------- members


class Attribute(Record):
    span: Span = field(compare=False, repr=False)
    name: Ident
    value: Value


class Body(Record):
    """A `{ ... }` of attributes and nested blocks; its span covers the braces."""

    span: Span = field(compare=False, repr=False)
    members: tuple[Attribute | Nested, ...]

    def attributes(self) -> dict[str, Attribute]:
        """The attributes by name; where one is repeated the last wins (and is flagged)."""
        return {m.name.name: m for m in self.members if isinstance(m, Attribute)}

    def blocks(self) -> dict[str, Nested]:
        return {m.name.name: m for m in self.members if isinstance(m, Nested)}


class Nested(Record):
    """A block inside a block: `retry {}` in a provider, `given {}` in a test."""

    span: Span = field(compare=False, repr=False)
    name: Ident
    body: Body


# ----------------------------------------------------------- declarations


class Import(Record):
    span: Span = field(compare=False, repr=False)
    path: Str


class NamedDecl(Record):
    """`provider`, `model`, `pool` and `notify`: declarations others refer to by name."""

    span: Span = field(compare=False, repr=False)
    kind: str
    name: Ident
    body: Body


class UnnamedDecl(Record):
    """`retry`, `breaker` and `auth`: one of each per policy."""

    span: Span = field(compare=False, repr=False)
    kind: str
    body: Body


class ModelTarget(Record):
    span: Span = field(compare=False, repr=False)
    name: str


class Requested(Record):
    span: Span = field(compare=False, repr=False)


class Deny(Record):
    span: Span = field(compare=False, repr=False)
    message: Str


Target = ModelTarget | Requested | Deny


class Rule(Record):
    """`when COND -> targets`, or `otherwise -> targets` when `cond` is None."""

    span: Span = field(compare=False, repr=False)
    cond: Cond | None
    targets: tuple[Target, ...]


class RouteDecl(Record):
    span: Span = field(compare=False, repr=False)
    rules: tuple[Rule, ...]


class CacheDecl(Record):
    span: Span = field(compare=False, repr=False)
    cond: Cond | None
    body: Body


class Subject(Record):
    """`per team`, `per meta["feature"]`, `global`, or one identity such as
    `team "research"`."""

    span: Span = field(compare=False, repr=False)
    kind: str  # "per", "global" or "one"
    dimension: str
    value: Str | None  # the identity of "one"; the key of `per meta[...]`, `per header[...]`


class LimitDecl(Record):
    """`budget` and `quota` share their shape: a subject, an optional `when`, a body."""

    span: Span = field(compare=False, repr=False)
    kind: str
    subject: Subject
    cond: Cond | None
    body: Body


class GuardDecl(Record):
    """`guard NAME [when COND] { ... }`: checks on the text going in or out."""

    span: Span = field(compare=False, repr=False)
    name: Ident
    cond: Cond | None
    body: Body

    @property
    def header(self) -> Span:
        """From `guard` to its name: where a diagnostic about the whole guard points."""
        name = self.name.span
        return Span(self.span.file, self.span.line, self.span.column, name.end_line,
                    name.end_column)


class TestDecl(Record):
    span: Span = field(compare=False, repr=False)
    name: Str
    body: Body


Decl = Import | NamedDecl | UnnamedDecl | RouteDecl | CacheDecl | LimitDecl | GuardDecl | TestDecl


class Comment(Record):
    span: Span = field(compare=False, repr=False)
    text: str


class Module(Record):
    """One parsed file. Comments sit beside the tree, for the formatter."""

    file: str = field(default="", compare=False)
    decls: tuple[Decl, ...] = ()
    comments: tuple[Comment, ...] = field(default=(), compare=False)
