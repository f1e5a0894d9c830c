"""CheckConditions: `when` clauses, checked and lowered to `compiler.conditions`.

An attribute must exist, its operator must fit its type (strings compare for
equality and match, numbers order, booleans stand alone), literals must be of
the attribute's type and regular expressions must compile.
"""

from __future__ import annotations

from compiler import conditions as c
from compiler import units
from compiler.context import Context
from compiler.request import ATTRIBUTES, ENDPOINTS, KEYED, PERCENT_ATTRIBUTES, Scalar, attr_kind
from compiler.values import INVALID, Checker, Field, describe
from dsl import ast
from dsl.diagnostics import error, suggestion
from dsl.span import Span

OPERATORS = {"str": ("==", "!="), "bool": ("==", "!="), "num": ("==", "!=", "<", "<=", ">", ">=")}
KIND_WORDS = {"str": "a string", "num": "a number", "bool": "true or false"}


def run(ctx: Context) -> None:
    lowering = _Lowering(ctx)
    for cond in _conditions(ctx):
        lowered = lowering.cond(cond)
        if lowered is not None:
            ctx.conds[id(cond)] = lowered


def _conditions(ctx: Context) -> list[ast.Cond]:
    found: list[ast.Cond] = []
    if ctx.route is not None:
        found.extend(rule.cond for rule in ctx.route.rules if rule.cond is not None)
    for decl in ctx.decls:
        if isinstance(decl, (ast.CacheDecl, ast.LimitDecl, ast.GuardDecl)) and \
                decl.cond is not None:
            found.append(decl.cond)
    return found


class _Lowering:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.checker = Checker(ctx.report)

    def cond(self, cond: ast.Cond) -> c.Cond | None:
        """The lowered condition, or None where any part of it failed to check."""
        if isinstance(cond, (ast.And, ast.Or)):
            items = [self.cond(item) for item in cond.items]
            if any(item is None for item in items):
                return None
            combine = c.all_of if isinstance(cond, ast.And) else c.any_of
            return combine(items)  # type: ignore[arg-type]
        if isinstance(cond, ast.Not):
            item = self.cond(cond.item)
            return None if item is None else c.negate(item)
        attr = self.attr(cond.attr)
        if attr is None:
            return None
        kind = attr_kind(attr)
        assert kind is not None
        if isinstance(cond, ast.Truth):
            if kind != "bool":
                self.fail(cond.span, f"'{cond.attr.name}' is {KIND_WORDS[kind]}, not a "
                          "condition on its own", "compare it: `team == \"x\"`")
                return None
            return c.Truth(attr)
        if isinstance(cond, ast.Matches):
            if kind != "str":
                self.fail(cond.span, f"'matches' needs a string attribute; "
                          f"'{cond.attr.name}' is {KIND_WORDS[kind]}",
                          "match model, user, team, key, endpoint, header[...] or meta[...]")
                return None
            if not self.checker.pattern_ok(cond.pattern):
                return None
            return c.Match(attr, cond.pattern.value)
        if isinstance(cond, ast.Compare):
            if cond.op not in OPERATORS[kind]:
                self.fail(cond.span, f"'{cond.op}' does not apply to {KIND_WORDS[kind]} "
                          f"('{cond.attr.name}')", "use " + " or ".join(OPERATORS[kind]))
                return None
            value = self.literal(cond.value, attr, kind)
            return None if value is INVALID else c.Cmp(attr, cond.op, value)
        values = [self.literal(v, attr, kind) if not isinstance(v, ast.Weighted)
                  else self.checker.wrong(v, "string") for v in cond.values.items]
        if any(v is INVALID for v in values):
            return None
        return c.In(attr, frozenset(values), cond.negated)

    def fail(self, span: Span, message: str, help: str) -> None:
        self.ctx.report(error("GW205", message, span, help=help))

    def attr(self, ref: ast.AttrRef) -> str | None:
        if ref.name in KEYED:
            if ref.key is None:
                self.fail(ref.span, f"'{ref.name}' needs a name in brackets",
                          f'write `{ref.name}["x-name"]`')
                return None
            return f"{ref.name}:{ref.key.value}"
        if ref.key is not None or ref.name not in ATTRIBUTES:
            known = [*ATTRIBUTES, *KEYED]
            self.ctx.report(error("GW105", f"unknown attribute '{ref.name}'"
                                           f"{suggestion(ref.name, known)}", ref.span,
                                  help="conditions can use: " + ", ".join(known)))
            return None
        return ref.name

    def literal(self, value: ast.Value, attr: str, kind: str) -> Scalar:
        if kind == "str":
            checked = self.checker.check(value, Field("string"))
            if checked is not INVALID and attr == "endpoint" and checked not in ENDPOINTS:
                self.ctx.report(error("GW206", f"unknown endpoint '{checked}'"
                                               f"{suggestion(checked, ENDPOINTS)}", value.span,
                                      help="endpoints: " + ", ".join(ENDPOINTS)))
                return INVALID  # type: ignore[no-any-return]
            return checked  # type: ignore[no-any-return]
        if kind == "bool":
            return self.checker.check(value, Field("bool"))  # type: ignore[no-any-return]
        if attr in PERCENT_ATTRIBUTES:
            return self.checker.check(value, Field("fraction"))  # type: ignore[no-any-return]
        if isinstance(value, ast.Quantity) and not self.checker.unit_ok(value):
            return INVALID  # type: ignore[no-any-return]
        if isinstance(value, ast.Quantity) and \
                units.suffix_kind(value.number, value.suffix) == "count":
            if value.suffix and attr == "temperature":
                return self.checker.wrong(value, "number")  # type: ignore[no-any-return]
            return units.count_value(value.number, value.suffix)
        self.ctx.report(error("GW205", f"'{attr}' is a number; found {describe(value)}",
                              value.span, help="compare it with a number: `tokens > 100k`"))
        return INVALID  # type: ignore[no-any-return]
