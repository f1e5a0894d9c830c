"""The compiled graph as a JSON file: its schema, writing and loading.

The document is the policy's dataclasses and the graph's nodes as they are:
pydantic derives the JSON Schema from them (`gwc schema`) and rebuilds them
from JSON, so there is one definition of the format, not two. A file read
from disk is validated against the schema with jsonschema before anything
trusts it, then checked for what a schema cannot say: that every index
points at a node or plan that exists, and that the graph has no cycle.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import Field, TypeAdapter

from compiler.graph import Graph
from compiler.graph.nodes import Evaluator, Leaf, Node, children
from compiler.interpreter import Plan
from compiler.policy import Policy

FORMAT: Literal["gwc-graph/1"] = "gwc-graph/1"


@dataclass
class GraphDocument:
    format: Literal["gwc-graph/1"]
    version: str
    root: int
    nodes: list[Annotated[Node, Field(discriminator="kind")]]
    plans: list[Plan]
    policy: Policy


class GraphFileError(ValueError):
    """A graph file that is not one gwc can run."""


@functools.cache
def _adapter() -> TypeAdapter[GraphDocument]:
    return TypeAdapter(GraphDocument)


@functools.cache
def schema() -> dict[str, Any]:
    document = _adapter().json_schema()
    return {
        **document,
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://gwc.dev/schema/graph-1.json",
        "title": "gwc compiled decision graph",
    }


def to_json(graph: Graph) -> dict[str, Any]:
    document = GraphDocument(FORMAT, graph.version, graph.root, graph.nodes, graph.plans,
                             graph.policy)
    data: dict[str, Any] = _adapter().dump_python(document, mode="json")
    validate(data)
    return data


def validate(data: Any) -> None:
    try:
        jsonschema.validate(data, schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
        raise GraphFileError(f"not a gwc graph: at {where}: {exc.message}") from exc


def from_json(data: Any) -> Graph:
    validate(data)
    document = _adapter().validate_python(data)
    _check_references(document)
    return Graph(document.policy, document.nodes, document.plans, document.root,
                 document.version)


def _check_references(document: GraphDocument) -> None:
    nodes, plans = document.nodes, document.plans
    if not 0 <= document.root < len(nodes):
        raise GraphFileError("not a gwc graph: the root is not a node")
    for index, node in enumerate(nodes):
        if isinstance(node, Leaf) and not 0 <= node.plan < len(plans):
            raise GraphFileError(f"not a gwc graph: node {index} names a missing plan")
        if any(not 0 <= child < len(nodes) for child in children(node)):
            raise GraphFileError(f"not a gwc graph: node {index} names a missing node")
    try:
        Evaluator(nodes, plans, document.root)
    except KeyError as exc:
        raise GraphFileError("not a gwc graph: its nodes form a cycle") from exc
