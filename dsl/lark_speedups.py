"""Two changes to a built lark LALR parser that leave what it does alone and make it faster.

Measured on a 10,000-rule policy (0.6 MB, 123,000 tokens), parsing took
1.8 s; lark's own lexer loop and its rule lookups were over 40% of that.

- **The contextual lexer's loop.** lark's `ContextualLexer` keeps one scanner
  per parser state (a regex of the terminals that state accepts) and goes
  through a generator, a `next_token` call, a match per whitespace run and a
  line counter per token. `_FastContextualLexer.lex` uses the very same
  scanners and callbacks in one loop, and skips whitespace with one regex
  before matching (no terminal but the ignored whitespace starts with
  whitespace, so this matches what lark would). Errors are raised by lark's
  own code, from the same position.
- **Reductions.** The parse table names each rule to reduce by by a `Rule`,
  and the parser looks its callback up in a dict keyed by `Rule`, whose hash
  and equality are Python code, on every reduction. `_by_identity` puts in a
  stand-in with the same `origin` and `expansion` that hashes by identity.

- **The parse loop.** lark's loop calls `ParserState.feed_token` once per
  token, which reads five attributes before it looks at the table.
  `_FusedParser.parse_from_state` is the same loop with `feed_token`'s body
  in it, its lookups done once per parse. Where the table has no action for
  a token, it calls lark's `feed_token`, which raises lark's own error from
  the very same state; the end of input is fed by lark's `feed_token` too.

`tests/dsl/test_lark_speedups.py` holds the tuned parser to lark's own on
random and broken input: the same trees, spans, comments and diagnostics.
If lark's internals are not what these expect, the parser is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import ContextualLexer
from lark.parsers.lalr_analysis import Shift
from lark.parsers.lalr_interactive_parser import InteractiveParser
from lark.parsers.lalr_parser import _Parser

_BLANK = re.compile(r"[ \t\r\n\f]+")  # the grammar's %ignore'd whitespace


def tune(parser: Lark) -> Lark:
    frontend = getattr(parser, "parser", None)
    lexer = getattr(frontend, "lexer", None)
    if type(lexer) is ContextualLexer and hasattr(lexer, "lexers") and \
            hasattr(lexer, "root_lexer"):
        lexer.__class__ = _FastContextualLexer
    inner = getattr(getattr(frontend, "parser", None), "parser", None)
    _by_identity(inner)
    if type(inner) is _Parser:
        inner.__class__ = _FusedParser
    return parser


class _RuleStandIn:
    """What the LALR loop reads of a rule, hashed by identity."""

    __slots__ = ("expansion", "origin")

    def __init__(self, rule: Any) -> None:
        self.origin = rule.origin
        self.expansion = rule.expansion


def _by_identity(parser: Any) -> None:
    try:
        from lark.parsers.lalr_analysis import Reduce

        states, callbacks = parser.parse_table.states, parser.callbacks
    except (AttributeError, ImportError):
        return
    stand_ins: dict[int, tuple[_RuleStandIn, Any]] = {}
    for actions in states.values():
        for terminal, (action, rule) in list(actions.items()):
            if action is Reduce and rule in callbacks:
                found = stand_ins.get(id(rule))
                if found is None:
                    found = stand_ins[id(rule)] = (_RuleStandIn(rule), rule)
                actions[terminal] = (action, found[0])
    parser.callbacks = {stand_in: callbacks[rule] for stand_in, rule in stand_ins.values()}


class _FastContextualLexer(ContextualLexer):
    """lark's contextual lexer, its scanners and callbacks, in one loop."""

    def lex(self, lexer_state: Any, parser_state: Any) -> Iterator[Token]:
        text, end = lexer_state.text.text, lexer_state.text.end
        counter = lexer_state.line_ctr
        plans: dict[Any, tuple[Any, ...]] = self.__dict__.setdefault("_plans", {})
        blank = _BLANK.match
        new = getattr(Token, "_future_new", Token)
        while True:
            pos = counter.char_pos
            if pos < end and (skipped := blank(text, pos)) is not None:
                run = skipped.group()
                pos = skipped.end()
                if "\n" in run:
                    counter.line += run.count("\n")
                    counter.line_start_pos = pos - (len(run) - run.rindex("\n") - 1)
                counter.char_pos = pos
                counter.column = pos - counter.line_start_pos + 1
            if pos >= end:
                return
            plan = plans.get(parser_state.position)
            if plan is None:
                lexer: Any = self.lexers[parser_state.position]
                patterns = lexer.scanner._mres  # building the scanner sets `callback`
                plan = plans[parser_state.position] = (
                    patterns, lexer.callback, lexer.ignore_types, lexer.newline_types, lexer)
            patterns, callbacks, ignored, newlines, lexer = plan
            for pattern in patterns:
                match = pattern.match(text, pos, end)
                if match is not None:
                    break
            else:
                yield self._unexpected(lexer, lexer_state, parser_state)
                continue
            value, kind = match.group(), match.lastgroup
            line, column = counter.line, counter.column
            after = pos + len(value)
            if kind in newlines and "\n" in value:
                counter.line += value.count("\n")
                counter.line_start_pos = pos + value.rindex("\n") + 1
            counter.char_pos = after
            counter.column = after - counter.line_start_pos + 1
            if kind in ignored and kind not in callbacks:
                continue
            token = new(kind, value, pos, line, column, counter.line, counter.column, after)
            if kind in callbacks:
                token = callbacks[kind](token)
            if kind in ignored:
                continue
            lexer_state.last_token = token
            yield token

    def _unexpected(self, lexer: Any, lexer_state: Any, parser_state: Any) -> Token:
        """What lark's own lexer does where no terminal the state accepts matches:
        raise `UnexpectedToken` with the token read out of context, if there is one."""
        try:
            token: Token = lexer.next_token(lexer_state, parser_state)
        except UnexpectedCharacters as exc:
            try:
                last = lexer_state.last_token
                token = self.root_lexer.next_token(lexer_state, parser_state)
                raise UnexpectedToken(  # type: ignore[no-untyped-call]
                    token, exc.allowed, state=parser_state, token_history=[last],
                    terminals_by_name=self.root_lexer.terminals_by_name) from None
            except UnexpectedCharacters:
                raise exc from None
        lexer_state.last_token = token
        return token


class _FusedParser(_Parser):
    """lark's LALR loop with `ParserState.feed_token` written into it."""

    def parse_from_state(self, state: Any, last_token: Token | None = None) -> Any:
        conf = state.parse_conf
        states, callbacks = conf.states, conf.callbacks
        state_stack, value_stack = state.state_stack, state.value_stack
        try:
            token = last_token
            for token in state.lexer.lex(state):
                kind = token.type
                while True:
                    actions = states[state_stack[-1]]
                    if kind not in actions:
                        state.feed_token(token)  # raises lark's UnexpectedToken from here
                        break
                    action, arg = actions[kind]
                    if action is Shift:
                        state_stack.append(arg)
                        value_stack.append(callbacks[kind](token) if kind in callbacks else token)
                        break
                    size = len(arg.expansion)
                    if size:
                        children = value_stack[-size:]
                        del state_stack[-size:]
                        del value_stack[-size:]
                    else:
                        children = []
                    value_stack.append(callbacks[arg](children) if callbacks else children)
                    state_stack.append(states[state_stack[-1]][arg.origin.name][1])
            end = Token.new_borrow_pos("$END", "", token) if token else Token("$END", "", 0, 1, 1)
            return state.feed_token(end, True)
        except UnexpectedInput as exc:
            exc.interactive_parser = InteractiveParser(self, state, state.lexer)
            raise
