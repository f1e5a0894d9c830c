"""Text to syntax tree: one cached lark LALR parser behind `parse`.

No lark type leaves this module. Syntax errors are collected, not raised: on
each one the parser recovers (feeding the token a slip most likely left out,
or else dropping the token it could not take), so a file with three mistakes
gets three diagnostics. Errors that follow another within a few tokens are
taken to be its echo and not reported, as yacc does. A declaration keyword at
the start of a line inside a block that was never closed starts a new
declaration: the block is closed (or given up on) there.

`parse_partial` keeps what the errors left whole: every declaration no error
fell inside (and, of a route, every rule no error fell inside), with the parts
it dropped described so that later passes can tell what they may be missing.
"""

from __future__ import annotations

import bisect
import contextvars
import functools
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from lark import Lark, Token, Transformer, Tree
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
_NAME = r"[A-Za-z_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?"
_HEADER = re.compile(r"[ \t]*([^\s{}]+)[ \t]+([^\s{}]+)[ \t]*\{")  # `model fast {`, misspelt or not
_TARGET_KIND = re.compile(r"[ \t]*(provider|model|pool|notify|route)\b(?![ \t]*=)")
_ROUTE = re.compile(r"\broute[ \t]*\{")
_IMPORT = re.compile(r"\bimport\b")
_FIRST_WORD = re.compile(r"[A-Za-z_][\w.-]*")
_IS_NAME = re.compile(_NAME)
_COMMENT = re.compile(r"#[^\n]*")
# What follows each top-level keyword when it starts a declaration. Inside a
# block these words are names (`expect { route = [a] }`), never in these shapes.
_DECLARATION_SHAPES = {
    **dict.fromkeys(("provider", "model", "pool", "notify"), re.compile(rf"\s+{_NAME}\s*\{{")),
    **dict.fromkeys(("route", "auth"), re.compile(r"\s*\{")),
    "cache": re.compile(r"\s*(?:\{|when\b)"),
    **dict.fromkeys(("budget", "quota"), re.compile(rf"\s+(?:per\b|global\b|{_NAME}\s*\")")),
    **dict.fromkeys(("test", "import"), re.compile(r'\s*"')),
}
_KEYWORD_TYPES = {word: kind for kind, word in KEYWORDS.items()}
Point = tuple[int, int]  # (line, column)


@dataclass(frozen=True, slots=True)
class Dropped:
    """A part of a file that a syntax error broke, left out of the tree, and what
    it may have declared: `names` (of providers, models, pools, notifies), and
    `kinds`, the kinds it may have declared a name of that cannot be read
    (`model {`), with `route` if it may have held the route, and `*` if it may
    have declared anything at all (a broken `import`, a garbled header).
    """

    span: Span
    names: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Parsed:
    """What `parse_partial` makes of a file: the declarations that parsed whole."""

    module: ast.Module
    diagnostics: tuple[Diagnostic, ...]
    dropped: tuple[Dropped, ...]


@dataclass
class _Session:
    """What the lexer callbacks gather during one parse."""

    file: str
    text: str = ""
    comments: list[ast.Comment] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    open_brackets: list[Token] = field(default_factory=list)
    opened_by: list[str] = field(default_factory=list)  # the word before each open bracket
    # nesting of conditions and values, by node id (the node is kept so its id stays its own)
    depth: dict[int, tuple[int, object]] = field(default_factory=dict)
    too_deep: list[Span] = field(default_factory=list)
    last_error_at: int | None = None  # where the last error ended, as a text offset
    points: list[Point] = field(default_factory=list)  # where every error, echo or not, fell


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
        session.points.append(_start(token))
        session.diagnostics.append(error(
            "GW003", "unterminated string", _span(session.file, token),
            help='close the string with `"` before the end of the line'))
    return token


def _on_name(token: Token) -> Token:
    """A top-level keyword read as a name inside a block that was never closed."""
    kind = _KEYWORD_TYPES.get(token) if token in _DECLARATION_SHAPES else None
    if kind is not None:
        session = _session.get()
        if session.open_brackets and starts_declaration(session.text, token):
            return Token.new_borrow_pos(kind, token, token)
    return token


def starts_declaration(text: str, token: Token) -> bool:
    """Whether `token` begins its line and is followed by its declaration's shape."""
    shape = _DECLARATION_SHAPES.get(str(token))
    start = token.start_pos or 0
    if shape is None or text[text.rfind("\n", 0, start) + 1:start].strip():
        return False
    return shape.match(text, token.end_pos or start) is not None


@functools.cache
def _grammar() -> str:
    with open(os.path.join(os.path.dirname(__file__), "grammar.lark"), encoding="utf-8") as f:
        return f.read()


@functools.cache
def _plain() -> Lark:
    """The parser without callbacks: a lexer with no side effects."""
    return Lark(_grammar(), start="module", parser="lalr", cache=True)


@functools.cache
def _parser() -> Lark:
    watched = (*OPENERS, *CLOSERS, "COMMENT", "BAD_STRING")
    callbacks: dict[str, Callable[[Token], Token]] = dict.fromkeys(watched, _on_token)
    callbacks["NAME"] = _on_name
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
            shown = char if char.isprintable() else \
                f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}"
            span = Span.point(self.session.file, exc.line, exc.column)
            self.session.points.append((exc.line, exc.column))
            return self.report(error("GW002", f"unexpected character '{shown}'", span,
                                     help="remove it, or put it inside a string"),
                               position, position + 1)
        if not isinstance(exc, UnexpectedToken):
            return False
        if exc.token.type == "$END":
            return self.at_end(exc)
        if starts_declaration(self.text, exc.token):
            return self.new_declaration(exc)
        if exc.token.type in KEYWORDS and "NAME" in exc.expected:
            # Not an error: the lexer read a keyword from a state that could still
            # reduce into one where it starts a declaration (a string may end an
            # `import`), but where the parser landed, only a name fits.
            exc.interactive_parser.feed_token(Token.new_borrow_pos("NAME", exc.token, exc.token))
            return True
        self.session.points.append(_start(exc.token))
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
            trial = _copy(parser)
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

    def new_declaration(self, exc: UnexpectedToken) -> bool:
        """A declaration keyword at the start of a line, where the one before is unfinished.

        The unfinished declaration is closed there if its brackets can simply
        be closed, and otherwise given up on; either way it is left out of the
        tree (see `parse_partial`), and the new declaration parses whole.
        """
        session, token = self.session, exc.token
        keyword = Token.new_borrow_pos(_KEYWORD_TYPES[str(token)], token, token)
        where = (token.start_pos or 0, token.end_pos or 0)
        if session.open_brackets:
            opener = session.open_brackets[-1]
            closer = CLOSERS[OPENERS[opener.type]]
            session.points.append(_start(opener))
            keep_going = self.report(error(
                "GW006", f"unclosed '{opener}': '{token}' starts before its '{closer}'",
                _span(session.file, opener), help=f"add the missing '{closer}'"), *where)
        else:
            what, wanted = found(keyword.type, token), describe_expected(set(exc.expected))
            keep_going = self.report(error(
                "GW001", f"expected {wanted}, found {what}", _span(session.file, token),
                help="finish the declaration before this one, or remove it"), *where)
        parser = exc.interactive_parser
        closed = self.closed(parser, _after_last_token(self.text, token.start_pos or 0))
        if closed is not None and keyword.type in closed.choices():
            parser.parser_state = closed.parser_state
        elif not self.abandon(parser, keyword.type, _start(token)):
            return self.in_the_middle(exc)
        session.open_brackets.clear()
        session.opened_by.clear()
        parser.feed_token(keyword)
        return keep_going

    def closed(self, parser: Any, at: Token) -> Any:
        """A copy of the parser with every open bracket closed, or None if one cannot be."""
        trial = _copy(parser)
        for opener in reversed(self.session.open_brackets):
            kind = OPENERS[opener.type]
            try:
                trial.feed_token(Token.new_borrow_pos(kind, CLOSERS[kind], at))
            except UnexpectedInput:
                return None
        return trial

    def abandon(self, parser: Any, kind: str, fallback: Point) -> bool:
        """Give up on the declaration being parsed, back to the last whole one, so
        that `kind` (a declaration keyword, or the end) comes next."""
        state = parser.parser_state
        states, values = state.state_stack, state.value_stack
        table = state.parse_conf.states
        for keep in range(len(values), -1, -1):
            if keep and not _whole(values[keep - 1]):
                continue
            if kind not in table[states[keep]]:
                continue
            self.session.points.append(_start(values[keep]) if keep < len(values) else fallback)
            del states[keep + 1:]
            del values[keep:]
            return True
        return False

    def at_end(self, exc: UnexpectedToken) -> bool:
        session, parser = self.session, exc.interactive_parser
        end = len(self.text)
        if session.open_brackets:
            opener = session.open_brackets[-1]
            closer = CLOSERS[OPENERS[opener.type]]
            session.points.append(_start(opener))
            reported = self.report(error(
                "GW006", f"unclosed '{opener}': the file ends before its '{closer}'",
                _span(session.file, opener), help=f"add the missing '{closer}'"), end, end)
        else:
            lines = self.text.split("\n")
            point = Span.point(session.file, len(lines), len(lines[-1]) + 1)
            reported = self.report(error(
                "GW001", f"expected {describe_expected(set(exc.expected))}, "
                         "found the end of the file", point,
                help="the file ends in the middle of a declaration; finish or remove it"),
                end, end)
        closed = self.closed(parser, exc.token)
        if closed is not None and "$END" in closed.choices():
            parser.parser_state = closed.parser_state
        elif not self.abandon(parser, "$END", _start(exc.token)):
            return False
        session.open_brackets.clear()
        session.opened_by.clear()
        return reported


def _copy(parser: Any) -> Any:
    """A copy of the parser to try tokens on.

    lark's own copy deep-copies every value on the stack, the whole tree so far;
    only lark's trees and lists in it can change (a left-recursive rule extends
    its tree's list in place), so those are copied and the frozen nodes shared.
    """
    trial = parser.copy(deepcopy_values=False)
    trial.parser_state.value_stack[:] = map(_fresh, trial.parser_state.value_stack)
    return trial


def _fresh(value: Any) -> Any:
    if isinstance(value, Tree):
        return Tree(value.data, [_fresh(child) for child in value.children])
    if isinstance(value, list):
        return [_fresh(item) for item in value]
    return value


def _whole(value: object) -> bool:
    """A finished top-level declaration, or the run of them lark keeps the module's in."""
    return isinstance(value, ast.Decl) or \
        (isinstance(value, Tree) and str(value.data).startswith("__module"))


def _start(value: object) -> Point:
    """Where a token or node on the parser's stack begins."""
    if isinstance(value, Token):
        return (value.line or 1, value.column or 1)  # lark's types allow None
    span = getattr(value, "span", None)
    if isinstance(span, Span):
        return (span.line, span.column)
    if isinstance(value, Tree) and value.children:
        return _start(value.children[0])
    return (1, 1)


def _after_last_token(text: str, before: int) -> Token:
    """A zero-width token just after the last non-blank character before `before`:
    where a closing bracket the user left out is put."""
    offset = len(text[:before].rstrip())
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return Token("RBRACE", "", offset, line, column, line, column, offset)


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
    parsed = parse_partial(text, file)
    if parsed.diagnostics:
        return None, list(parsed.diagnostics)
    return parsed.module, []


def parse_partial(text: str, file: str) -> Parsed:
    """Parse one file, keeping every declaration the syntax errors left whole.

    A declaration an error fell inside (or a block left unclosed) is dropped;
    of a route, only the rules an error fell inside are. What was dropped,
    tokens skipped between declarations included, is listed in `dropped`.
    """
    session = _Session(file, text)
    recovery = _Recovery(session, text)
    reset = _session.set(session)
    decls: list[ast.Decl] = []
    try:
        module = cast(ast.Module, _parser().parse(text, on_error=recovery))
        decls = list(module.decls)
    except UnexpectedInput as exc:  # given up on: keep the declarations finished by then
        state = getattr(exc.interactive_parser, "parser_state", None)
        decls = list(_salvaged(state.value_stack if state is not None else []))
        token = getattr(exc, "token", None)
        session.points.append(_start(token) if token is not None and token.line is not None
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
    kept, broken = _keep_whole(decls, points)
    for span in broken:  # one GW005 for each part dropped for nesting too deep
        inside = [d for d in deep if _within((d.line, d.column), span)]
        if inside:
            diagnostics.append(error("GW005", f"nested more than {MAX_DEPTH} levels deep",
                                     inside[0], help="split the condition or value into "
                                                     "simpler parts"))
    diagnostics.sort(key=sort_key)
    lines = text.split("\n")
    eof = (len(lines), len(lines[-1]) + 2)
    spans = [(span, False) for span in broken]
    spans += [(span, True) for span in _gaps(file, [d.span for d in decls], points, (1, 0), eof)]
    dropped = tuple(_dropped(text, span, gap) for span, gap in sorted(spans))
    return Parsed(ast.Module(file, tuple(kept), tuple(session.comments)), tuple(diagnostics),
                  dropped)


def _dropped(text: str, span: Span, gap: bool) -> Dropped:
    """What a dropped part may have declared, read off its text line by line.

    A line `WORD NAME {` is a declaration header, its keyword misspelt or not:
    it may have declared NAME. A line that starts with `model` (or `provider`,
    `pool`, `notify`, `route`) in no such shape may have declared a name of
    that kind that cannot be read; `route {` anywhere may have been the route.
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
        kind = _TARGET_KIND.match(line)
        if kind is not None:
            kinds.add(kind.group(1))
    if _ROUTE.search(part):
        kinds.add("route")
    first = _FIRST_WORD.search(part)
    if _IMPORT.search(part) or (gap and first is not None and first.group() not in _KEYWORD_TYPES
                                and not names):
        kinds.add("*")
    return Dropped(span, frozenset(names), frozenset(kinds))


def _within(point: Point, span: Span) -> bool:
    return (span.line, span.column) <= point <= (span.end_line, span.end_column)


def _any_within(points: list[Point], span: Span) -> bool:
    i = bisect.bisect_left(points, (span.line, span.column))
    return i < len(points) and points[i] <= (span.end_line, span.end_column)


def _keep_whole(decls: Iterable[ast.Decl], points: list[Point]) -> tuple[list[ast.Decl],
                                                                        list[Span]]:
    """The declarations no error fell inside, and the spans of what was dropped.

    A route is kept whatever fell between its rules (tokens skipped, its `}`
    supplied by recovery): only the rules an error fell inside are dropped,
    and the stretches between rules where errors fell are listed as dropped.
    """
    kept: list[ast.Decl] = []
    broken: list[Span] = []
    for decl in decls:
        if not _any_within(points, decl.span):
            kept.append(decl)
        elif isinstance(decl, ast.RouteDecl):
            rules = []
            for rule in decl.rules:
                if _any_within(points, rule.span):
                    broken.append(rule.span)
                else:
                    rules.append(rule)
            kept.append(ast.RouteDecl(decl.span, tuple(rules)))
            span = decl.span
            broken += _gaps(span.file, [r.span for r in decl.rules], points,
                            (span.line, span.column), (span.end_line, span.end_column))
        else:
            broken.append(decl.span)
    return kept, broken


def _gaps(file: str, spans: list[Span], points: list[Point], low: Point,
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

