"""Prometheus metrics, in a registry of the gateway's own.

Requests are counted by route rule, model, provider, status and cache
result; latency is observed for the whole request and for each upstream
attempt; tokens by model and direction; reloads by outcome; breaker state by
model (0 closed, 1 half-open, 2 open).

Every figure is updated on the event loop, so it is kept in a plain dict and
handed to prometheus-client as a custom collector's families when scraped.
prometheus-client's own metric objects take a lock and check their state on
every update, several times per request. Breaker states are read from the
breakers at scrape time, so the gauge is never a request behind.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
Labels = tuple[str, ...]


class Counter:
    def __init__(self, name: str, documentation: str, labels: Labels) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[Labels, float] = {}

    def add(self, labels: Labels, amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.values.items():
            family.add_metric(labels, value)
        return family


class Histogram:
    def __init__(self, name: str, documentation: str, labels: Labels) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[Labels, list[float]] = {}  # a count per bucket, +Inf last, then the sum

    def observe(self, labels: Labels, seconds: float) -> None:
        counts = self.values.get(labels)
        if counts is None:
            counts = self.values[labels] = [0] * (len(BUCKETS) + 2)
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, counts in self.values.items():
            cumulative, buckets = 0.0, []
            for bound, count in zip((*map(floatToGoString, BUCKETS), "+Inf"), counts,
                                    strict=False):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(labels, buckets, counts[-1])
        return family


class Metrics:
    def __init__(self, breaker_states: Callable[[], Mapping[str, int]] = dict) -> None:
        self.requests = Counter("gw_requests", "Requests answered",
                                ("route", "model", "provider", "status", "cache"))
        self.latency = Histogram("gw_request_seconds", "Whole-request latency", ("route",))
        self.upstream = Histogram("gw_upstream_seconds", "Latency of each upstream attempt",
                                  ("model", "provider", "outcome"))
        self.tokens = Counter("gw_tokens", "Tokens by model and direction", ("model", "kind"))
        self.reloads = Counter("gw_reloads", "Policy reloads by outcome", ("outcome",))
        self.spend = Counter("gw_spend_usd", "Spend settled, in USD, by model", ("model",))
        self.refusals = Counter("gw_refusals", "Requests refused by a limit, by reason "
                                "(mode shadow: would have been)", ("reason", "mode"))
        self.store = Histogram("gw_store_seconds", "Latency of the counter store's calls",
                               ("op",))
        self.store_errors = Counter("gw_store_errors", "Counter store calls that failed",
                                    ("op",))
        self.cache = Counter("gw_cache", "Cache lookups by result (hit, miss, bypass)",
                             ("result",))
        self.saved = Counter("gw_cache_saved_usd", "What the answers served from the cache "
                             "cost when fetched, in USD, by model", ("model",))
        self.guards = Counter("gw_guard_actions", "What guards did (mode shadow: would "
                              "have done), by guard, direction, action and what they found",
                              ("guard", "direction", "action", "kind", "mode"))
        self.guard_webhooks = Histogram("gw_guard_webhook_seconds", "Latency of guards' "
                                        "webhooks, by guard and outcome (allow, deny, error)",
                                        ("guard", "outcome"))
        self.degraded = 0  # 1 while the shared counters are unreachable and memory stands in
        self.breaker_states = breaker_states
        self.registry = CollectorRegistry()
        self.registry.register(self)  # type: ignore[arg-type]  # a collector is any .collect()

    def collect(self) -> Iterator[Metric]:
        for figures in (self.requests, self.latency, self.upstream, self.tokens, self.reloads,
                        self.spend, self.refusals, self.store, self.store_errors, self.cache,
                        self.saved, self.guards, self.guard_webhooks):
            yield figures.family()
        degraded = GaugeMetricFamily("gw_state_degraded", "1 while the shared counters are "
                                     "unreachable and this replica counts alone")
        degraded.add_metric((), self.degraded)
        yield degraded
        breakers = GaugeMetricFamily("gw_breaker_state", "0 closed, 1 half-open, 2 open",
                                     labels=("model",))
        for model, state in sorted(self.breaker_states().items()):
            breakers.add_metric((model,), state)
        yield breakers

    def render(self) -> bytes:
        return generate_latest(self.registry)
