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
- **One pattern for every state.** Most tokens are read by one match of a
  pattern of all the terminals, in lark's order, that skips the blanks before
  them (`_whole_of`); the result is kept where the state's own lexer is sure
  to read the same token, keywords included (see `_whole_of`), and anything
  else goes to that lexer as before. Parsing 10,000 rules: 2.0 to 1.8 s.
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

_BLANKS = r"[ \t\r\n\f]"  # the grammar's %ignore'd whitespace
_BLANK = re.compile(_BLANKS + "+")


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
        whole = self.__dict__.get("_whole")
        if whole is None:
            whole = self.__dict__["_whole"] = _whole_of(self.root_lexer)
        if whole:
            scan, keywords, user_callbacks, root_newlines, root_ignored = whole
            accepts: dict[Any, frozenset[str]] = self.__dict__.setdefault("_accepts", {})
            make = str.__new__
        while True:
            pos = counter.char_pos
            if whole and (match := scan(text, pos, end)) is not None:
                # One match of every terminal, blanks before it included; kept only
                # where this state's own lexer is sure to read the same token.
                kind = match.lastgroup
                state = parser_state.state_stack[-1]  # `position`, without the property
                accepted = accepts.get(state)
                if accepted is None:
                    own: Any = self.lexers[state]
                    accepted = accepts[state] = frozenset(t.name for t in own.terminals)
                if kind in accepted:
                    start = match.start(kind)
                    value = match.group(kind)
                    final = kind
                    words = keywords.get(kind)
                    if words is not None and (word := words.get(value)) is not None \
                            and word in accepted:
                        final = word
                    if start != pos and (lines := text.count("\n", pos, start)):
                        counter.line += lines
                        counter.line_start_pos = text.rindex("\n", pos, start) + 1
                    line = counter.line
                    column = start - counter.line_start_pos + 1
                    after = match.end()
                    if kind in root_newlines and "\n" in value:
                        counter.line += value.count("\n")
                        counter.line_start_pos = start + value.rindex("\n") + 1
                    counter.char_pos = after
                    counter.column = after - counter.line_start_pos + 1
                    ignored = kind in root_ignored
                    callback = user_callbacks.get(kind) if final is kind else None
                    if ignored and callback is None:
                        continue
                    token = make(Token, value)  # what `Token._future_new` does
                    token.type = final
                    token.start_pos = start
                    token.value = value
                    token.line = line
                    token.column = column
                    token.end_line = counter.line
                    token.end_column = counter.column
                    token.end_pos = after
                    if callback is not None:
                        token = callback(token)
                    if ignored:
                        continue
                    lexer_state.last_token = token
                    yield token
                    continue
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
            patterns, callbacks, ignored_types, newlines, lexer = plan
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
            if kind in ignored_types and kind not in callbacks:
                continue
            token = new(kind, value, pos, line, column, counter.line, counter.column, after)
            if kind in callbacks:
                token = callbacks[kind](token)
            if kind in ignored_types:
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


def _whole_of(root: Any) -> tuple[Any, ...] | tuple[()]:
    """One pattern of every terminal, in lark's order, that skips blanks first;
    what each state's lexer would make of a name that spells a keyword; and
    the callbacks the user gave. Empty where the root lexer is not as expected.

    Each state's lexer tries the terminals it accepts in the root lexer's order,
    so where the root lexer's first match is a terminal the state accepts, the
    state's lexer makes the same match. A keyword is a string that a regex
    terminal (`NAME`) also matches: lark leaves it out of the patterns and
    retypes the name once matched (`UnlessCallback`), and a state's lexer does
    so only for the keywords that state accepts. Anything else, errors among
    them, is read by the state's own lexer.
    """
    try:
        from lark.lexer import CallChain, PatternStr, UnlessCallback

        patterns = root.scanner._mres
        terminals, callbacks, user = root.scanner.terminals, root.callback, root.user_callbacks
        flags = root.g_regex_flags
    except (AttributeError, ImportError):
        return ()
    if len(patterns) != 1 or flags or any(t.pattern.flags for t in root.terminals):
        return ()
    keywords: dict[str, dict[str, str]] = {}
    for name, callback in callbacks.items():
        if type(callback) is CallChain:
            callback = callback.callback1
        elif callback is user.get(name):
            continue
        if type(callback) is not UnlessCallback:
            return ()
        words = callback.scanner.terminals
        if not all(type(t.pattern) is PatternStr for t in words):
            return ()
        keywords[name] = {t.pattern.value: t.name for t in words}
    for terminal in root.terminals:  # blanks are skipped unseen: only ignored ones match them
        if any(re.match(terminal.pattern.to_regexp(), c) for c in " \t\r\n\f") and (
                terminal.name not in root.ignore_types or terminal.name in user):
            return ()
    alternatives = "|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terminals)
    scan = re.compile(f"{_BLANKS}*+(?:{alternatives})").match
    return scan, keywords, dict(user), root.newline_types, root.ignore_types
