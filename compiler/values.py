"""Attribute values: check each against the type its attribute wants, and convert.

A value of the wrong type is answered with what was expected, what was found
in the user's terms, and, where the intent is plain, the spelling that works:
`limit = 500` gets "did you mean '$500 per month'?", and `timeout = 5M` gets
"did you mean '5m'?".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from compiler import units
from compiler.conditions import PatternError, regex
from compiler.policy import EnvValue, Member, Rate
from dsl import ast
from dsl.diagnostics import Diagnostic, error, suggestion, warning

INVALID: Any = object()  # a value that failed to check; its diagnostic is already out

Report = Callable[[Diagnostic], None]


CALENDAR = ("day", "week", "month")  # the periods budgets are kept in (UTC)
# the embedders the gateway runs itself (policies/embedders.py NAMES: a test holds them equal)
EMBEDDERS = ("hash", "minilm")
# the guards' built-in detectors (policies/detectors.py NAMES: a test holds them equal)
DETECTORS = ("email", "phone", "credit_card", "iban", "ssn", "ip_address", "secret")

@dataclass(frozen=True, slots=True)
class Field:
    kind: str
    required: bool = False
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None


EXPECTED = {
    "duration": "a duration", "count": "a count", "int": "a whole number",
    "number": "a number", "fraction": "a number from 0 to 1", "percent": "a percent",
    "price": "a price per token count", "money_rate": "money per period",
    "count_rate": "a count per period", "string": "a string", "secret": "a string or env(...)",
    "url": "a URL or env(...)",
    "name": "a name", "bool": "true or false", "status_list": "a list of statuses",
    "duration_range": "a range of durations", "members": "a list of models",
    "percent_list": "a list of percents", "string_map": "a map of strings to strings",
    "percent_map": "a map of percents", "over": "reject, allow or downgrade(MODEL)",
    "embedder": "hash, minilm or model(MODEL)",
    "names": "a list of names", "detectors": "a list of detectors",
    "patterns": "a list of regular expressions",
}


def describe(value: ast.Value | ast.Weighted) -> str:
    """What a value is, in the words of the language."""
    if isinstance(value, ast.Quantity):
        kind = units.suffix_kind(value.number, value.suffix)
        return {"count": "a count" if value.suffix else "a plain number",
                "duration": "a duration", "percent": "a percent",
                "status_class": "a status class"}.get(kind or "", f"'{value.text}'")
    if isinstance(value, ast.Rate):
        return "money per period" if isinstance(value.amount, ast.Money) else "a rate"
    names: dict[type, str] = {
        ast.Money: "money", ast.Price: "a price", ast.Str: "a string", ast.Bool: "a boolean",
        ast.Range: "a range", ast.ListValue: "a list", ast.MapValue: "a map",
        ast.Weighted: "a weighted name",
    }
    if isinstance(value, ast.Ident):
        return f"name '{value.name}'"
    if isinstance(value, ast.Call):
        return f"a call to '{value.name.name}'"
    return names[type(value)]


def _hint(value: ast.Value, kind: str) -> str:
    """The spelling the user most likely meant, as ` (did you mean '...'?)`."""
    guess: str | None = None
    if isinstance(value, ast.Quantity):
        if kind == "money_rate":
            guess = f"${value.text} per month"
        elif kind == "duration" and not value.suffix:
            guess = f"{value.number}s"
        elif kind == "duration" and value.suffix in units.DURATION_FOR_COUNT:
            guess = value.number + units.DURATION_FOR_COUNT[value.suffix]
        elif kind in ("count", "count_rate") and value.suffix in units.COUNT_FOR_DURATION:
            guess = value.number + units.COUNT_FOR_DURATION[value.suffix]
        elif kind in ("percent", "percent_list") and not value.suffix:
            share = float(value.number)
            guess = f"{share * 100 if share <= 1 else share:g}%"
        elif kind == "price":
            guess = f"${value.number}/1M"
    elif isinstance(value, ast.Money):
        guess = {"money_rate": f"{value.text} per month", "price": f"{value.text}/1M"}.get(kind)
    elif isinstance(value, ast.Rate) and kind == "money_rate" and \
            isinstance(value.amount, ast.Quantity):
        guess = f"${value.amount.text} per {value.unit.name}"
    elif isinstance(value, ast.Ident) and kind in ("string", "secret"):
        guess = f'"{value.name}"'
    elif isinstance(value, ast.Str) and kind == "name":
        guess = value.value
    return f" (did you mean '{guess}'?)" if guess else ""


class Checker:
    """Checks values for one policy, reporting into `report`."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def wrong(self, value: ast.Value | ast.Weighted, kind: str, expected: str | None = None
              ) -> Any:
        found = describe(value)
        hint = _hint(value, kind) if not isinstance(value, ast.Weighted) else ""
        self.report(error("GW201", f"expected {expected or EXPECTED[kind]}, found {found}{hint}",
                          value.span, help=f"this attribute takes {expected or EXPECTED[kind]}"))
        return INVALID

    def out_of_range(self, value: ast.Value | ast.Weighted, message: str,
                     help: str = "see `gwc explain-code GW203` for each attribute's range"
                     ) -> Any:
        self.report(error("GW203", message, value.span, help=help))
        return INVALID

    def unit_ok(self, value: ast.Quantity) -> bool:
        """False (and reported) when the suffix is no unit the language knows."""
        if units.suffix_kind(value.number, value.suffix) is not None:
            return True
        known = [*units.DURATIONS, *(k for k in units.COUNTS if k), "%", "xx"]
        synonym = units.SYNONYMS.get(value.suffix)
        hint = f" (did you mean '{synonym}'?)" if synonym else suggestion(value.suffix, known)
        self.report(error("GW202", f"unknown unit '{value.suffix}' in '{value.text}'{hint}",
                          value.span,
                          help="durations: ms s m h d; counts: k M B; percent: %; "
                               "m is minutes and M is million"))
        return False

    def check(self, value: ast.Value, spec: Field) -> Any:
        if isinstance(value, ast.Quantity) and not self.unit_ok(value):
            return INVALID
        method: Callable[[ast.Value, Field], Any] = getattr(self, "check_" + spec.kind)
        return method(value, spec)

    def bounded(self, value: ast.Value, number: float, spec: Field, shown: str) -> Any:
        if spec.low is not None and number < spec.low:
            return self.out_of_range(value, f"{shown} is below the least allowed, {spec.low:g}")
        if spec.high is not None and number > spec.high:
            return self.out_of_range(value, f"{shown} is above the most allowed, {spec.high:g}")
        return number

    # ------------------------------------------------------------ scalars

    def _kind(self, value: ast.Value) -> str | None:
        if isinstance(value, ast.Quantity):
            return units.suffix_kind(value.number, value.suffix)
        return None

    def check_duration(self, value: ast.Value, spec: Field) -> Any:
        if not isinstance(value, ast.Quantity) or self._kind(value) != "duration":
            return self.wrong(value, "duration")
        return self.bounded(value, units.duration_seconds(value.number, value.suffix), spec,
                            f"'{value.text}'")

    def check_count(self, value: ast.Value, spec: Field) -> Any:
        if not isinstance(value, ast.Quantity) or self._kind(value) != "count":
            return self.wrong(value, "count")
        number = units.count_value(value.number, value.suffix)
        if not number.is_integer():
            return self.out_of_range(value, f"'{value.text}' is not a whole count")
        result = self.bounded(value, number, spec, f"'{value.text}'")
        return result if result is INVALID else int(result)

    def check_int(self, value: ast.Value, spec: Field) -> Any:
        if not isinstance(value, ast.Quantity) or value.suffix or "." in value.number:
            return self.wrong(value, "int")
        result = self.bounded(value, float(value.number), spec, f"'{value.text}'")
        return result if result is INVALID else int(result)

    def check_number(self, value: ast.Value, spec: Field) -> Any:
        if not isinstance(value, ast.Quantity) or value.suffix:
            return self.wrong(value, "number")
        return self.bounded(value, float(value.number), spec, f"'{value.text}'")

    def check_fraction(self, value: ast.Value, spec: Field) -> Any:
        if isinstance(value, ast.Quantity) and value.suffix == "%":
            number = float(value.number) / 100
        elif isinstance(value, ast.Quantity) and not value.suffix:
            number = float(value.number)
        else:
            return self.wrong(value, "fraction")
        if not 0 <= number <= 1:
            return self.out_of_range(value, f"'{value.text}' is outside 0 to 1")
        return number

    def check_percent(self, value: ast.Value, spec: Field) -> Any:
        if not isinstance(value, ast.Quantity) or value.suffix != "%":
            return self.wrong(value, "percent")
        share = float(value.number) / 100
        if share > 1:
            return self.out_of_range(value, f"'{value.text}' is over 100%")
        return share

    def check_price(self, value: ast.Value, spec: Field) -> Any:
        if not isinstance(value, ast.Price):
            return self.wrong(value, "price")
        if not self.unit_ok(value.per) or self._kind(value.per) != "count":
            return self.wrong(value.per, "count", "a token count like 1M")
        money = self.check_money(value.money)
        if money is INVALID:
            return INVALID
        tokens = units.count_value(value.per.number, value.per.suffix)
        if tokens <= 0:
            return self.out_of_range(value.per, "a price is per a positive number of tokens")
        return money / tokens

    def check_money(self, value: ast.Money) -> Any:
        if value.suffix not in units.COUNTS:
            self.report(error("GW202", f"unknown unit '{value.suffix}' in '{value.text}'",
                              value.span, help="money takes k, M or B: $1.5k"))
            return INVALID
        return units.money_value(value.amount, value.suffix)

    def _period(self, rate: ast.Rate) -> str | None:
        unit = rate.unit.name
        if unit in units.PERIODS:
            return unit
        self.report(error("GW202", f"unknown period '{unit}'"
                                   f"{suggestion(unit, units.PERIODS)}", rate.unit.span,
                          help="periods: " + ", ".join(units.PERIODS)))
        return None

    def check_money_rate(self, value: ast.Value, spec: Field) -> Any:
        if not isinstance(value, ast.Rate) or not isinstance(value.amount, ast.Money):
            return self.wrong(value, "money_rate")
        period = self._period(value)
        amount = self.check_money(value.amount)
        if period is None or amount is INVALID:
            return INVALID
        if period not in CALENDAR:
            return self.out_of_range(value, f"a budget is spent per calendar day, week or "
                                            f"month, not per {period}")
        if amount <= 0:
            return self.out_of_range(value, "a budget above $0 is needed: $0 admits nothing "
                                            "(route to `deny` to refuse)")
        return Rate(amount, period)

    def check_count_rate(self, value: ast.Value, spec: Field) -> Any:
        if not isinstance(value, ast.Rate):
            return self.wrong(value, "count_rate")
        period = self._period(value)
        amount = self.check(value.amount, Field("count", low=1))
        if period is None or amount is INVALID:
            return INVALID
        return Rate(float(amount), period)

    def check_string(self, value: ast.Value, spec: Field) -> Any:
        if not isinstance(value, ast.Str):
            return self.wrong(value, "string")
        return value.value

    def check_secret(self, value: ast.Value, spec: Field) -> Any:
        if isinstance(value, ast.Str):
            return value.value
        if isinstance(value, ast.Call) and value.name.name == "env":
            args = value.args
            if not 1 <= len(args) <= 2 or not all(isinstance(a, ast.Str) for a in args):
                self.report(error("GW201", "env() takes a variable's name and an optional default,"
                                           " both strings", value.span,
                                  help='env("OPENAI_API_KEY") or env("REGION", "eu")'))
                return INVALID
            name, *rest = (str(a.value) for a in args)  # type: ignore[union-attr]
            return EnvValue(name, rest[0] if rest else None)
        return self.wrong(value, "secret")

    def check_url(self, value: ast.Value, spec: Field) -> Any:
        """An http(s) URL with a host, or env(...), read when the gateway starts."""
        if not isinstance(value, ast.Str) and not (isinstance(value, ast.Call) and
                                                   value.name.name == "env"):
            return self.wrong(value, "url")
        checked = self.check_secret(value, spec)
        if not isinstance(checked, str):
            return checked
        try:
            parts = urlsplit(checked)
            if parts.scheme in ("http", "https") and parts.hostname:
                return checked
        except ValueError:  # a bracketed host that is no IPv6 address
            pass
        self.report(error("GW201", f"expected an http:// or https:// URL, found '{checked}'",
                          value.span, help='for example "https://guard.internal/check" or '
                                           'env("GUARD_URL")'))
        return INVALID

    def check_name(self, value: ast.Value, spec: Field) -> Any:
        if not isinstance(value, ast.Ident):
            return self.wrong(value, "name")
        if spec.choices and value.name not in spec.choices:
            self.report(error("GW206", f"unknown value '{value.name}'"
                                       f"{suggestion(value.name, spec.choices)}", value.span,
                              help="one of: " + ", ".join(spec.choices)))
            return INVALID
        return value.name

    def check_bool(self, value: ast.Value, spec: Field) -> Any:
        if not isinstance(value, ast.Bool):
            return self.wrong(value, "bool")
        return value.value

    # ----------------------------------------------------------- compound

    def _list(self, value: ast.Value, kind: str) -> tuple[ast.Value | ast.Weighted, ...] | None:
        if isinstance(value, ast.ListValue):
            return value.items
        self.wrong(value, kind)
        return None

    def check_status_list(self, value: ast.Value, spec: Field) -> Any:
        items = self._list(value, "status_list")
        if items is None:
            return INVALID
        out: list[str] = []
        for item in items:
            if isinstance(item, ast.Ident) and item.name in ("timeout", "connect"):
                out.append(item.name)
            elif isinstance(item, ast.Quantity) and self.unit_ok(item) and \
                    self._kind(item) == "status_class":
                out.append(item.text)
            elif isinstance(item, ast.Quantity) and not item.suffix and item.number.isdigit():
                if not 100 <= int(item.number) <= 599:
                    self.out_of_range(item, f"'{item.text}' is not an HTTP status")
                out.append(item.number)
            else:
                self.wrong(item, "status_list", "a status (429, 5xx), timeout or connect")
        return tuple(out)

    def check_duration_range(self, value: ast.Value, spec: Field) -> Any:
        if not isinstance(value, ast.Range):
            return self.wrong(value, "duration_range")
        low = self.check(value.low, Field("duration"))
        high = self.check(value.high, Field("duration"))
        if low is INVALID or high is INVALID:
            return INVALID
        if low > high:
            return self.out_of_range(value, "the range's low end is above its high end")
        return (low, high)

    def check_members(self, value: ast.Value, spec: Field) -> Any:
        items = self._list(value, "members")
        if items is None:
            return INVALID
        members: list[tuple[Member, ast.Ident]] = []
        for item in items:
            if isinstance(item, ast.Ident):
                members.append((Member(item.name), item))
            elif isinstance(item, ast.Weighted):
                weight = self.check(item.weight, Field("number"))
                if weight is not INVALID and weight <= 0:
                    self.out_of_range(item.weight, "a weight must be above 0")
                elif weight is not INVALID:
                    members.append((Member(item.name.name, weight), item.name))
            else:
                self.wrong(item, "members", "a model's name")
        return tuple(members)

    def check_names(self, value: ast.Value, spec: Field) -> Any:
        items = self._list(value, "names")
        if items is None:
            return INVALID
        names = []
        for item in items:
            if isinstance(item, ast.Ident):
                names.append(item)
            else:
                self.wrong(item, "names", "a name")
        return tuple(names)

    def check_detectors(self, value: ast.Value, spec: Field) -> Any:
        """Built-in detectors by name, each once: `[email, credit_card]`."""
        items = self._list(value, "detectors")
        if items is None:
            return INVALID
        names: list[str] = []
        ok = True
        for item in items:
            if not isinstance(item, ast.Ident):
                ok = False
                named = isinstance(item, ast.Str) and item.value in DETECTORS  # `"email"`
                self.wrong(item, "name" if named else "detectors", "a detector's name")
            elif item.name not in DETECTORS:
                ok = False
                self.report(error("GW206", f"unknown detector '{item.name}'"
                                           f"{suggestion(item.name, DETECTORS)}", item.span,
                                  help="detectors: " + ", ".join(DETECTORS)))
            elif item.name not in names:
                names.append(item.name)
        return tuple(names) if ok else INVALID

    def check_patterns(self, value: ast.Value, spec: Field) -> Any:
        """Regular expressions RE2 runs, each once: `["(?i)internal only"]`."""
        items = self._list(value, "patterns")
        if items is None:
            return INVALID
        patterns: list[str] = []
        ok = True
        for item in items:
            if not isinstance(item, ast.Str):
                ok = False
                self.wrong(item, "string", "a regular expression, as a string")
            elif not self.pattern_ok(item):
                ok = False
            elif item.value not in patterns:
                patterns.append(item.value)
                if regex(item.value).search(""):
                    self.report(warning(
                        "GW316", f"the pattern '{item.value}' matches an empty text, so it "
                        "is found in every text: the guard refuses every request it checks",
                        item.span, help="a pattern searched for in a text must need at "
                        "least one character: `a+`, not `a*`"))
        return tuple(patterns) if ok else INVALID

    def pattern_ok(self, pattern: ast.Str) -> bool:
        """False (and GW204 reported) for a pattern RE2 cannot run: bad syntax, or a
        construct with no linear-time match (a backreference, lookaround)."""
        try:
            regex(pattern.value)
        except PatternError as exc:
            self.report(error("GW204", f"invalid regular expression: {exc}", pattern.span,
                              help="patterns use RE2's syntax, which runs in linear time: "
                                   "no backreferences or lookaround"))
            return False
        return True

    def check_percent_list(self, value: ast.Value, spec: Field) -> Any:
        items = self._list(value, "percent_list")
        if items is None:
            return INVALID
        shares = [self.check(item, Field("percent")) if not isinstance(item, ast.Weighted)
                  else self.wrong(item, "percent") for item in items]
        return tuple(s for s in shares if s is not INVALID)

    def _map(self, value: ast.Value, kind: str, item: Field) -> Any:
        if not isinstance(value, ast.MapValue):
            return self.wrong(value, kind)
        out = {}
        for pair in value.pairs:
            checked = self.check(pair.value, item)
            if checked is not INVALID:
                out[pair.key.value] = checked
        return out

    def check_string_map(self, value: ast.Value, spec: Field) -> Any:
        return self._map(value, "string_map", Field("secret"))

    def check_percent_map(self, value: ast.Value, spec: Field) -> Any:
        shares = self._map(value, "percent_map", Field("fraction"))
        if shares is INVALID:
            return INVALID
        for dim in shares:
            if dim not in ("team", "user", "key"):
                self.report(error("GW206", f"unknown budget subject '{dim}'"
                                           f"{suggestion(dim, ['team', 'user', 'key'])}",
                                  value.span, help="budget shares are for team, user or key"))
        return shares

    def check_embedder(self, value: ast.Value, spec: Field) -> Any:
        """`hash` and `minilm` run in the gateway; `model(NAME)` calls a declared model."""
        if isinstance(value, ast.Ident) and value.name in EMBEDDERS:
            return (value.name, None)
        if isinstance(value, ast.Call) and value.name.name == "model" and \
                len(value.args) == 1 and isinstance(value.args[0], ast.Ident):
            return ("model", value.args[0])
        if isinstance(value, ast.Ident):
            self.report(error("GW206", f"unknown embedder '{value.name}'"
                                       f"{suggestion(value.name, EMBEDDERS)}", value.span,
                              help="embedder = hash, minilm or model(MODEL), MODEL an "
                                   "embedding model the policy declares"))
            return INVALID
        return self.wrong(value, "embedder")

    def check_over(self, value: ast.Value, spec: Field) -> Any:
        if isinstance(value, ast.Ident) and value.name in ("reject", "allow"):
            return (value.name, None)
        if isinstance(value, ast.Call) and value.name.name == "downgrade" and \
                len(value.args) == 1 and isinstance(value.args[0], ast.Ident):
            return ("downgrade", value.args[0])
        if isinstance(value, ast.Ident):
            self.report(error("GW206", f"unknown value '{value.name}'"
                                       f"{suggestion(value.name, ['reject', 'allow'])}",
                              value.span, help="over = reject, allow or downgrade(MODEL)"))
            return INVALID
        return self.wrong(value, "over")
