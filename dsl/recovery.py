"""Putting the parser back on its feet after a syntax error (lark's `on_error`).

Each error is reported in plain words, unless it echoes the one before, and
the parser is moved on: fed the token a slip most likely left out, or made
to drop the one it could not take. A declaration keyword at the start of a
line where a declaration is unfinished starts a new one: the unfinished one
is closed there, or given up on. Every error's place is recorded in the
session, so that `parse_partial` can tell which declarations are whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from dsl import ast
from dsl.diagnostics import Diagnostic, error
from dsl.dropped import Point
from dsl.span import Span
from dsl.syntax_errors import (
    DECLARATIONS,
    KEYWORDS,
    common_mistake,
    describe_expected,
    found,
)

MAX_ERRORS = 50  # past this many syntax errors a file is not worth reading further
ECHO_TOKENS = 3  # an error within this many tokens of the last one is its echo

OPENERS = {"LBRACE": "RBRACE", "LPAR": "RPAR", "LSQB": "RSQB"}
CLOSERS = {"RBRACE": "}", "RPAR": ")", "RSQB": "]"}
DECLARATION_WORDS = {KEYWORDS[k] for k in DECLARATIONS} - {"retry", "breaker"}  # these nest
# Tokens a slip most often leaves out, tried in this order when recovering.
INSERTIONS = (("EQUAL", "="), ("ARROW", "->"), ("COMMA", ","), ("RBRACE", "}"),
              ("RPAR", ")"), ("RSQB", "]"), ("NAME", "_"), ("STRING", '""'))
_NAME = r"[A-Za-z_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?"
# What follows each top-level keyword when it starts a declaration. Inside a
# block these words are names (`expect { route = [a] }`), never in these shapes.
DECLARATION_SHAPES = {
    **dict.fromkeys(("provider", "model", "pool", "notify"), re.compile(rf"\s+{_NAME}\s*\{{")),
    **dict.fromkeys(("route", "auth"), re.compile(r"\s*\{")),
    "cache": re.compile(r"\s*(?:\{|when\b)"),
    **dict.fromkeys(("budget", "quota"), re.compile(rf"\s+(?:per\b|global\b|{_NAME}\s*\")")),
    "guard": re.compile(rf"\s+{_NAME}\s*(?:\{{|when\b)"),
    **dict.fromkeys(("test", "import"), re.compile(r'\s*"')),
}
KEYWORD_TYPES = {word: kind for kind, word in KEYWORDS.items()}


class Session:
    """What the lexer callbacks and the recovery gather during one parse."""

    __slots__ = ("comments", "depth", "diagnostics", "file", "last_error_at", "open_brackets",
                 "opened_by", "points", "text", "too_deep")

    def __init__(self, file: str, text: str = "") -> None:
        self.file = file
        self.text = text
        self.comments: list[ast.Comment] = []
        self.diagnostics: list[Diagnostic] = []
        self.open_brackets: list[Token] = []
        self.opened_by: list[str] = []  # the word before each open bracket
        # nesting of conditions and values, by node id (the node is kept so its id stays its own)
        self.depth: dict[int, tuple[int, object]] = {}
        self.too_deep: list[Span] = []
        self.last_error_at: int | None = None  # where the last error ended, as a text offset
        self.points: list[Point] = []  # where every error, echo or not, fell


def span_of(file: str, item: Any) -> Span:
    return Span(file, item.line, item.column, item.end_line, item.end_column)


def starts_declaration(text: str, token: Token) -> bool:
    """Whether `token` begins its line and is followed by its declaration's shape."""
    shape = DECLARATION_SHAPES.get(str(token))
    start = token.start_pos or 0
    if shape is None or text[text.rfind("\n", 0, start) + 1:start].strip():
        return False
    return shape.match(text, token.end_pos or start) is not None


class Recovery:
    """lark's `on_error`: report the error, then put the parser back on its feet."""

    def __init__(self, session: Session, text: str,
                 count_tokens: Callable[[str, int, int], int]) -> None:
        self.session = session
        self.text = text
        self.count_tokens = count_tokens  # how many tokens lie in text[start:end]
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
        if last is not None and self.count_tokens(self.text, last, start) < ECHO_TOKENS:
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
        self.session.points.append(start_of(exc.token))
        return self.in_the_middle(exc)

    def in_the_middle(self, exc: UnexpectedToken) -> bool:
        token, parser = exc.token, exc.interactive_parser
        expected = set(exc.expected)
        where = (token.start_pos or 0, token.end_pos or 0)
        span = span_of(self.session.file, token)
        mistake = common_mistake(token.type, str(token), expected)
        unclosed = self.unclosed_before_declaration(token)
        if unclosed is not None:
            opener, keyword = unclosed
            keep_going = self.report(error(
                "GW006", f"unclosed '{opener}': '{keyword}' starts before its '}}'",
                span_of(self.session.file, opener), help="add the missing '}'"), *where)
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
        keyword = Token.new_borrow_pos(KEYWORD_TYPES[str(token)], token, token)
        where = (token.start_pos or 0, token.end_pos or 0)
        if session.open_brackets:
            keep_going = self.unclosed(f"'{token}' starts", *where)
        else:
            what, wanted = found(keyword.type, token), describe_expected(set(exc.expected))
            keep_going = self.report(error(
                "GW001", f"expected {wanted}, found {what}", span_of(session.file, token),
                help="finish the declaration before this one, or remove it"), *where)
        parser = exc.interactive_parser
        closed = self.closed(parser, _after_last_token(self.text, token.start_pos or 0))
        if closed is not None and keyword.type in closed.choices():
            parser.parser_state = closed.parser_state
        elif not self.abandon(parser, keyword.type, start_of(token)):
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
            self.session.points.append(start_of(values[keep]) if keep < len(values) else fallback)
            del states[keep + 1:]
            del values[keep:]
            return True
        return False

    def unclosed(self, what: str, start: int, end: int) -> bool:
        """GW006 at the innermost open bracket, which `what` comes before the close of."""
        session = self.session
        opener = session.open_brackets[-1]
        closer = CLOSERS[OPENERS[opener.type]]
        session.points.append(start_of(opener))
        return self.report(error(
            "GW006", f"unclosed '{opener}': {what} before its '{closer}'",
            span_of(session.file, opener), help=f"add the missing '{closer}'"), start, end)

    def at_end(self, exc: UnexpectedToken) -> bool:
        session, parser = self.session, exc.interactive_parser
        end = len(self.text)
        if session.open_brackets:
            reported = self.unclosed("the file ends", end, end)
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
        elif not self.abandon(parser, "$END", start_of(exc.token)):
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


def start_of(value: object) -> Point:
    """Where a token or node on the parser's stack begins."""
    if isinstance(value, Token):
        return (value.line or 1, value.column or 1)  # lark's types allow None
    span = getattr(value, "span", None)
    if isinstance(span, Span):
        return (span.line, span.column)
    if isinstance(value, Tree) and value.children:
        return start_of(value.children[0])
    return (1, 1)


def _after_last_token(text: str, before: int) -> Token:
    """A zero-width token just after the last non-blank character before `before`:
    where a closing bracket the user left out is put."""
    offset = len(text[:before].rstrip())
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return Token("RBRACE", "", offset, line, column, line, column, offset)
