"""What the passes share while compiling one policy.

Each pass reads what earlier passes left here and adds its own part; all of
them report into `diagnostics` and keep going, so one run finds everything.
A part that failed to check is left out rather than guessed at, and later
passes work with what remains. So is a part a syntax error broke: the
declarations around it are checked, and a pass that finds something missing
asks `may_have_lost` before blaming the policy for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compiler.conditions import Cond
from compiler.graph import Graph
from compiler.policy import Policy
from dsl import ast
from dsl.diagnostics import Diagnostic
from dsl.dropped import Dropped


@dataclass
class Context:
    root: str
    sources: dict[str, str] = field(default_factory=dict)  # file -> text, for rendering
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    diagnostics: list[Diagnostic] = field(default_factory=list)

    # imports: every declaration of the policy, imported files first; what syntax
    # errors broke is left out of `decls` and listed in `dropped`
    decls: list[ast.Decl] = field(default_factory=list)
    syntax_ok: bool = True
    dropped: list[Dropped] = field(default_factory=list)
    unread: bool = False  # a file of the policy could not be read at all

    # collect: declarations by kind and name
    named: dict[str, dict[str, ast.NamedDecl]] = field(default_factory=dict)
    unnamed: dict[str, ast.UnnamedDecl] = field(default_factory=dict)
    route: ast.RouteDecl | None = None
    guards: dict[str, ast.GuardDecl] = field(default_factory=dict)  # in policy order

    # attributes: the typed value of every attribute that checked, by its node
    values: dict[int, Any] = field(default_factory=dict)

    # conditions: each condition that checked, by its node
    conds: dict[int, Cond] = field(default_factory=dict)

    # lower: the policy itself
    policy: Policy = field(default_factory=Policy)

    # graph: the compiled decision graph
    graph: Graph | None = None

    def report(self, diagnostic: Diagnostic) -> None:
        self.diagnostics.append(diagnostic)

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.diagnostics)

    def may_have_lost(self, name: str | None, kinds: tuple[str, ...]) -> bool:
        """Whether a part of the policy that could not be read or parsed may have
        declared `name` as one of `kinds` (`route` for the route block): if so,
        its absence is no news, and the part's own error says what is wrong."""
        if self.unread:
            return True
        return any(name in d.names or "*" in d.kinds or not d.kinds.isdisjoint(kinds)
                   for d in self.dropped)

    def value(self, body: ast.Body, name: str, default: Any = None) -> Any:
        """The checked value of one attribute of a body, or the default."""
        attribute = body.attributes().get(name)
        if attribute is None:
            return default
        return self.values.get(id(attribute), default)
