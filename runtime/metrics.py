"""Prometheus metrics, in a registry of the gateway's own.

Requests are counted by route rule, model, provider, status and cache
result; latency is observed for the whole request and for each upstream
attempt; tokens by model and direction; reloads by outcome; breaker state by
model (0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gw_requests", "Requests answered", ["route", "model", "provider",
                                "status", "cache"], registry=self.registry)
        self.latency = Histogram("gw_request_seconds", "Whole-request latency", ["route"],
                                 buckets=BUCKETS, registry=self.registry)
        self.upstream = Histogram("gw_upstream_seconds", "Latency of each upstream attempt",
                                  ["model", "provider", "outcome"], buckets=BUCKETS,
                                  registry=self.registry)
        self.tokens = Counter("gw_tokens", "Tokens by model and direction", ["model", "kind"],
                              registry=self.registry)
        self.reloads = Counter("gw_reloads", "Policy reloads by outcome", ["outcome"],
                               registry=self.registry)
        self.breaker = Gauge("gw_breaker_state", "0 closed, 1 half-open, 2 open", ["model"],
                             registry=self.registry)

        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: prometheus-client takes a lock and
        builds a key on every call, on the hot path of every request."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
