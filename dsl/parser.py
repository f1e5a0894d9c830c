"""Text to syntax tree: one cached lark LALR parser behind `parse`.

No lark type leaves this module and its helpers. Syntax errors are
collected, not raised: on each one the parser recovers (`dsl.recovery`), so a
file with three mistakes gets three diagnostics. Errors that follow another
within a few tokens are taken to be its echo and not reported, as yacc does.

`parse_partial` keeps what the errors left whole: every declaration no error
fell inside (and, of a route, every rule no error fell inside), with the parts
it dropped described (`dsl.dropped`) so that later passes can tell what they
may be missing. `parse` is for the formatter: no tree at all unless it is whole.
"""

from __future__ import annotations

import contextvars
import functools
import os
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from dsl.lark_loader import load  # first: it imports lark, without interegular

# isort: split
from lark import Lark, Token, Transformer, Tree
from lark.exceptions import UnexpectedInput

from dsl import ast
from dsl.diagnostics import Diagnostic, error, sort_key
from dsl.dropped import Dropped, describe, gaps, keep_whole, within
from dsl.lark_speedups import tune
from dsl.record import Record
from dsl.recovery import (
    CLOSERS,
    DECLARATION_SHAPES,
    KEYWORD_TYPES,
    MAX_ERRORS,
    OPENERS,
    Recovery,
    Session,
    span_of,
    start_of,
    starts_declaration,
)
from dsl.span import Span

MAX_DEPTH = 100  # nesting of conditions and values; deeper is refused, not recursed into
_N = TypeVar("_N", ast.ListValue, ast.MapValue, ast.Call, ast.And, ast.Or, ast.Not)
_WORD_BEFORE = re.compile(r"([A-Za-z_][\w.-]*)\s*\Z")
class Parsed(Record):
    """What `parse_partial` makes of a file: the declarations that parsed whole."""

    module: ast.Module
    diagnostics: tuple[Diagnostic, ...]
    dropped: tuple[Dropped, ...]


_session: contextvars.ContextVar[Session] = contextvars.ContextVar("gwc_parse_session")


def _on_token(token: Token) -> Token:
    session = _session.get()
    if token.type in OPENERS:
        start = token.start_pos or 0
        word = _WORD_BEFORE.search(session.text, max(0, start - 80), start)
        session.open_brackets.append(token)
        session.opened_by.append(word.group(1) if word else "")
    elif token.type in CLOSERS:
        if session.open_brackets and OPENERS[session.open_brackets[-1].type] == token.type:
            session.open_brackets.pop()
            session.opened_by.pop()
    elif token.type == "COMMENT":
        session.comments.append(ast.Comment(span_of(session.file, token), str(token)))
    elif token.type == "BAD_STRING":
        session.last_error_at = token.end_pos
        session.points.append(start_of(token))
        session.diagnostics.append(error(
            "GW003", "unterminated string", span_of(session.file, token),
            help='close the string with `"` before the end of the line'))
    return token


def _on_name(token: Token) -> Token:
    """A top-level keyword read as a name inside a block that was never closed."""
    kind = KEYWORD_TYPES.get(token) if token in DECLARATION_SHAPES else None
    if kind is not None:
        session = _session.get()
        if session.open_brackets and starts_declaration(session.text, token):
            return Token.new_borrow_pos(kind, token, token)
    return token


@functools.cache
def _grammar() -> str:
    with open(os.path.join(os.path.dirname(__file__), "grammar.lark"), encoding="utf-8") as f:
        return f.read()


@functools.cache
def _plain() -> Lark:
    """The parser without callbacks: a lexer with no side effects."""
    return load(_grammar(), "plain", start="module")


def _parser(tuned: bool = True) -> Lark:
    """The parser, built once; `tuned=False` is lark's own, for tests to compare with."""
    return _built(tuned)  # one cache key however it is called


@functools.cache
def _built(tuned: bool) -> Lark:
    """The parser, built once; `tuned=False` is lark's own, for tests to compare with.

    Built without lark's strict mode, whose checks need interegular loaded
    (see `dsl.lark_loader`); `tests/dsl/test_parser.py` builds the grammar in
    strict mode, so no conflict or terminal collision goes unnoticed.
    """
    watched = (*OPENERS, *CLOSERS, "COMMENT", "BAD_STRING")
    callbacks: dict[str, Callable[[Token], Token]] = dict.fromkeys(watched, _on_token)
    callbacks["NAME"] = _on_name
    parser = load(_grammar(), "parser", start="module", maybe_placeholders=True,
                  lexer_callbacks=callbacks, transformer=_BUILD)
    return tune(parser) if tuned else parser


def _tokens_between(text: str, start: int, end: int) -> int:
    """How many tokens lie in `text[start:end]`, to tell an echo from a new error."""
    try:
        return sum(1 for _ in _plain().lex(text[start:end]))
    except UnexpectedInput:
        return len(text[start:end].split())


_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(.*)", re.S)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}


def unescape(raw: str) -> str:
    """The value of a string token. Escapes other than these three are kept as
    written, so that regular expressions such as `"^gpt-\\d"` read naturally."""
    if "\\" not in raw:
        return raw
    return re.sub(r'\\(.)', lambda m: _ESCAPES.get(m.group(1), m.group(0)), raw)


class _Build(Transformer[Token, ast.Module]):
    """Builds `dsl.ast` inside the parser, one reduction at a time.

    lark calls these methods as it reduces (its tree-less LALR mode), so no
    intermediate tree is built and nothing recurses. A node's span runs from
    its first child's start to its last child's end; brackets are kept as
    tokens in the grammar so that blocks and lists span them. Edges are never
    placeholders, except in the two rules that say so.
    """

    @property
    def file(self) -> str:
        return _session.get().file

    def span(self, children: list[Any]) -> Span:
        """From the first child's start to the last child's end (each a token or a node)."""
        a, b = children[0], children[-1]
        if type(a) is not Token:
            a = a.span
        if type(b) is not Token:
            b = b.span
        return Span(self.file, a.line, a.column, b.end_line, b.end_column)

    def tokenspan_of(self, token: Token) -> Span:
        return span_of(self.file, token)

    def nest(self, node: _N, children: list[Any], flattened: Any = None) -> _N:
        """Record how deeply `node` nests; `flattened` is an `and`/`or` whose items
        it took over, so that a long chain of `and` stays one level deep."""
        depths = _session.get().depth
        depth = 1 + max((depths[id(c)][0] for c in children if id(c) in depths), default=0)
        if flattened is not None and id(flattened) in depths:
            depth = max(depth, depths[id(flattened)][0])
        depths[id(node)] = (depth, node)
        if depth == MAX_DEPTH + 1:  # the lowest node too deep in its part of the tree
            _session.get().too_deep.append(node.span)
        return node

    # declarations
    def module(self, c: list[Any]) -> ast.Module:
        return ast.Module(self.file, tuple(c))

    def import_decl(self, c: list[Any]) -> ast.Import:
        return ast.Import(self.span(c), c[1])

    def named_decl(self, c: list[Any]) -> ast.NamedDecl:
        return ast.NamedDecl(self.span(c), str(c[0]), self.name(c[1]), c[2])

    def unnamed_decl(self, c: list[Any]) -> ast.UnnamedDecl:
        return ast.UnnamedDecl(self.span(c), str(c[0]), c[1])

    def route_decl(self, c: list[Any]) -> ast.RouteDecl:
        return ast.RouteDecl(self.span(c), tuple(c[2:-1]))

    def cache_decl(self, c: list[Any]) -> ast.CacheDecl:
        return ast.CacheDecl(self.span(c), c[2], c[3])

    def limit_decl(self, c: list[Any]) -> ast.LimitDecl:
        return ast.LimitDecl(self.span(c), str(c[0]), c[1], c[3], c[4])

    def guard_decl(self, c: list[Any]) -> ast.GuardDecl:
        return ast.GuardDecl(self.span(c), self.name(c[1]), c[3], c[4])

    def test_decl(self, c: list[Any]) -> ast.TestDecl:
        return ast.TestDecl(self.span(c), c[1], c[2])

    def per_subject(self, c: list[Any]) -> ast.Subject:
        end = c[4] if c[4] is not None else c[1]  # `per meta["feature"]` or `per team`
        return ast.Subject(self.span([c[0], end]), "per", str(c[1]), c[3])

    def global_subject(self, c: list[Any]) -> ast.Subject:
        return ast.Subject(self.span(c), "global", "", None)

    def one_subject(self, c: list[Any]) -> ast.Subject:
        return ast.Subject(self.span(c), "one", str(c[0]), c[1])

    def when_rule(self, c: list[Any]) -> ast.Rule:
        return ast.Rule(self.span([c[0], c[3][-1]]), c[1], tuple(c[3]))

    def otherwise_rule(self, c: list[Any]) -> ast.Rule:
        return ast.Rule(self.span([c[0], c[2][-1]]), None, tuple(c[2]))

    def targets(self, c: list[Any]) -> list[ast.Target]:
        return c

    def named_target(self, c: list[Any]) -> ast.ModelTarget:
        return ast.ModelTarget(self.span(c), str(c[0]))

    def requested_target(self, c: list[Any]) -> ast.Requested:
        return ast.Requested(self.span(c))

    def deny_target(self, c: list[Any]) -> ast.Deny:
        return ast.Deny(self.span(c), c[1])

    # members
    def body(self, c: list[Any]) -> ast.Body:
        return ast.Body(self.span(c), tuple(c[1:-1]))

    def attr(self, c: list[Any]) -> ast.Attribute:
        return ast.Attribute(self.span(c), self.name(c[0]), c[1])

    def nested(self, c: list[Any]) -> ast.Nested:
        return ast.Nested(self.span(c), self.name(c[0]), c[1])

    # values
    def name(self, token: Token) -> ast.Ident:
        return ast.Ident(self.tokenspan_of(token), str(token))

    def ident(self, c: list[Any]) -> ast.Ident:
        return self.name(c[0])

    def quantity(self, c: list[Any]) -> ast.Quantity:
        return self.quantity_token(c[0])

    def quantity_token(self, token: Token) -> ast.Quantity:
        number, suffix = _QUANTITY.fullmatch(str(token)).groups()  # type: ignore[union-attr]
        return ast.Quantity(self.tokenspan_of(token), number, suffix)

    def money(self, c: list[Any]) -> ast.Money:
        return self.money_token(c[0])

    def money_token(self, token: Token) -> ast.Money:
        number, suffix = _QUANTITY.fullmatch(str(token)[1:]).groups()  # type: ignore[union-attr]
        return ast.Money(self.tokenspan_of(token), number, suffix)

    def price(self, c: list[Any]) -> ast.Price:
        return ast.Price(self.span(c), self.money_token(c[0]), self.quantity_token(c[1]))

    def string(self, c: list[Any]) -> ast.Str:
        raw = str(c[0])
        body = raw[1:-1] if c[0].type == "STRING" else raw[1:]
        return ast.Str(self.span(c), unescape(body), raw)

    def true(self, c: list[Any]) -> ast.Bool:
        return ast.Bool(self.span(c), True)

    def false(self, c: list[Any]) -> ast.Bool:
        return ast.Bool(self.span(c), False)

    def range_value(self, c: list[Any]) -> ast.Range:
        return ast.Range(self.span(c), c[0], c[1])

    def rate(self, c: list[Any]) -> ast.Rate:
        return ast.Rate(self.span(c), c[0], self.name(c[2]))

    def weighted(self, c: list[Any]) -> ast.Weighted:
        return ast.Weighted(self.span(c), self.name(c[0]), self.quantity_token(c[1]))

    def list_value(self, c: list[Any]) -> ast.ListValue:
        items = [x for x in c[1:-1] if x is not None]
        return self.nest(ast.ListValue(self.span(c), tuple(items)), items)

    def map_value(self, c: list[Any]) -> ast.MapValue:
        pairs = [x for x in c[1:-1] if x is not None]
        return self.nest(ast.MapValue(self.span(c), tuple(pairs)), [p.value for p in pairs])

    def pair(self, c: list[Any]) -> ast.Pair:
        return ast.Pair(self.span(c), c[0], c[1])

    def call(self, c: list[Any]) -> ast.Call:
        args = [x for x in c[2:-1] if x is not None]
        return self.nest(ast.Call(self.span(c), self.name(c[0]), tuple(args)), args)

    # conditions
    def subject_ref(self, c: list[Any]) -> ast.AttrRef:
        end = c[3] if c[3] is not None else c[0]  # `header["x"]` or a plain name
        return ast.AttrRef(self.span([c[0], end]), str(c[0]), c[2])

    def paren(self, c: list[Any]) -> ast.Cond:
        return c[1]  # type: ignore[no-any-return]

    def or_cond(self, c: list[Any]) -> ast.Or:
        left, right = c[0], c[2]
        if isinstance(left, ast.Or):
            return self.nest(ast.Or(self.span(c), (*left.items, right)), [right], left)
        return self.nest(ast.Or(self.span(c), (left, right)), [left, right])

    def and_cond(self, c: list[Any]) -> ast.And:
        left, right = c[0], c[2]
        if isinstance(left, ast.And):
            return self.nest(ast.And(self.span(c), (*left.items, right)), [right], left)
        return self.nest(ast.And(self.span(c), (left, right)), [left, right])

    def not_cond(self, c: list[Any]) -> ast.Not:
        return self.nest(ast.Not(self.span(c), c[1]), [c[1]])

    def compare(self, c: list[Any]) -> ast.Compare:
        return ast.Compare(self.span(c), c[0], str(c[1]), c[2])

    def in_test(self, c: list[Any]) -> ast.InTest:
        return ast.InTest(self.span(c), c[0], c[2], False)

    def not_in_test(self, c: list[Any]) -> ast.InTest:
        return ast.InTest(self.span(c), c[0], c[3], True)

    def matches_test(self, c: list[Any]) -> ast.Matches:
        return ast.Matches(self.span(c), c[0], c[2])

    def truth_test(self, c: list[Any]) -> ast.Truth:
        return ast.Truth(self.span(c), c[0])


_BUILD = _Build()  # stateless: what one parse gathers lives in its `Session`


def decode(data: bytes, file: str) -> tuple[str | None, list[Diagnostic]]:
    """Source bytes to text; a file that is not UTF-8 is one diagnostic, not a crash."""
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        return None, [error("GW004", f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x})",
                            Span.point(file, line, column),
                            help="save the file as UTF-8")]


def parse(text: str, file: str) -> tuple[ast.Module | None, list[Diagnostic]]:
    """Parse one file. The module is None whenever there are syntax errors."""
    parsed = parse_partial(text, file)
    if parsed.diagnostics:
        return None, list(parsed.diagnostics)
    return parsed.module, []


def parse_partial(text: str, file: str, *, tuned: bool = True) -> Parsed:
    """Parse one file, keeping every declaration the syntax errors left whole.

    A declaration an error fell inside (or a block left unclosed) is dropped;
    of a route, only the rules an error fell inside are. What was dropped,
    tokens skipped between declarations included, is listed in `dropped`.
    """
    session = Session(file, text)
    recovery = Recovery(session, text, _tokens_between)
    reset = _session.set(session)
    decls: list[ast.Decl] = []
    try:
        module = cast(ast.Module, _parser(tuned).parse(text, on_error=recovery))
        decls = list(module.decls)
    except UnexpectedInput as exc:  # given up on: keep the declarations finished by then
        state = getattr(exc.interactive_parser, "parser_state", None)
        decls = list(_salvaged(state.value_stack if state is not None else []))
        token = getattr(exc, "token", None)
        session.points.append(start_of(token) if token is not None and token.line is not None
                              else (max(1, exc.line), max(1, exc.column)))
    except Exception:
        if not session.diagnostics:  # a recovered parse may build odd nodes; a clean one may not
            raise
        session.points.append((1, 1))
    finally:
        _session.reset(reset)
    diagnostics = session.diagnostics
    if recovery.reported >= MAX_ERRORS or recovery.seen > MAX_ERRORS * 10:
        diagnostics.sort(key=sort_key)
        diagnostics.append(error("GW009", f"too many syntax errors; stopped after {MAX_ERRORS}",
                                 diagnostics[-1].span, help="fix these and run again"))
    deep = sorted(session.too_deep)
    points = sorted([*session.points, *((s.line, s.column) for s in deep)])
    if not points:
        return Parsed(ast.Module(file, tuple(decls), tuple(session.comments)), (), ())
    kept, broken = keep_whole(decls, points)
    for span in broken:  # one GW005 for each part dropped for nesting too deep
        inside = [d for d in deep if within((d.line, d.column), span)]
        if inside:
            diagnostics.append(error("GW005", f"nested more than {MAX_DEPTH} levels deep",
                                     inside[0], help="split the condition or value into "
                                                     "simpler parts"))
    diagnostics.sort(key=sort_key)
    lines = text.split("\n")
    eof = (len(lines), len(lines[-1]) + 2)
    spans = [(span, False) for span in broken]
    spans += [(span, True) for span in gaps(file, [d.span for d in decls], points, (1, 0), eof)]
    dropped = tuple(describe(text, span, gap) for span, gap in sorted(spans))
    return Parsed(ast.Module(file, tuple(kept), tuple(session.comments)), tuple(diagnostics),
                  dropped)


def _salvaged(values: list[Any]) -> Iterable[ast.Decl]:
    """The finished declarations on the stack of a parse that was given up on."""
    for value in values:
        if isinstance(value, ast.Decl):
            yield value
        elif isinstance(value, Tree) and str(value.data).startswith("__module"):
            yield from (c for c in value.children if isinstance(c, ast.Decl))
        else:
            return


def parse_bytes(data: bytes, file: str) -> tuple[ast.Module | None, list[Diagnostic]]:
    text, diagnostics = decode(data, file)
    if text is None:
        return None, diagnostics
    return parse(text, file)

