"""A compiled policy as whatever runs one sees it: the runtime's one door into the compiler.

`load` reads a policy, a `.gw` file with its imports (checked and compiled)
or a `graph.json` from `gwc compile` (validated), and either returns a
`CompiledPolicy` or raises `Refused` with the diagnostics. `decide` walks the
graph for one request and hands back a `Decision` that holds the blocks
themselves, with every setting a call runs under already folded in
(`Deployment`), so nothing on a request's way reads the policy again.

The runtime imports the compiler through this module only; the types it
needs are re-exported here, the traffic format `gwc simulate` reads among them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from compiler.conditions import regex
from compiler.counters import block_id
from compiler.graph import Graph
from compiler.needles import needles
from compiler.plan import Plan, route
from compiler.policy import (
    Auth,
    Breaker,
    Budget,
    Cache,
    EnvValue,
    Guard,
    Health,
    Model,
    Policy,
    Provider,
    Quota,
    Retry,
    Rule,
    Timeouts,
)
from compiler.request import ENDPOINTS, Request
from compiler.traffic import Logged, TrafficError, parse, timestamp

__all__ = [
    "ENDPOINTS", "Auth", "Breaker", "Budget", "Cache", "CompiledPolicy", "Decision",
    "Deployment", "EnvValue", "Guard", "Health", "Logged", "Model", "PoolTarget", "Provider",
    "Quota", "Refused", "Request", "Retry", "Timeouts", "TrafficError", "block_id", "load",
    "needles", "parse", "regex", "timestamp",
]


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model and the settings its calls run under: the model's own, else its
    provider's, else the defaults."""

    model: Model
    provider: Provider
    timeouts: Timeouts
    # read on every call: attributes, not properties, as they cost a call each
    name: str = field(init=False, compare=False)
    retry: Retry = field(init=False, compare=False)
    breaker: Breaker = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.model.name)
        object.__setattr__(self, "retry", self.provider.retry)
        object.__setattr__(self, "breaker", self.provider.breaker)


@dataclass(frozen=True, slots=True)
class PoolTarget:
    """A pool in a chain: its members are ordered per request, by live figures."""

    name: str
    strategy: str
    members: tuple[tuple[Deployment, float], ...]  # (member, weight)
    weights: tuple[tuple[str, float], ...] = field(init=False, compare=False)
    by_name: dict[str, Deployment] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple((d.name, w) for d, w in self.members))
        object.__setattr__(self, "by_name", {d.name: d for d, _ in self.members})

    def price(self, name: str) -> float:
        """A member's input price, for `least_cost`."""
        return self.by_name[name].model.input_price or 0.0


Target = Deployment | PoolTarget


@dataclass(frozen=True, slots=True)
class Decision:
    """One request's plan, resolved: what the runtime runs, by value."""

    rule: Rule | None
    where: str  # the rule's `file:line`, relative to the policy's folder; "" for none
    targets: tuple[Target, ...]  # the fallback chain, `requested` resolved
    quotas: tuple[Quota, ...]
    budgets: tuple[Budget, ...]
    cache: Cache | None
    guards: tuple[Guard, ...] = ()  # in the policy's order: input and output ones
    deny: str | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "deny", self.rule.deny if self.rule is not None else None)


class Refused(Exception):
    """A policy that cannot be served: what is wrong, as text and as diagnostics."""

    def __init__(self, message: str, report: str = "",
                 diagnostics: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.report = report or message + "\n"
        self.diagnostics = diagnostics or []

    def __reduce__(self) -> tuple[type[Refused], tuple[str, str, list[dict[str, object]]]]:
        """Whole across a process boundary (a reload compiles in a process of its own)."""
        return (Refused, (self.message, self.report, self.diagnostics))


@dataclass
class CompiledPolicy:
    graph: Graph
    sources: list[str]
    folder: str  # where `file:line` labels are relative to
    # read per request: attributes, not properties, as they cost a call each
    policy: Policy = field(init=False, repr=False)
    version: str = field(init=False)
    auth: Auth = field(init=False, repr=False)
    providers: dict[str, Provider] = field(init=False, repr=False)
    deployments: dict[str, Deployment] = field(init=False)
    pools: dict[str, PoolTarget] = field(init=False)
    _decisions: dict[tuple[int, str | None], Decision] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.policy = policy = self.graph.policy
        self.version, self.auth, self.providers = self.graph.version, policy.auth, policy.providers
        self.deployments = {name: _deployment(model, policy.providers[model.provider])
                            for name, model in policy.models.items()}
        self.pools = {name: PoolTarget(name, pool.strategy, tuple(
            (self.deployments[m.model], m.weight) for m in pool.members))
            for name, pool in policy.pools.items()}
        self._decisions = {}

    def decide(self, request: Request) -> Decision:
        plan = self.graph.plan(request)
        # `requested` resolves the same for every name the policy does not declare,
        # so the cache is bounded by the declared names. A plan is known by its
        # identity, not its (hashed on every call) fields: the graph's evaluator hands
        # out one object per plan, and keeps each alive as long as this policy.
        named = request.model if request.model in self.deployments or \
            request.model in self.pools else None
        key = (id(plan), named)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decisions[key] = self._resolve(plan, named)
        return decision

    def _resolve(self, plan: Plan, named: str | None) -> Decision:
        policy = self.policy
        rule = policy.rules[plan.rule] if plan.rule is not None else None
        chain = route(rule, named, policy.declared)
        where = ""
        if rule is not None:
            where = f"{os.path.relpath(rule.source.file, self.folder)}:{rule.source.line}"
        return Decision(
            rule, where,
            tuple(self.pools[name] if name in self.pools else self.deployments[name]
                  for name in chain),
            tuple(policy.quotas[i] for i in plan.quotas),
            tuple(policy.budgets[i] for i in plan.budgets),
            policy.caches[plan.cache] if plan.cache is not None else None,
            tuple(policy.guards[i] for i in plan.guards))

    def target(self, name: str) -> Deployment | PoolTarget:
        """A model or pool by its name, as a chain holds it."""
        return self.deployments.get(name) or self.pools[name]

    def warm(self) -> None:
        """Build the graph's evaluator now, so the first request does not."""
        self.graph.plan(Request())

    def __getstate__(self) -> dict[str, object]:
        """Only what rebuilds it: the evaluator's closures and the caches stay behind."""
        return {"graph": Graph(self.policy, self.graph.nodes, self.graph.plans, self.graph.root,
                               self.version), "sources": self.sources, "folder": self.folder}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.__post_init__()


def _deployment(model: Model, provider: Provider) -> Deployment:
    defaults = Timeouts()

    def bound(name: str, default: float) -> float:
        value = getattr(model, name)
        if value is None:
            value = getattr(provider, name)
        return default if value is None else float(value)
    return Deployment(model, provider, Timeouts(
        connect=bound("connect_timeout", defaults.connect),
        first_byte=bound("first_byte_timeout", defaults.first_byte),
        idle=bound("idle_timeout", defaults.idle),
        total=bound("timeout", defaults.total)))


def load(path: str, env: Mapping[str, str] | None = None) -> CompiledPolicy:
    """The policy at `path`, compiled and ready to serve, or `Refused`."""
    if path.endswith(".json"):
        return _load_graph(path)
    from compiler.driver import check
    from compiler.output import Report, render

    ctx = check(os.path.normpath(path), env)
    errors = [d for d in ctx.diagnostics if d.is_error]
    if errors or ctx.graph is None:
        first = errors[0] if errors else None
        message = "policy refused" + (
            f": {first.span.file}:{first.span.line}:{first.span.column}: {first.message}"
            if first else "")
        described: list[dict[str, object]] = [
            {"file": d.span.file, "line": d.span.line, "column": d.span.column,
             "code": d.code, "message": d.message} for d in errors]
        raise Refused(message, render(Report(errors, ctx.sources), "text"), described)
    return CompiledPolicy(ctx.graph, sorted(ctx.sources), os.path.dirname(ctx.root) or ".")


def _load_graph(path: str) -> CompiledPolicy:
    from compiler.graph.document import GraphFileError, from_json

    try:
        with open(path, encoding="utf-8") as handle:
            graph = from_json(json.load(handle))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, GraphFileError) as exc:
        raise Refused(f"policy refused: {path}: {exc}") from exc
    # The rules are all in the one route block, so in the file `gwc compile` was given.
    rules = graph.policy.rules
    return CompiledPolicy(graph, [path],
                          os.path.dirname(rules[0].source.file) or "." if rules else ".")
