"""ResolveNames: every name a policy uses refers to something it declares.

A name a syntax error may have taken the declaration of is not reported:
that declaration's own error says what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping

from compiler.context import Context
from dsl import ast
from dsl.diagnostics import error, suggestion


def run(ctx: Context) -> None:
    providers = ctx.named.get("provider", {})
    models = ctx.named.get("model", {})
    targets = {**models, **ctx.named.get("pool", {})}

    def check(name: ast.Ident | ast.ModelTarget, table: Mapping[str, ast.Decl], what: str,
              code: str = "GW101") -> None:
        text = name.name
        if text in table or ctx.may_have_lost(text, tuple(what.split(" or "))):
            return
        close = suggestion(text, table)
        declared = ", ".join(sorted(table)[:8]) + (", ..." if len(table) > 8 else "")
        ctx.report(error(code, f"unknown {what} '{text}'{close}", name.span,
                         help=f"declared: {declared}" if close and declared else
                         f"declare it with `{what.split()[0]} {text} {{ ... }}`"))

    for model in models.values():
        provider = ctx.value(model.body, "provider")
        if provider is not None:
            check(model.body.attributes()["provider"].value, providers, "provider",  # type: ignore[arg-type]
                  "GW102")
    for pool in ctx.named.get("pool", {}).values():
        for _, ident in ctx.value(pool.body, "members", ()):
            check(ident, models, "model")
    if ctx.route is not None:
        for rule in ctx.route.rules:
            for target in rule.targets:
                if isinstance(target, ast.ModelTarget):
                    check(target, targets, "model or pool")
    notifies = ctx.named.get("notify", {})
    for decl in ctx.decls:
        if isinstance(decl, ast.LimitDecl) and decl.kind == "budget":
            notify = decl.body.attributes().get("notify")
            if notify is not None and id(notify) in ctx.values:
                check(notify.value, notifies, "notify", "GW106")  # type: ignore[arg-type]
            over = ctx.value(decl.body, "over")
            if over is not None and over[1] is not None:
                check(over[1], targets, "model or pool", "GW107")
        elif isinstance(decl, ast.CacheDecl):
            embedder = ctx.value(decl.body, "embedder")
            if embedder is not None and embedder[1] is not None:
                check(embedder[1], models, "model")
        elif isinstance(decl, ast.TestDecl):
            expect = decl.body.blocks().get("expect")
            if expect is not None:
                for ident in ctx.value(expect.body, "route", ()):
                    check(ident, targets, "model or pool")
                for ident in ctx.value(expect.body, "guards", ()):
                    check(ident, ctx.guards, "guard", "GW112")
