"""The canonical layout of a `.gw` file, comments kept.

The layout is decided by the tree, with two things taken from the source, as
gofmt does: whether a block was written on one line (it stays on one line
unless it holds a nested block), and where blank lines separate things (at
most one is kept). Within a block, consecutive attributes align their `=`;
within a route, rules align their `->`. Comments stay where they were: on
their own lines before the thing they precede, or at the end of its line.

Formatting is idempotent, and the formatted file parses to the same tree.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dsl import ast

INDENT = "  "
ALIGN_LIMIT = 60  # a rule's left side longer than this does not widen the others


# ------------------------------------------------------------------ values


def value(v: ast.Value | ast.Weighted) -> str:
    if isinstance(v, ast.Quantity | ast.Money):
        return v.text
    if isinstance(v, ast.Price):
        return f"{v.money.text}/{v.per.text}"
    if isinstance(v, ast.Str):
        return v.raw or _quote(v.value)
    if isinstance(v, ast.Ident):
        return v.name
    if isinstance(v, ast.Bool):
        return "true" if v.value else "false"
    if isinstance(v, ast.Range):
        return f"{value(v.low)}..{value(v.high)}"
    if isinstance(v, ast.Rate):
        return f"{value(v.amount)} per {v.unit.name}"
    if isinstance(v, ast.Weighted):
        return f"{v.name.name}: {v.weight.text}"
    if isinstance(v, ast.ListValue):
        return "[" + ", ".join(value(i) for i in v.items) + "]"
    if isinstance(v, ast.MapValue):
        if not v.pairs:
            return "{}"
        return "{ " + ", ".join(f"{value(p.key)}: {value(p.value)}" for p in v.pairs) + " }"
    return f"{v.name.name}(" + ", ".join(value(a) for a in v.args) + ")"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# -------------------------------------------------------------- conditions

_PRECEDENCE = {ast.Or: 1, ast.And: 2, ast.Not: 3}


def cond(c: ast.Cond) -> str:
    if isinstance(c, ast.Or | ast.And):
        word = " or " if isinstance(c, ast.Or) else " and "
        return word.join(_operand(item, c) for item in c.items)
    if isinstance(c, ast.Not):
        return "not " + _operand(c.item, c)
    subject = c.attr.name + (f"[{value(c.attr.key)}]" if c.attr.key else "")
    if isinstance(c, ast.Compare):
        return f"{subject} {c.op} {value(c.value)}"
    if isinstance(c, ast.InTest):
        return f"{subject} {'not in' if c.negated else 'in'} {value(c.values)}"
    if isinstance(c, ast.Matches):
        return f"{subject} matches {value(c.pattern)}"
    return subject


def _operand(item: ast.Cond, parent: ast.Cond) -> str:
    """An operand, in parentheses where leaving them out would change the tree."""
    inner = _PRECEDENCE.get(type(item), 4)
    outer = _PRECEDENCE[type(parent)]
    text = cond(item)
    return f"({text})" if inner <= outer and inner < 3 else text


def target(t: ast.Target) -> str:
    if isinstance(t, ast.ModelTarget):
        return t.name
    if isinstance(t, ast.Requested):
        return "requested"
    return f"deny {value(t.message)}"


# ------------------------------------------------------------------ layout


@dataclass
class _Item:
    """One line-level element of a block: its source lines and how to print it."""

    start: int
    end: int
    render: Callable[[int], list[str]]  # indent level -> lines (the first unindented)
    key: str = ""  # the name to align on, for attributes and nested blocks
    multiline: bool = False


class Formatter:
    def __init__(self, module: ast.Module, text: str) -> None:
        self.lines = text.split("\n")
        self.comments = sorted(module.comments, key=lambda c: (c.span.line, c.span.column))
        self.taken = [False] * len(self.comments)
        self.module = module

    def take(self, first: int, last: int) -> list[ast.Comment]:
        found = []
        for i, comment in enumerate(self.comments):
            if not self.taken[i] and first <= comment.span.line <= last:
                self.taken[i] = True
                found.append(comment)
        return found

    def blank_between(self, after: int, before: int) -> bool:
        return any(not self.lines[n - 1].strip() for n in range(after + 1, before)
                   if 0 < n <= len(self.lines))

    def format(self) -> str:
        items = [self.decl_item(d) for d in self.module.decls]
        out = self.items(items, 0, 0, len(self.lines) + 1, top=True)
        return "\n".join(out).rstrip("\n") + "\n" if out else ""

    def items(self, items: list[_Item], level: int, opened: int, closes: int,
              top: bool = False) -> list[str]:
        """Lay out a block's items with their comments, blank lines and alignment."""
        pad = INDENT * level
        out: list[str] = []
        previous = opened
        width = 0
        run_start = 0
        for index, item in enumerate(items):
            leading = self.take(previous + 1, item.start - 1)
            if out and self.separated(items[index - 1], item, top):
                out.append("")
                run_start = index
            if index == run_start:
                width = self.run_width(items, index, top)
            for i, comment in enumerate(leading):
                out.append(pad + comment.text)
                following = leading[i + 1].span.line if i + 1 < len(leading) else item.start
                if self.blank_between(comment.span.line, following):
                    out.append("")
            inner = self.take(item.start + 1, item.end - 1) if not item.multiline else []
            out.extend(pad + c.text for c in inner)
            rendered = item.render(level)
            if item.key:
                rendered[0] = rendered[0].replace(item.key, item.key.ljust(width), 1)
            shares_line = index + 1 < len(items) and items[index + 1].start == item.end
            trailing = [] if shares_line else self.take(item.end, item.end)
            if trailing:
                rendered[-1] += "  " + " ".join(c.text for c in trailing)
            out.append(pad + rendered[0])
            out.extend(rendered[1:])
            previous = item.end
        rest = self.take(previous + 1, closes - 1)
        if rest and out and self.blank_between(previous, rest[0].span.line):
            out.append("")
        out.extend(pad + c.text for c in rest)
        return out

    def separated(self, a: _Item, b: _Item, top: bool) -> bool:
        """Whether a blank line goes between two neighbours: where the source had
        one, and at the top level around anything that spans lines."""
        first = min([b.start, *(c.span.line for c in self.comments
                                if a.end < c.span.line < b.start)])
        return self.blank_between(a.end, first) or (top and (a.multiline or b.multiline))

    def run_width(self, items: list[_Item], start: int, top: bool) -> int:
        """The widest key among the items from `start` up to the next blank line."""
        width = len(items[start].key)
        for a, b in itertools.pairwise(items[start:]):
            if self.separated(a, b, top):
                break
            width = max(width, len(b.key))
        return width

    def opening_comment(self, line: int, members: Sequence[Any]) -> str:
        """A comment after `{`, unless a member on the same line claims it."""
        if members and members[0].span.line == line:
            return ""
        found = self.take(line, line)
        return "".join("  " + c.text for c in found)

    # ----------------------------------------------------------- elements

    def body(self, b: ast.Body, head: str, level: int) -> list[str]:
        """`head { ... }`, on one line if it was and nothing nested forbids it."""
        one_line = b.span.line == b.span.end_line and \
            not any(isinstance(m, ast.Nested) for m in b.members)
        if not b.members and one_line:
            return [f"{head} {{}}"]
        if one_line:
            inside = "; ".join(f"{m.name.name} = {value(m.value)}"
                               for m in b.members if isinstance(m, ast.Attribute))
            return [f"{head} {{ {inside} }}"]
        opening = [f"{head} {{" + self.opening_comment(b.span.line, b.members)]
        members = [self.member_item(m) for m in b.members]
        inner = self.items(members, level + 1, b.span.line, b.span.end_line)
        return [*opening, *inner, INDENT * level + "}"]

    def member_item(self, m: ast.Attribute | ast.Nested) -> _Item:
        name = m.name.name
        if isinstance(m, ast.Attribute):
            return _Item(m.span.line, m.span.end_line,
                         lambda level: [f"{name} = {value(m.value)}"], key=name + " ")
        return _Item(m.span.line, m.span.end_line,
                     lambda level: self.body(m.body, name, level), key=name + " ",
                     multiline=m.span.line != m.span.end_line)

    def decl_item(self, d: ast.Decl) -> _Item:
        multiline = d.span.line != d.span.end_line
        if isinstance(d, ast.RouteDecl):
            return _Item(d.span.line, d.span.end_line, lambda level: self.route(d, level),
                         multiline=True)
        if isinstance(d, ast.Import):
            return _Item(d.span.line, d.span.end_line, lambda level: [f"import {value(d.path)}"])
        head = _head(d)
        return _Item(d.span.line, d.span.end_line, lambda level: self.body(d.body, head, level),
                     key="" if multiline else head + " ", multiline=multiline)

    def route(self, d: ast.RouteDecl, level: int) -> list[str]:
        lefts = [f"when {cond(r.cond)}" if r.cond is not None else "otherwise" for r in d.rules]
        width = max((len(x) for x in lefts if len(x) <= ALIGN_LIMIT), default=0)
        items = [
            _Item(r.span.line, r.span.end_line, _fixed(
                f"{left.ljust(width)} -> " + ", ".join(target(t) for t in r.targets)))
            for left, r in zip(lefts, d.rules, strict=True)
        ]
        opening = "route {" + self.opening_comment(d.span.line, d.rules)
        inner = self.items(items, level + 1, d.span.line, d.span.end_line)
        return [opening, *inner, INDENT * level + "}"]


def _fixed(line: str) -> Callable[[int], list[str]]:
    """A renderer for a line that reads the same at any indent."""
    return lambda level: [line]


def _head(d: ast.Decl) -> str:
    if isinstance(d, ast.NamedDecl):
        return f"{d.kind} {d.name.name}"
    if isinstance(d, ast.UnnamedDecl):
        return d.kind
    if isinstance(d, ast.CacheDecl):
        return "cache" + (f" when {cond(d.cond)}" if d.cond is not None else "")
    if isinstance(d, ast.LimitDecl):
        s = d.subject
        keyed = f"[{value(s.value)}]" if s.value else ""
        subject = {"per": f"per {s.dimension}{keyed}", "global": "global"}.get(
            s.kind, f"{s.dimension} {value(s.value) if s.value else ''}")
        return f"{d.kind} {subject}" + (f" when {cond(d.cond)}" if d.cond is not None else "")
    if isinstance(d, ast.GuardDecl):
        return f"guard {d.name.name}" + (f" when {cond(d.cond)}" if d.cond is not None else "")
    assert isinstance(d, ast.TestDecl)
    return f"test {value(d.name)}"


def format_module(module: ast.Module, text: str) -> str:
    return Formatter(module, text).format()
