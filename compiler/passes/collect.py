"""CollectDeclarations: every name by kind, each declared once, one route.

Models and pools share one namespace, since a route target may be either;
guards have one of their own.
"""

from __future__ import annotations

from compiler.context import Context
from dsl import ast
from dsl.diagnostics import Related, error
from dsl.span import Span

TARGET_KINDS = ("model", "pool")


def run(ctx: Context) -> None:
    for decl in ctx.decls:
        if isinstance(decl, ast.NamedDecl):
            _named(ctx, decl)
        elif isinstance(decl, ast.UnnamedDecl):
            first = ctx.unnamed.get(decl.kind)
            if first is None:
                ctx.unnamed[decl.kind] = decl
            else:
                ctx.report(error("GW103", f"'{decl.kind}' is declared twice", decl.span,
                                 help=f"a policy has at most one top-level '{decl.kind}' block",
                                 related=[Related(first.span, "first declared here")]))
        elif isinstance(decl, ast.GuardDecl):
            first_guard = ctx.guards.get(decl.name.name)
            if first_guard is None:
                ctx.guards[decl.name.name] = decl
            else:
                ctx.report(error("GW103", f"guard '{decl.name.name}' is declared twice",
                                 decl.name.span, help="give each guard its own name",
                                 related=[Related(first_guard.name.span, "first declared here")]))
        elif isinstance(decl, ast.RouteDecl):
            if ctx.route is None:
                ctx.route = decl
            else:
                ctx.report(error("GW109", "a policy has one 'route' block; this is a second",
                                 decl.span, help="merge the rules into the first 'route' block",
                                 related=[Related(ctx.route.span, "the first 'route' block")]))
    if ctx.route is None and not ctx.may_have_lost(None, ("route",)):
        ctx.report(error("GW109", "the policy has no 'route' block", Span.point(ctx.root, 1, 1),
                         help="add `route { otherwise -> MODEL }`; a file of shared "
                              "declarations is checked through the policy that imports it"))


def _named(ctx: Context, decl: ast.NamedDecl) -> None:
    name = decl.name.name
    kinds = TARGET_KINDS if decl.kind in TARGET_KINDS else (decl.kind,)
    for kind in kinds:
        first = ctx.named.get(kind, {}).get(name)
        if first is None:
            continue
        if first.kind == decl.kind:
            message = f"{decl.kind} '{name}' is declared twice"
        else:
            message = f"'{name}' is declared as both a {first.kind} and a {decl.kind}"
        ctx.report(error("GW103", message, decl.name.span,
                         help="give each declaration its own name",
                         related=[Related(first.name.span, "first declared here")]))
        return
    ctx.named.setdefault(decl.kind, {})[name] = decl
