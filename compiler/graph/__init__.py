"""The compiled decision graph: build it from a policy, evaluate it per request."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from compiler.graph.build import Builder, matrix_of
from compiler.graph.nodes import Evaluator, Leaf, Node, Product, joined, step
from compiler.interpreter import Plan
from compiler.policy import Policy
from compiler.request import Request


@dataclass
class Graph:
    policy: Policy
    nodes: list[Node]
    plans: list[Plan]
    root: int
    version: str = ""
    _evaluator: Evaluator | None = field(default=None, repr=False)

    def plan(self, request: Request) -> Plan:
        if self._evaluator is None:
            self._evaluator = Evaluator(self.nodes, self.plans, self.root)
        return self._evaluator.evaluate(request)

    def trace(self, request: Request) -> tuple[Plan, list[tuple[int, str]]]:
        """The plan and the tests on the way, each with the node it led to.

        Each test appears once: the limits' sub-graph, walked after the
        route's, asks again about attributes the route already switched on
        (`team is 'research'`), and saying so twice tells the reader nothing.
        """
        path: dict[str, int] = {}
        plan = self._walk(self.root, request, path)
        return plan, [(index, why) for why, index in path.items()]

    def _walk(self, index: int, request: Request, path: dict[str, int]) -> Plan:
        while not isinstance(node := self.nodes[index], Leaf):
            if isinstance(node, Product):
                return joined(self._walk(node.route, request, path),
                              self._walk(node.limits, request, path))
            index, why = step(node, request)
            path.setdefault(why, index)
        return self.plans[node.plan]


def compile_policy(policy: Policy, version: str = "") -> Graph:
    builder = Builder(*matrix_of(policy))
    root = builder.build()
    return Graph(policy, builder.nodes, builder.plans, root, version)


def policy_version(sources: Mapping[str, str]) -> str:
    """A short hash of every file of a policy: what `x-gw-policy` reports."""
    digest = hashlib.sha256()
    for path in sorted(sources):
        digest.update(path.encode() + b"\0" + sources[path].encode() + b"\0")
    return digest.hexdigest()[:12]
