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
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar, cast

from lark import Lark, Token, Transformer
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
_N = TypeVar("_N", ast.ListValue, ast.MapValue, ast.Call, ast.And, ast.Or, ast.Not)
_WORD_BEFORE = re.compile(r"([A-Za-z_][\w.-]*)\s*\Z")
INSERTIONS = (("EQUAL", "="), ("ARROW", "->"), ("COMMA", ","), ("RBRACE", "}"),
              ("RPAR", ")"), ("RSQB", "]"), ("NAME", "_"), ("STRING", '""'))


@dataclass
class _Session:
    """What the lexer callbacks gather during one parse."""

    file: str
    text: str = ""
    comments: list[ast.Comment] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    open_brackets: list[Token] = field(default_factory=list)
    opened_by: list[str] = field(default_factory=list)  # the word before each open bracket
    depth: dict[int, int] = field(default_factory=dict)  # nesting of conditions and values
    too_deep: Span | None = None
    last_error_at: int | None = None  # where the last error ended, as a text offset


_session: contextvars.ContextVar[_Session] = contextvars.ContextVar("gwc_parse_session")


def _span(file: str, item: Any) -> Span:
    return Span(file, item.line, item.column, item.end_line, item.end_column)


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
    """The parser without callbacks: a lexer with no side effects."""
    return Lark(_grammar(), start="module", parser="lalr", cache=True)


@functools.cache
def _parser() -> Lark:
    watched = (*OPENERS, *CLOSERS, "COMMENT", "BAD_STRING")
    callbacks: dict[str, Callable[[Token], Token]] = dict.fromkeys(watched, _on_token)
    return Lark(_grammar(), start="module", parser="lalr", strict=True, maybe_placeholders=True,
                cache=True, lexer_callbacks=callbacks, transformer=_BUILD)


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
        self.seen = 0

    def report(self, diagnostic: Diagnostic, start: int, end: int) -> bool:
        """Record unless it echoes the last error; False once there are too many.

        `start` and `end` are the text offsets of what the parser choked on.
        """
        session = self.session
        self.seen += 1
        if self.seen > MAX_ERRORS * 10:  # mostly echoes by now: the file is not a policy
            return False
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
            position = exc.pos_in_stream or 0
            char = self.text[position]
            shown = char if char.isprintable() else f"\\u{ord(char):04x}"
            span = Span.point(self.session.file, exc.line, exc.column)
            return self.report(error("GW002", f"unexpected character '{shown}'", span,
                                     help="remove it, or put it inside a string"),
                               position, position + 1)
        if not isinstance(exc, UnexpectedToken):
            return False
        if exc.token.type == "$END":
            return self.at_end(exc)
        if exc.token.type in KEYWORDS and "NAME" in exc.expected:
            # Not an error: the lexer read a keyword from a state that could still
            # reduce into one where it starts a declaration (a string may end an
            # `import`), but where the parser landed, only a name fits.
            exc.interactive_parser.feed_token(Token.new_borrow_pos("NAME", exc.token, exc.token))
            return True
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
            wanted = describe_expected(expected)
            keep_going = self.report(error(
                "GW001", f"expected {wanted}, found {what}", span,
                help=f"put {wanted} here, or remove {what}"), *where)
        for kind, text in INSERTIONS:
            if kind not in expected:
                continue
            trial = parser.copy()  # type: ignore[no-untyped-call]
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
        brackets, words = self.session.open_brackets, self.session.opened_by
        if token.type in DECLARATIONS and brackets and brackets[-1].type == "LBRACE":
            return brackets[-1], str(token)
        for depth in range(1, len(brackets)):
            if brackets[depth - 1].type == brackets[depth].type == "LBRACE" and \
                    words[depth] in DECLARATION_WORDS:
                return brackets[depth - 1], words[depth]
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
                         "found the end of the file", end,
                help="the file ends in the middle of a declaration; finish or remove it"),
                len(self.text), len(self.text))
        for _ in range(len(session.open_brackets) + MAX_DEPTH):
            choices = parser.choices()  # type: ignore[no-untyped-call]
            if "$END" in choices:
                break
            missing = next((c for c in CLOSERS if c in choices), None)
            if missing is None:
                return False
            parser.feed_token(Token.new_borrow_pos(missing, CLOSERS[missing], exc.token))
        return reported


_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(.*)", re.S)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}


def unescape(raw: str) -> str:
    """The value of a string token. Escapes other than these three are kept as
    written, so that regular expressions such as `"^gpt-\\d"` read naturally."""
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

    def token_span(self, token: Token) -> Span:
        return _span(self.file, token)

    def nest(self, node: _N, children: list[Any]) -> _N:
        session = _session.get()
        depth = 1 + max((session.depth.get(id(c), 0) for c in children), default=0)
        session.depth[id(node)] = depth
        if depth > MAX_DEPTH and session.too_deep is None:
            session.too_deep = node.span
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

    def test_decl(self, c: list[Any]) -> ast.TestDecl:
        return ast.TestDecl(self.span(c), c[1], c[2])

    def per_subject(self, c: list[Any]) -> ast.Subject:
        return ast.Subject(self.span(c), "per", str(c[1]), None)

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
        return ast.Ident(self.token_span(token), str(token))

    def ident(self, c: list[Any]) -> ast.Ident:
        return self.name(c[0])

    def quantity(self, c: list[Any]) -> ast.Quantity:
        return self.quantity_token(c[0])

    def quantity_token(self, token: Token) -> ast.Quantity:
        number, suffix = _QUANTITY.fullmatch(str(token)).groups()  # type: ignore[union-attr]
        return ast.Quantity(self.token_span(token), number, suffix)

    def money(self, c: list[Any]) -> ast.Money:
        return self.money_token(c[0])

    def money_token(self, token: Token) -> ast.Money:
        number, suffix = _QUANTITY.fullmatch(str(token)[1:]).groups()  # type: ignore[union-attr]
        return ast.Money(self.token_span(token), number, suffix)

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
        items = (*left.items, right) if isinstance(left, ast.Or) else (left, right)
        return self.nest(ast.Or(self.span(c), items), [left, right])

    def and_cond(self, c: list[Any]) -> ast.And:
        left, right = c[0], c[2]
        items = (*left.items, right) if isinstance(left, ast.And) else (left, right)
        return self.nest(ast.And(self.span(c), items), [left, right])

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


_BUILD = _Build()  # stateless: what one parse gathers lives in its `_Session`


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
    session = _Session(file, text)
    recovery = _Recovery(session, text)
    reset = _session.set(session)
    module: ast.Module | None = None
    try:
        module = cast(ast.Module, _parser().parse(text, on_error=recovery))
    except UnexpectedInput:
        pass
    except Exception:
        if not session.diagnostics:  # a recovered parse may build odd nodes; a clean one may not
            raise
    finally:
        _session.reset(reset)
    diagnostics = sorted(session.diagnostics, key=sort_key)
    if recovery.reported >= MAX_ERRORS or recovery.seen > MAX_ERRORS * 10:
        diagnostics.append(error("GW009", f"too many syntax errors; stopped after {MAX_ERRORS}",
                                 diagnostics[-1].span, help="fix these and run again"))
    if diagnostics or module is None:
        return None, diagnostics
    if session.too_deep is not None:
        return None, [error("GW005", f"nested more than {MAX_DEPTH} levels deep", session.too_deep,
                            help="split the condition or value into simpler parts")]
    return ast.Module(file, module.decls, tuple(session.comments)), []


def parse_bytes(data: bytes, file: str) -> tuple[ast.Module | None, list[Diagnostic]]:
    text, diagnostics = decode(data, file)
    if text is None:
        return None, diagnostics
    return parse(text, file)

