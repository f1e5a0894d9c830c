"""The stateful mechanisms on their own: breaker, pool orders, backoff."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from policies import backoff
from policies.balancer import Balancer
from policies.breaker import Breaker, Settings, State
from tests.clocks import Clock


def test_the_breaker_opens_probes_and_closes() -> None:
    clock = Clock(0.0)
    breaker = Breaker(Settings(failures=3, window=10, cooldown=5, probes=2), clock)
    for _ in range(2):
        breaker.record(failed=True)
    assert breaker.allows() and breaker.state is State.CLOSED
    breaker.record(failed=True)
    assert breaker.state is State.OPEN and not breaker.allows()
    clock.now = 5.0
    assert breaker.allows() and breaker.state is State.HALF_OPEN
    assert breaker.allows() and not breaker.allows()  # two probes, no more
    breaker.record(failed=False)
    assert breaker.state is State.HALF_OPEN
    breaker.record(failed=False)
    assert breaker.state is State.CLOSED and breaker.allows()


def test_a_failed_probe_opens_the_breaker_again() -> None:
    clock = Clock(0.0)
    breaker = Breaker(Settings(failures=1, cooldown=5), clock)
    breaker.record(failed=True)
    clock.now = 6.0
    assert breaker.allows()
    breaker.record(failed=True)
    assert breaker.state is State.OPEN and not breaker.allows()


def test_an_abandoned_probe_goes_back() -> None:
    clock = Clock(0.0)
    breaker = Breaker(Settings(failures=1, cooldown=5, probes=1), clock)
    breaker.record(failed=True)
    clock.now = 6.0
    assert breaker.allows() and not breaker.allows()
    breaker.abandon()  # the probing call was cancelled: no outcome
    assert breaker.allows()
    breaker.record(failed=False)
    assert breaker.state is State.CLOSED


def test_old_failures_leave_the_window() -> None:
    clock = Clock(0.0)
    breaker = Breaker(Settings(failures=2, window=10), clock)
    breaker.record(failed=True)
    clock.now = 11.0
    breaker.record(failed=True)
    assert breaker.state is State.CLOSED


def test_an_error_rate_opens_it_once_there_are_enough_requests() -> None:
    breaker = Breaker(Settings(failures=100, error_rate=0.5, min_requests=4), Clock(0.0))
    for failed in (True, False, True):
        breaker.record(failed)
    assert breaker.state is State.CLOSED  # three outcomes, under min_requests
    breaker.record(failed=False)
    assert breaker.state is State.OPEN  # 2 of 4 = 50%


def test_pool_orders_follow_their_strategy() -> None:
    balancer = Balancer(rng=random.Random(7))
    members = [("a", 1.0), ("b", 1.0), ("c", 1.0)]
    assert [balancer.order("p", "round_robin", members)[0] for _ in range(4)] == \
        ["a", "b", "c", "a"]
    assert balancer.order("p", "least_cost", members,
                          {"a": 3.0, "b": 1.0, "c": 2.0}.__getitem__) == \
        ["b", "c", "a"]
    balancer.of("a").in_flight, balancer.of("b").in_flight = 5, 1
    assert balancer.order("p", "least_busy", members)[0] == "c"
    balancer.of("a").observe(0.5)
    balancer.of("b").observe(0.1)
    assert balancer.order("p", "least_latency", members) == ["c", "b", "a"]  # c untried


def test_weighted_picks_follow_the_weights() -> None:
    balancer = Balancer(rng=random.Random(1))
    firsts = [balancer.order("p", "weighted", [("a", 3.0), ("b", 1.0)])[0]
              for _ in range(4000)]
    assert firsts.count("a") / len(firsts) == pytest.approx(0.75, abs=0.03)
    assert sorted(balancer.order("p", "weighted", [("a", 3.0), ("b", 1.0)])) == ["a", "b"]


def test_backoff_has_full_jitter_and_honours_retry_after() -> None:
    rng = random.Random(3)
    delays = [backoff.delay(3, 0.2, 5.0, rng=rng) for _ in range(1000)]
    assert min(delays) >= 0 and max(delays) <= 0.8 and max(delays) > 0.7
    assert backoff.delay(10, 0.2, 5.0, rng=rng) <= 5.0
    assert backoff.delay(1, 0.2, 5.0, retry_after=2.0) == 2.0
    assert backoff.delay(1, 0.2, 5.0, retry_after=3600) == 5.0  # capped


def test_retry_after_as_seconds_or_a_date() -> None:
    assert backoff.parse_retry_after("3") == 3.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert backoff.parse_retry_after(later) == pytest.approx(30, abs=2)
    assert backoff.parse_retry_after("soon") is None and backoff.parse_retry_after(None) is None
