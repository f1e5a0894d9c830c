"""The metrics as Prometheus reads them: the exposition parsed back."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from runtime.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for s in family.samples}


def test_histograms_count_each_observation_in_every_bucket_it_fits() -> None:
    metrics = Metrics()
    for seconds in (0.003, 0.005, 0.2, 200.0):
        metrics.latency.observe(("r",), seconds)
    found = samples(metrics)

    def bucket(le: str) -> float:
        return found[("gw_request_seconds_bucket", (("le", le), ("route", "r")))]
    assert bucket("0.005") == 2  # an observation on a bound counts in that bucket
    assert bucket("0.1") == 2 and bucket("0.25") == 3 and bucket("120.0") == 3
    assert bucket("+Inf") == 4
    assert found[("gw_request_seconds_count", (("route", "r"),))] == 4
    assert found[("gw_request_seconds_sum", (("route", "r"),))] == 200.208


def test_counters_add_up_and_breakers_are_read_when_scraped() -> None:
    states = {"a": 0}
    metrics = Metrics(lambda: states)
    metrics.tokens.add(("m", "prompt"), 5)
    metrics.tokens.add(("m", "prompt"), 7)
    states["a"] = 2
    found = samples(metrics)
    assert found[("gw_tokens_total", (("kind", "prompt"), ("model", "m")))] == 12
    assert found[("gw_breaker_state", (("model", "a"),))] == 2
