"""What a partial parse left out: the parts syntax errors broke, and what they may have declared.

`dsl.parser.parse_partial` records where every error fell. Here those points
decide which declarations (and, of a route, which rules) are kept whole, and
each dropped part is read for the names it may have declared, so that the
passes after parsing do not report as missing what a syntax error took.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable

from dsl import ast
from dsl.record import Record
from dsl.span import Span
from dsl.syntax_errors import KEYWORDS

Point = tuple[int, int]  # (line, column)
_NAME = r"[A-Za-z_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?"
_KEYWORDS = frozenset(KEYWORDS.values())
_HEADER = re.compile(r"[ \t]*([^\s{}]+)[ \t]+([^\s{}]+)[ \t]*\{")  # `model fast {`, misspelt or not
_TARGET_KIND = re.compile(r"[ \t]*(provider|model|pool|notify|guard|route)\b(?![ \t]*=)")
_GUARD = re.compile(rf"[ \t]*guard[ \t]+({_NAME})[ \t]+when\b")  # `guard pii when ... {`
_ROUTE = re.compile(r"\broute[ \t]*\{")
_IMPORT = re.compile(r"\bimport\b")
_FIRST_WORD = re.compile(r"[A-Za-z_][\w.-]*")
_IS_NAME = re.compile(_NAME)
_COMMENT = re.compile(r"#[^\n]*")


class Dropped(Record):
    """A part of a file that a syntax error broke, left out of the tree, and what
    it may have declared: `names` (of providers, models, pools, notifies, guards), and
    `kinds`, the kinds it may have declared a name of that cannot be read
    (`model {`), with `route` if it may have held the route, and `*` if it may
    have declared anything at all (a broken `import`, a garbled header).
    """

    span: Span
    names: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()


def describe(text: str, span: Span, gap: bool) -> Dropped:
    """What a dropped part may have declared, read off its text line by line.

    A line `WORD NAME {` is a declaration header, its keyword misspelt or not:
    it may have declared NAME, and so may `guard NAME when ...`. A line that
    starts with `model` (or `provider`, `pool`, `notify`, `guard`, `route`) in no
    such shape may have declared a name of that kind that cannot be read;
    `route {` anywhere may have been the route.
    A stretch between declarations (`gap`) whose first word is no keyword, and
    any `import`, may have declared anything.
    """
    lines = text.split("\n")[span.line - 1:span.end_line]
    lines[-1] = lines[-1][:span.end_column - 1]
    lines[0] = lines[0][span.column - 1:]
    part = _COMMENT.sub("", "\n".join(lines))
    names: set[str] = set()
    kinds: set[str] = set()
    for line in part.split("\n"):
        header = _HEADER.match(line)
        if header is not None and header.group(1) not in ("retry", "breaker", "given", "expect"):
            if _IS_NAME.fullmatch(header.group(2)):
                names.add(header.group(2))
            else:
                kinds.add(header.group(1))
            continue
        guard = _GUARD.match(line)
        if guard is not None:
            names.add(guard.group(1))
            continue
        kind = _TARGET_KIND.match(line)
        if kind is not None:
            kinds.add(kind.group(1))
    if _ROUTE.search(part):
        kinds.add("route")
    first = _FIRST_WORD.search(part)
    if _IMPORT.search(part) or (gap and first is not None and first.group() not in _KEYWORDS
                                and not names):
        kinds.add("*")
    return Dropped(span, frozenset(names), frozenset(kinds))


def within(point: Point, span: Span) -> bool:
    return (span.line, span.column) <= point <= (span.end_line, span.end_column)


def any_within(points: list[Point], span: Span) -> bool:
    i = bisect.bisect_left(points, (span.line, span.column))
    return i < len(points) and points[i] <= (span.end_line, span.end_column)


def keep_whole(decls: Iterable[ast.Decl], points: list[Point]) -> tuple[list[ast.Decl],
                                                                        list[Span]]:
    """The declarations no error fell inside, and the spans of what was dropped.

    A route is kept whatever fell between its rules (tokens skipped, its `}`
    supplied by recovery): only the rules an error fell inside are dropped,
    and the stretches between rules where errors fell are listed as dropped.
    """
    kept: list[ast.Decl] = []
    broken: list[Span] = []
    for decl in decls:
        if not any_within(points, decl.span):
            kept.append(decl)
        elif isinstance(decl, ast.RouteDecl):
            rules = []
            for rule in decl.rules:
                if any_within(points, rule.span):
                    broken.append(rule.span)
                else:
                    rules.append(rule)
            kept.append(ast.RouteDecl(decl.span, tuple(rules)))
            span = decl.span
            broken += gaps(span.file, [r.span for r in decl.rules], points,
                            (span.line, span.column), (span.end_line, span.end_column))
        else:
            broken.append(decl.span)
    return kept, broken


def gaps(file: str, spans: list[Span], points: list[Point], low: Point,
          high: Point) -> list[Span]:
    """The stretches between `spans`, from `low` to `high`, where errors fell: tokens
    the parser skipped, declarations it gave up on."""
    starts = [low, *((s.end_line, s.end_column) for s in spans)]
    ends = [*((s.line, s.column) for s in spans), high]
    gaps = []
    for start, end in zip(starts, ends, strict=True):
        i = bisect.bisect_right(points, start)
        if i < len(points) and points[i] < end:
            gaps.append(Span(file, *start, *end))
    return gaps
