"""Text to syntax tree: one cached lark LALR parser behind `parse`.

No lark type leaves this module. Syntax errors are collected, not raised: on
each one the parser recovers (feeding the token a slip most likely left out,
or else dropping the token it could not take), so a file with three mistakes
gets three diagnostics. Errors that follow another within a few tokens are
taken to be its echo and not reported, as yacc does.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from dsl import ast
from dsl.diagnostics import Diagnostic, error, sort_key
from dsl.span import Span
from dsl.syntax_errors import (
    DECLARATIONS,
    KEYWORDS,
    common_mistake,
    describe_expected,
    found,
)

MAX_ERRORS = 50  # past this many syntax errors a file is not worth reading further
MAX_DEPTH = 100  # nesting of conditions and values; deeper is refused, not recursed into
ECHO_TOKENS = 3  # an error within this many tokens of the last one is its echo

OPENERS = {"LBRACE": "RBRACE", "LPAR": "RPAR", "LSQB": "RSQB"}
CLOSERS = {"RBRACE": "}", "RPAR": ")", "RSQB": "]"}
# Tokens a slip most often leaves out, tried in this order when recovering.
DECLARATION_WORDS = {KEYWORDS[k] for k in DECLARATIONS} - {"retry", "breaker"}  # these nest
_WORD_BEFORE = re.compile(r"([A-Za-z_][\w.-]*)\s*\Z")
INSERTIONS = (("EQUAL", "="), ("ARROW", "->"), ("COMMA", ","), ("RBRACE", "}"),
              ("RPAR", ")"), ("RSQB", "]"), ("NAME", "_"), ("STRING", '""'))


@dataclass
class _Session:
    """What the lexer callbacks gather during one parse."""

    file: str
    comments: list[ast.Comment] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    open_brackets: list[Token] = field(default_factory=list)
    last_error_at: int | None = None  # where the last error ended, as a text offset


_session: contextvars.ContextVar[_Session] = contextvars.ContextVar("gwc_parse_session")


def _span(file: str, item: Any) -> Span:
    return Span(file, item.line, item.column, item.end_line, item.end_column)


def _on_token(token: Token) -> Token:
    session = _session.get()
    if token.type.startswith("__"):  # white space, which lark hands to callbacks too
        return token
    if token.type in OPENERS:
        session.open_brackets.append(token)
    elif token.type in CLOSERS:
        if session.open_brackets and OPENERS[session.open_brackets[-1].type] == token.type:
            session.open_brackets.pop()
    elif token.type == "COMMENT":
        session.comments.append(ast.Comment(_span(session.file, token), str(token)))
    elif token.type == "BAD_STRING":
        session.last_error_at = token.end_pos
        session.diagnostics.append(error(
            "GW003", "unterminated string", _span(session.file, token),
            help='close the string with `"` before the end of the line'))
    return token


@functools.cache
def _grammar() -> str:
    return resources.files("dsl").joinpath("grammar.lark").read_text(encoding="utf-8")


@functools.cache
def _plain() -> Lark:
    """The parser without callbacks: its terminal names, and a lexer with no side effects."""
    return Lark(_grammar(), start="module", parser="lalr", cache=True)


@functools.cache
def _parser() -> Lark:
    callbacks: dict[str, Callable[[Token], Token]] = {t.name: _on_token for t in _plain().terminals}
    return Lark(_grammar(), start="module", parser="lalr", strict=True, propagate_positions=True,
                maybe_placeholders=True, cache=True, lexer_callbacks=callbacks)


def _tokens_between(text: str, start: int, end: int) -> int:
    """How many tokens lie in `text[start:end]`, to tell an echo from a new error."""
    try:
        return sum(1 for _ in _plain().lex(text[start:end]))
    except UnexpectedInput:
        return len(text[start:end].split())


class _Recovery:
    """lark's `on_error`: report the error, then put the parser back on its feet."""

    def __init__(self, session: _Session, text: str) -> None:
        self.session = session
        self.text = text
        self.reported = 0

    def report(self, diagnostic: Diagnostic, start: int, end: int) -> bool:
        """Record unless it echoes the last error; False once there are too many.

        `start` and `end` are the text offsets of what the parser choked on.
        """
        session = self.session
        last, session.last_error_at = session.last_error_at, end
        if last is not None and _tokens_between(self.text, last, start) < ECHO_TOKENS:
            return True
        if self.reported >= MAX_ERRORS:
            return False
        self.reported += 1
        session.diagnostics.append(diagnostic)
        return True

    def __call__(self, exc: UnexpectedInput) -> bool:
        if isinstance(exc, UnexpectedCharacters):
            char = self.text[exc.pos_in_stream]
            shown = char if char.isprintable() else f"\\u{ord(char):04x}"
            span = Span.point(self.session.file, exc.line, exc.column)
            return self.report(error("GW002", f"unexpected character '{shown}'", span,
                                     help="remove it, or put it inside a string"),
                               exc.pos_in_stream, exc.pos_in_stream + 1)
        if not isinstance(exc, UnexpectedToken):
            return False
        if exc.token.type == "$END":
            return self.at_end(exc)
        return self.in_the_middle(exc)

    def in_the_middle(self, exc: UnexpectedToken) -> bool:
        token, parser = exc.token, exc.interactive_parser
        expected = set(exc.expected)
        where = (token.start_pos or 0, token.end_pos or 0)
        span = _span(self.session.file, token)
        mistake = common_mistake(token.type, str(token), expected)
        unclosed = self.unclosed_before_declaration(token)
        if unclosed is not None:
            opener, keyword = unclosed
            keep_going = self.report(error(
                "GW006", f"unclosed '{opener}': '{keyword}' starts before its '}}'",
                _span(self.session.file, opener), help="add the missing '}'"), *where)
        elif mistake:
            keep_going = self.report(error(mistake.code, mistake.message, span, help=mistake.help),
                                     *where)
            if mistake.replacement:
                parser.feed_token(Token.new_borrow_pos(*mistake.replacement, token))
                return keep_going
        else:
            what = found(token.type, token)
            keep_going = self.report(error(
                "GW001", f"expected {describe_expected(expected)}, found {what}", span), *where)
        for kind, text in INSERTIONS:
            if kind not in expected:
                continue
            trial = parser.copy()
            try:
                trial.feed_token(Token.new_borrow_pos(kind, text, token))
                trial.feed_token(token)
            except UnexpectedInput:
                continue
            exc.interactive_parser.parser_state = trial.parser_state
            break
        return keep_going

    def unclosed_before_declaration(self, token: Token) -> tuple[Token, str] | None:
        """A block left open where the next declaration begins.

        Either the declaration's keyword is the unexpected token, or, since
        inside a block the keyword reads as a name, it opened what looks like
        a nested block (`route {` inside a model).
        """
        brackets = self.session.open_brackets
        if token.type in DECLARATIONS and brackets and brackets[-1].type == "LBRACE":
            return brackets[-1], str(token)
        for outer, inner in itertools.pairwise(brackets):
            if outer.type == inner.type == "LBRACE":
                name = _WORD_BEFORE.search(self.text, 0, inner.start_pos or 0)
                if name is not None and name.group(1) in DECLARATION_WORDS:
                    return outer, name.group(1)
        return None

    def at_end(self, exc: UnexpectedToken) -> bool:
        session, parser = self.session, exc.interactive_parser
        if session.open_brackets:
            opener = session.open_brackets[-1]
            closer = CLOSERS[OPENERS[opener.type]]
            reported = self.report(error(
                "GW006", f"unclosed '{opener}': the file ends before its '{closer}'",
                _span(session.file, opener), help=f"add the missing '{closer}'"),
                len(self.text), len(self.text))
        else:
            lines = self.text.split("\n")
            end = Span.point(session.file, len(lines), len(lines[-1]) + 1)
            reported = self.report(error(
                "GW001", f"expected {describe_expected(set(exc.expected))}, "
                         "found the end of the file", end), len(self.text), len(self.text))
        for _ in range(len(session.open_brackets) + MAX_DEPTH):
            choices = parser.choices()
            if "$END" in choices:
                break
            closer = next((c for c in CLOSERS if c in choices), None)
            if closer is None:
                return False
            parser.feed_token(Token.new_borrow_pos(closer, CLOSERS[closer], exc.token))
        return reported


_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(.*)", re.S)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}


def unescape(raw: str) -> str:
    """The value of a string token. Escapes other than these three are kept as
    written, so that regular expressions such as `"^gpt-\\d"` read naturally."""
    return re.sub(r'\\(.)', lambda m: _ESCAPES.get(m.group(1), m.group(0)), raw)


@v_args(meta=True)
class _Build(Transformer_NonRecursive):
    """lark's parse tree to `dsl.ast`, bottom-up and without recursion."""

    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file
        self.depth: dict[int, int] = {}
        self.too_deep: Span | None = None

    def span(self, meta: Any) -> Span:
        return _span(self.file, meta)

    def nest(self, node: Any, children: list[Any]) -> Any:
        depth = 1 + max((self.depth.get(id(c), 0) for c in children), default=0)
        self.depth[id(node)] = depth
        if depth > MAX_DEPTH and self.too_deep is None:
            self.too_deep = node.span
        return node

    # declarations
    def module(self, meta: Any, children: list[Any]) -> ast.Module:
        return ast.Module(self.file, tuple(children))

    def import_decl(self, meta: Any, c: list[Any]) -> ast.Import:
        return ast.Import(self.span(meta), c[1])

    def named_decl(self, meta: Any, c: list[Any]) -> ast.NamedDecl:
        return ast.NamedDecl(self.span(meta), str(c[0]), self.name(c[1]), c[2])

    def unnamed_decl(self, meta: Any, c: list[Any]) -> ast.UnnamedDecl:
        return ast.UnnamedDecl(self.span(meta), str(c[0]), c[1])

    def route_decl(self, meta: Any, c: list[Any]) -> ast.RouteDecl:
        return ast.RouteDecl(self.span(meta), tuple(c[1:]))

    def cache_decl(self, meta: Any, c: list[Any]) -> ast.CacheDecl:
        return ast.CacheDecl(self.span(meta), c[2], c[3])

    def limit_decl(self, meta: Any, c: list[Any]) -> ast.LimitDecl:
        return ast.LimitDecl(self.span(meta), str(c[0]), c[1], c[3], c[4])

    def test_decl(self, meta: Any, c: list[Any]) -> ast.TestDecl:
        return ast.TestDecl(self.span(meta), c[1], c[2])

    def per_subject(self, meta: Any, c: list[Any]) -> ast.Subject:
        return ast.Subject(self.span(meta), "per", str(c[1]), None)

    def global_subject(self, meta: Any, c: list[Any]) -> ast.Subject:
        return ast.Subject(self.span(meta), "global", "", None)

    def one_subject(self, meta: Any, c: list[Any]) -> ast.Subject:
        return ast.Subject(self.span(meta), "one", str(c[0]), c[1])

    def when_rule(self, meta: Any, c: list[Any]) -> ast.Rule:
        return ast.Rule(self.span(meta), c[1], c[3])

    def otherwise_rule(self, meta: Any, c: list[Any]) -> ast.Rule:
        return ast.Rule(self.span(meta), None, c[2])

    def targets(self, meta: Any, c: list[Any]) -> tuple[ast.Target, ...]:
        return tuple(c)

    def named_target(self, meta: Any, c: list[Any]) -> ast.ModelTarget:
        return ast.ModelTarget(self.span(meta), str(c[0]))

    def requested_target(self, meta: Any, c: list[Any]) -> ast.Requested:
        return ast.Requested(self.span(meta))

    def deny_target(self, meta: Any, c: list[Any]) -> ast.Deny:
        return ast.Deny(self.span(meta), c[1])

    # members
    def body(self, meta: Any, c: list[Any]) -> ast.Body:
        return ast.Body(self.span(meta), tuple(c))

    def attr(self, meta: Any, c: list[Any]) -> ast.Attribute:
        return ast.Attribute(self.span(meta), self.name(c[0]), c[1])

    def nested(self, meta: Any, c: list[Any]) -> ast.Nested:
        return ast.Nested(self.span(meta), self.name(c[0]), c[1])

    # values
    def name(self, token: Token) -> ast.Ident:
        return ast.Ident(_span(self.file, token), str(token))

    def ident(self, meta: Any, c: list[Any]) -> ast.Ident:
        return self.name(c[0])

    def quantity(self, meta: Any, c: list[Any]) -> ast.Quantity:
        return self.quantity_token(c[0])

    def quantity_token(self, token: Token) -> ast.Quantity:
        number, suffix = _QUANTITY.fullmatch(str(token)).groups()  # type: ignore[union-attr]
        return ast.Quantity(_span(self.file, token), number, suffix)

    def money(self, meta: Any, c: list[Any]) -> ast.Money:
        return self.money_token(c[0])

    def money_token(self, token: Token) -> ast.Money:
        number, suffix = _QUANTITY.fullmatch(str(token)[1:]).groups()  # type: ignore[union-attr]
        return ast.Money(_span(self.file, token), number, suffix)

    def price(self, meta: Any, c: list[Any]) -> ast.Price:
        return ast.Price(self.span(meta), self.money_token(c[0]), self.quantity_token(c[1]))

    def string(self, meta: Any, c: list[Any]) -> ast.Str:
        raw = str(c[0])
        body = raw[1:-1] if c[0].type == "STRING" else raw[1:]
        return ast.Str(self.span(meta), unescape(body), raw)

    def true(self, meta: Any, c: list[Any]) -> ast.Bool:
        return ast.Bool(self.span(meta), True)

    def false(self, meta: Any, c: list[Any]) -> ast.Bool:
        return ast.Bool(self.span(meta), False)

    def range(self, meta: Any, c: list[Any]) -> ast.Range:
        return ast.Range(self.span(meta), c[0], c[1])

    def rate(self, meta: Any, c: list[Any]) -> ast.Rate:
        return ast.Rate(self.span(meta), c[0], self.name(c[2]))

    def weighted(self, meta: Any, c: list[Any]) -> ast.Weighted:
        return ast.Weighted(self.span(meta), self.name(c[0]), self.quantity_token(c[1]))

    def list(self, meta: Any, c: list[Any]) -> ast.ListValue:
        items = [x for x in c if x is not None]
        return self.nest(ast.ListValue(self.span(meta), tuple(items)), items)

    def map(self, meta: Any, c: list[Any]) -> ast.MapValue:
        pairs = [x for x in c if x is not None]
        return self.nest(ast.MapValue(self.span(meta), tuple(pairs)), [p.value for p in pairs])

    def pair(self, meta: Any, c: list[Any]) -> ast.Pair:
        return ast.Pair(self.span(meta), c[0], c[1])

    def call(self, meta: Any, c: list[Any]) -> ast.Call:
        args = [x for x in c[1:] if x is not None]
        return self.nest(ast.Call(self.span(meta), self.name(c[0]), tuple(args)), args)

    # conditions
    def subject_ref(self, meta: Any, c: list[Any]) -> ast.AttrRef:
        return ast.AttrRef(self.span(meta), str(c[0]), c[1])

    def or_cond(self, meta: Any, c: list[Any]) -> ast.Or:
        left, right = c[0], c[2]
        items = (*left.items, right) if isinstance(left, ast.Or) else (left, right)
        return self.nest(ast.Or(self.span(meta), items), [left, right])

    def and_cond(self, meta: Any, c: list[Any]) -> ast.And:
        left, right = c[0], c[2]
        items = (*left.items, right) if isinstance(left, ast.And) else (left, right)
        return self.nest(ast.And(self.span(meta), items), [left, right])

    def not_cond(self, meta: Any, c: list[Any]) -> ast.Not:
        return self.nest(ast.Not(self.span(meta), c[1]), [c[1]])

    def compare(self, meta: Any, c: list[Any]) -> ast.Compare:
        return ast.Compare(self.span(meta), c[0], str(c[1]), c[2])

    def in_test(self, meta: Any, c: list[Any]) -> ast.InTest:
        return ast.InTest(self.span(meta), c[0], c[2], False)

    def not_in_test(self, meta: Any, c: list[Any]) -> ast.InTest:
        return ast.InTest(self.span(meta), c[0], c[3], True)

    def matches_test(self, meta: Any, c: list[Any]) -> ast.Matches:
        return ast.Matches(self.span(meta), c[0], c[2])

    def truth_test(self, meta: Any, c: list[Any]) -> ast.Truth:
        return ast.Truth(self.span(meta), c[0])


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
    session = _Session(file)
    recovery = _Recovery(session, text)
    reset = _session.set(session)
    try:
        tree = _parser().parse(text, on_error=recovery)
    except UnexpectedInput:
        tree = None
    finally:
        _session.reset(reset)
    diagnostics = sorted(session.diagnostics, key=sort_key)
    if recovery.reported >= MAX_ERRORS:
        diagnostics.append(error("GW009", f"too many syntax errors; stopped after {MAX_ERRORS}",
                                 diagnostics[-1].span, help="fix these and run again"))
    if diagnostics or tree is None:
        return None, diagnostics
    build = _Build(file)
    module: ast.Module = build.transform(tree)
    if build.too_deep is not None:
        return None, [error("GW005", f"nested more than {MAX_DEPTH} levels deep", build.too_deep,
                            help="split the condition or value into simpler parts")]
    return ast.Module(file, module.decls, tuple(session.comments)), []


def parse_bytes(data: bytes, file: str) -> tuple[ast.Module | None, list[Diagnostic]]:
    text, diagnostics = decode(data, file)
    if text is None:
        return None, diagnostics
    return parse(text, file)

