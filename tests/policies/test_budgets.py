"""Budgets as a user meets them: reserve, settle, leases, periods, rebuild, shares.

Both stores, at an injected `now`; the 300-request race runs for real on
Redis, from three stores standing for three replicas.
"""

from __future__ import annotations

import asyncio
import math
import random
from datetime import UTC, datetime

import pytest

from policies.limits import CounterStore, Limit
from policies.periods import period_bounds, period_key
from policies.redis_counters import RedisCounters
from tests.policies.test_quotas import NOW, Make, flavours, run

TEAM = "b1:team=research"


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest) -> Make:
    return flavours(request)


def budget(cost: float, limit: float = 1.0, period: str = "day", enforce: bool = True) -> Limit:
    return Limit(TEAM, "budget", limit, period=period, cost=cost, enforce=enforce)


def utc(year: int, month: int, day: int, hour: int = 0) -> float:
    return datetime(year, month, day, hour, tzinfo=UTC).timestamp()


def test_periods_are_utc_calendar_days_iso_weeks_and_months() -> None:
    new_year = utc(2027, 1, 1, 12)  # a Friday of ISO week 2026-W53
    assert period_key("day", new_year) == "2027-01-01"
    assert period_key("week", new_year) == "2026-W53"
    assert period_key("month", new_year) == "2027-01"
    assert period_bounds("day", new_year) == (utc(2027, 1, 1), utc(2027, 1, 2))
    assert period_bounds("week", new_year) == (utc(2026, 12, 28), utc(2027, 1, 4))  # Mondays
    assert period_bounds("month", utc(2026, 12, 31, 23)) == (utc(2026, 12, 1), utc(2027, 1, 1))
    assert period_key("week", utc(2027, 1, 4)) == "2027-W01"
    with pytest.raises(ValueError, match="period"):
        period_key("year", new_year)


def test_reserve_the_maximum_then_settle_to_the_real_cost(make: Make) -> None:
    async def body(store: CounterStore) -> None:
        one = await store.admit([budget(0.4)], NOW, 60)
        two = await store.admit([budget(0.4)], NOW, 60)
        assert one.admitted and two.admitted
        assert two.verdicts[0].share == pytest.approx(0.8)
        assert two.verdicts[0].remaining == pytest.approx(0.2)
        refused = await store.admit([budget(0.4)], NOW, 60)
        assert not refused.admitted and refused.verdicts[0].reason == "limit"
        end_of_day = period_bounds("day", NOW)[1]
        assert refused.verdicts[0].retry_after == pytest.approx(end_of_day - NOW)
        assert one.reservation is not None and two.reservation is not None
        await store.settle(one.reservation, {TEAM: 0.1}, NOW + 1)
        await store.settle(two.reservation, {}, NOW + 1)  # the call failed: released
        assert await store.spent(TEAM, "day", NOW + 1) == pytest.approx(0.1)
        assert await store.share([(TEAM, 1.0, "day")], NOW + 1) == {TEAM: pytest.approx(0.1)}
        third = await store.admit([budget(0.9)], NOW + 1, 60)
        assert third.admitted and third.verdicts[0].share == pytest.approx(1.0)
        assert not (await store.admit([budget(0.01)], NOW + 1, 60)).admitted
    run(make, body)


def test_a_dead_holders_reservation_stops_counting_when_its_lease_ends(make: Make) -> None:
    async def body(store: CounterStore) -> None:
        held = await store.admit([budget(0.7)], NOW, 120)  # its process is killed mid-call
        assert held.admitted
        assert not (await store.admit([budget(0.7)], NOW + 119, 60)).admitted
        assert await store.share([(TEAM, 1.0, "day")], NOW + 119) == {TEAM: pytest.approx(0.7)}
        assert await store.share([(TEAM, 1.0, "day")], NOW + 120) == {TEAM: 0.0}
        assert (await store.admit([budget(0.7)], NOW + 120, 60)).admitted
        # a settle coming after the lease still books what the call cost
        assert held.reservation is not None
        await store.settle(held.reservation, {TEAM: 0.2}, NOW + 130)
        assert await store.spent(TEAM, "day", NOW + 130) == pytest.approx(0.2)
    run(make, body)


def test_a_new_period_starts_fresh_and_the_old_ones_spend_is_kept(make: Make) -> None:
    async def body(store: CounterStore) -> None:
        month = await store.admit([budget(0.75, period="month")], NOW, 60)
        assert month.reservation is not None
        await store.settle(month.reservation, {TEAM: 0.75}, NOW + 1)
        assert not (await store.admit([budget(0.5, period="month")], NOW + 2, 60)).admitted
        next_month = period_bounds("month", NOW)[1] + 5
        fresh = await store.admit([budget(0.5, period="month")], next_month, 60)
        assert fresh.admitted and fresh.verdicts[0].share == pytest.approx(0.5)
        assert await store.spent(TEAM, "month", NOW) == pytest.approx(0.75)
        assert await store.spent(TEAM, "month", next_month) == 0.0
    run(make, body)


def test_seed_rebuilds_a_period_only_when_the_store_holds_none(make: Make) -> None:
    async def body(store: CounterStore) -> None:
        assert await store.seed(TEAM, "day", 0.6, NOW)
        assert not await store.seed(TEAM, "day", 0.1, NOW + 5)
        assert await store.spent(TEAM, "day", NOW) == pytest.approx(0.6)
        assert not (await store.admit([budget(0.5)], NOW, 60)).admitted
        held = await store.admit([budget(0.25)], NOW, 60)
        assert held.admitted and held.reservation is not None
        tomorrow = NOW + 86400
        settled = await store.admit([budget(0.25)], tomorrow, 60)
        assert settled.reservation is not None
        await store.settle(settled.reservation, {TEAM: 0.25}, tomorrow)
        assert not await store.seed(TEAM, "day", 0.6, tomorrow)  # the day already has spend
        assert await store.spent(TEAM, "day", tomorrow) == pytest.approx(0.25)
    run(make, body)


def test_over_allow_counts_every_request_and_refuses_none(make: Make) -> None:
    async def body(store: CounterStore) -> None:
        answers = [await store.admit([budget(0.4, enforce=False)], NOW, 60) for _ in range(4)]
        assert all(a.admitted for a in answers)
        assert [a.verdicts[0].allowed for a in answers] == [True, True, False, False]
        assert answers[-1].verdicts[0].share == pytest.approx(1.6)  # the caller can downgrade
    run(make, body)


def test_shares_cover_every_budget_touched(make: Make) -> None:
    team = Limit("b2:team=research", "budget", 10.0, period="month", cost=2.0)
    key = Limit("b3:key=k1", "budget", 4.0, period="day", cost=2.0)

    async def body(store: CounterStore) -> None:
        admission = await store.admit([team, key], NOW, 60)
        assert [v.share for v in admission.verdicts] == [pytest.approx(0.2), pytest.approx(0.5)]
        shares = await store.share([("b2:team=research", 10.0, "month"),
                                    ("b3:key=k1", 4.0, "day"), ("b4:unused", 1.0, "week")], NOW)
        assert shares == {"b2:team=research": pytest.approx(0.2),
                          "b3:key=k1": pytest.approx(0.5), "b4:unused": 0.0}
    run(make, body)


def test_300_concurrent_requests_on_three_replicas_never_overspend(redis_url: str) -> None:
    limit, cost = 10.0, 0.3

    async def go() -> tuple[int, float, float]:
        # 5 s: what is counted is the point, not a loaded machine's call times
        replicas = [RedisCounters(redis_url, timeout=5) for _ in range(3)]
        try:
            rush = await asyncio.gather(*(replicas[i % 3].admit([budget(cost, limit)], NOW, 60)
                                          for i in range(300)))
            admitted = [(i, a) for i, a in enumerate(rush) if a.admitted]
            for i, a in admitted:
                assert a.reservation is not None
                await replicas[i % 3].settle(a.reservation, {TEAM: cost}, NOW + 1)
            first = await replicas[0].spent(TEAM, "day", NOW + 1)
            rng = random.Random(5)

            async def request(i: int) -> None:  # the next day: settles interleave with admits
                store = replicas[i % 3]
                answer = await store.admit([budget(cost, limit)], NOW + 86400, 60)
                if answer.reservation is not None:
                    await asyncio.sleep(rng.random() / 100)
                    await store.settle(answer.reservation, {TEAM: rng.uniform(0, cost)},
                                       NOW + 86400)
            await asyncio.gather(*(request(i) for i in range(300)))
            second = await replicas[1].spent(TEAM, "day", NOW + 86400)
            return len(admitted), first, second
        finally:
            for store in replicas:
                await store.close()

    admitted, first, second = asyncio.run(go())
    assert admitted == math.floor(limit / cost)  # 33: a 34th would make $10.20
    assert first == pytest.approx(admitted * cost) and first <= limit
    assert 0 < second <= limit + cost
