"""Syntax errors in the user's words rather than lark's terminal names.

`describe_expected` turns the set of terminals the parser could take into a
short phrase; `common_mistake` recognises the slips people actually make
(`:` for `=`, `=` for `==`, `if` for `when`) and names them with their own
code and advice, in the spirit of lark's `match_examples` and Cedar's
`friendly_token_names`.
"""

from __future__ import annotations

from dsl.diagnostics import did_you_mean
from dsl.record import Record

KEYWORDS = {
    "IMPORT": "import", "PROVIDER": "provider", "MODEL": "model", "POOL": "pool",
    "NOTIFY": "notify", "RETRY": "retry", "BREAKER": "breaker", "AUTH": "auth",
    "ROUTE": "route", "CACHE": "cache", "BUDGET": "budget", "QUOTA": "quota",
    "GUARD": "guard", "TEST": "test", "WHEN": "when", "OTHERWISE": "otherwise",
    "REQUESTED": "requested", "DENY": "deny", "PER": "per", "GLOBAL": "global",
    "AND": "and", "OR": "or", "NOT": "not", "IN": "in", "MATCHES": "matches",
    "TRUE": "true", "FALSE": "false",
}

PUNCTUATION = {
    "LBRACE": "{", "RBRACE": "}", "LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]",
    "EQUAL": "=", "COMMA": ",", "COLON": ":", "SEMICOLON": ";", "SLASH": "/",
    "ARROW": "->", "_DOTDOT": "..",
}

WORDS = {
    "NAME": "a name",
    "QUANTITY": "a number",
    "MONEY": "an amount like $5",
    "STRING": "a string",
    "BAD_STRING": "a string",
    "COMPARE": "a comparison (==, !=, <, <=, >, >=)",
    "$END": "the end of the file",
}

DECLARATIONS = ("IMPORT", "PROVIDER", "MODEL", "POOL", "NOTIFY", "RETRY", "BREAKER",
                "AUTH", "ROUTE", "CACHE", "BUDGET", "QUOTA", "GUARD", "TEST")
VALUE_STARTS = {"QUANTITY", "MONEY", "STRING", "NAME", "TRUE", "FALSE", "LSQB", "LBRACE"}


def word(terminal: str) -> str:
    if terminal in KEYWORDS:
        return f"'{KEYWORDS[terminal]}'"
    if terminal in PUNCTUATION:
        return f"'{PUNCTUATION[terminal]}'"
    return WORDS.get(terminal, terminal.lower())


def found(terminal: str, text: str) -> str:
    """What the parser met, quoting the user's own text."""
    if terminal == "$END":
        return "the end of the file"
    if terminal == "NAME":
        return f"name '{text}'"
    if terminal == "QUANTITY":
        return f"number '{text}'"
    if terminal in ("STRING", "BAD_STRING"):
        return f"string {text}"
    if terminal in KEYWORDS:
        return f"keyword '{text}'"
    return f"'{text}'"


def describe_expected(expected: set[str]) -> str:
    """A phrase for what could have come next, grouping the long sets."""
    expected = {t for t in expected if t not in ("SEMICOLON", "BAD_STRING")}
    phrases: list[str] = []
    if expected >= {"PROVIDER", "MODEL", "ROUTE"}:
        phrases.append("a declaration (provider, model, pool, route, cache, budget, quota, ...)")
        expected -= set(DECLARATIONS)
    if expected >= {"QUANTITY", "MONEY", "STRING", "NAME"}:
        phrases.append("a value")
        expected -= VALUE_STARTS
    if expected >= {"WHEN", "OTHERWISE"}:
        phrases.append("a rule ('when ...' or 'otherwise')")
        expected -= {"WHEN", "OTHERWISE"}
    if "NAME" in expected and "RBRACE" in expected and "EQUAL" not in expected:
        phrases.append("an attribute")
        expected.discard("NAME")
    order = sorted(expected, key=lambda t: (t not in PUNCTUATION, t not in KEYWORDS, t))
    phrases.extend(word(t) for t in order)
    if not phrases:
        return "something else"
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " or " + phrases[-1]


class Mistake(Record):
    code: str
    message: str
    help: str
    replacement: tuple[str, str] | None = None  # a token to feed instead, to recover


def common_mistake(terminal: str, text: str, expected: set[str]) -> Mistake | None:
    """Recognise a slip that people make often, with advice that fits it."""
    if terminal == "COLON" and "EQUAL" in expected:
        return Mistake("GW007", "attributes are set with '=', not ':'",
                       "write `name = value`", ("EQUAL", "="))
    if terminal == "EQUAL" and "COMPARE" in expected:
        return Mistake("GW008", "'=' sets an attribute; compare with '=='",
                       "write `team == \"x\"`", ("COMPARE", "=="))
    if terminal == "NAME" and expected >= {"WHEN", "OTHERWISE"}:
        keyword = {"if": "when", "else": "otherwise", "default": "otherwise"}.get(text)
        keyword = keyword or did_you_mean(text, ["when", "otherwise"])
        return Mistake("GW001", f"expected a rule ('when ...' or 'otherwise'), found name '{text}'",
                       f"did you mean '{keyword}'?" if keyword
                       else "each rule is `when CONDITION -> TARGET, ...` or `otherwise -> TARGET`",
                       (keyword.upper(), keyword) if keyword else None)
    if terminal == "NAME" and expected >= {"EQUAL", "LBRACE"}:
        return Mistake("GW001", f"expected '=' or '{{', found name '{text}'",
                       "set an attribute with `name = value`, or open a block with `name {`")
    if terminal == "NAME" and "PROVIDER" in expected:
        keyword = did_you_mean(text, [KEYWORDS[k] for k in DECLARATIONS])
        return Mistake("GW001", f"expected a declaration, found name '{text}'",
                       f"did you mean '{keyword}'?" if keyword
                       else "a file holds declarations: provider, model, pool, route, "
                            "retry, breaker, cache, budget, quota, guard, notify, auth, test, "
                            "import")
    return None
