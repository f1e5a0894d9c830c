"""CheckAttributes: every block holds only attributes it knows, of the right type.

The typed value of each attribute that checks is kept in `ctx.values`, keyed
by its node, for the passes after this one.
"""

from __future__ import annotations

from compiler.context import Context
from compiler.schema import BLOCKS, DIMENSIONS, KEYED_DIMENSIONS
from compiler.values import INVALID, Checker, Field
from dsl import ast
from dsl.diagnostics import Related, error, suggestion


def run(ctx: Context) -> None:
    checker = Checker(ctx.report)
    for decl in ctx.decls:
        if isinstance(decl, (ast.NamedDecl, ast.UnnamedDecl)):
            _block(ctx, checker, decl.kind, decl.body, decl.span)
        elif isinstance(decl, ast.CacheDecl):
            _block(ctx, checker, "cache", decl.body, decl.span)
        elif isinstance(decl, ast.LimitDecl):
            _subject(ctx, decl.subject)
            _block(ctx, checker, decl.kind, decl.body, decl.span)
            if decl.kind == "quota" and not any(
                name in decl.body.attributes() for name in ("requests", "tokens", "concurrency")
            ):
                ctx.report(error("GW108", "a quota needs 'requests', 'tokens' or 'concurrency'",
                                 decl.span, help="for example `requests = 60 per minute`"))
        elif isinstance(decl, ast.GuardDecl):
            _block(ctx, checker, "guard", decl.body, decl.span)
            _checks_something(ctx, decl)
        elif isinstance(decl, ast.TestDecl):
            _block(ctx, checker, "test", decl.body, decl.span)


def _checks_something(ctx: Context, decl: ast.GuardDecl) -> None:
    """A guard needs a check: detectors, patterns or a webhook, written and not empty.

    An attribute whose value failed to check has its own error and counts as written.
    """
    attributes = decl.body.attributes()
    written = [attributes[name] for name in ("detect", "deny", "webhook") if name in attributes]
    if any(ctx.values.get(id(attribute), INVALID) is INVALID or ctx.values[id(attribute)]
           for attribute in written):
        return
    ctx.report(error("GW108", f"guard '{decl.name.name}' checks nothing: it needs 'detect', "
                              "'deny' or 'webhook'", decl.header,
                     help="for example `detect = [email, credit_card]`"))


def _subject(ctx: Context, subject: ast.Subject) -> None:
    dimension, keyed = subject.dimension, subject.kind == "per" and subject.value is not None
    if keyed and dimension not in KEYED_DIMENSIONS:
        ctx.report(error("GW206", f"'{dimension}' takes no key: only meta[...] and "
                                  "header[...] count one value per key", subject.span,
                         help=f"write `per {dimension}`, or `per meta[\"NAME\"]`"))
    elif subject.kind == "per" and not keyed and dimension in KEYED_DIMENSIONS:
        ctx.report(error("GW206", f"'per {dimension}' needs a key: which {dimension} value "
                                  "to count by", subject.span,
                         help=f'for example `per {dimension}["feature"]`'))
    elif subject.kind != "global" and dimension not in (*DIMENSIONS, *KEYED_DIMENSIONS):
        ctx.report(error("GW206", f"unknown subject '{dimension}'"
                                  f"{suggestion(dimension, DIMENSIONS)}", subject.span,
                         help="limits apply per team, user, key or model, per meta[\"NAME\"] "
                              "or header[\"NAME\"], or global"))
    elif subject.kind == "one" and dimension in KEYED_DIMENSIONS:
        ctx.report(error("GW206", f"a {dimension} value is not an identity", subject.span,
                         help=f'count by it with `per {dimension}["NAME"]`'))


def _block(ctx: Context, checker: Checker, kind: str, body: ast.Body, span: object,
           schema: dict[str, Field] | None = None,
           nested: dict[str, dict[str, Field]] | None = None) -> None:
    if schema is None:
        schema, nested = BLOCKS[kind]
    nested = nested or {}
    seen: dict[str, ast.Attribute | ast.Nested] = {}
    for member in body.members:
        name = member.name.name
        if name in seen:
            ctx.report(error("GW103", f"'{name}' is set twice in this block", member.name.span,
                             help="keep one of them",
                             related=[Related(seen[name].name.span, "first set here")]))
            continue
        seen[name] = member
        if isinstance(member, ast.Nested):
            if name not in nested:
                _unknown(ctx, kind, member.name, [*schema, *nested], "block")
                continue
            _block(ctx, checker, name, member.body, member.span, nested[name], {})
            continue
        spec = schema.get(name)
        if spec is None:
            _unknown(ctx, kind, member.name, [*schema, *nested], "attribute")
            continue
        value = checker.check(member.value, spec)
        if value is not INVALID:
            ctx.values[id(member)] = value
    for name, spec in schema.items():
        if spec.required and name not in seen:
            ctx.report(error("GW108", f"{kind} is missing '{name}'", body.span,
                             help=f"add `{name} = ...`"))
    for name in nested:
        if kind == "test" and name not in seen:
            ctx.report(error("GW108", f"test is missing '{name} {{ ... }}'", body.span,
                             help="a test is `given { ... } expect { ... }`"))


def _unknown(ctx: Context, kind: str, name: ast.Ident, known: list[str], what: str) -> None:
    ctx.report(error("GW104", f"unknown {what} '{name.name}' in {kind}"
                              f"{suggestion(name.name, known)}", name.span,
                     help=f"{kind} takes: {', '.join(known)}"))
