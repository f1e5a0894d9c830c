"""Quotas as a user meets them: requests, tokens and slots, against both stores.

Every test runs once on MemoryCounters and once on RedisCounters (a real
Redis), at an injected `now`: the two stores must behave the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from policies.limits import BUCKETS, CONCURRENCY_RETRY, CounterStore, Limit
from policies.memory_counters import MemoryCounters
from policies.redis_counters import RedisCounters

T = TypeVar("T")
NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC, on a 2 s tokens bucket boundary
Make = Callable[[], CounterStore]


def flavours(request: pytest.FixtureRequest) -> Make:
    """A factory of the store under test: memory, or Redis on the test database."""
    if request.param == "memory":
        return MemoryCounters
    url = request.getfixturevalue("redis_url")
    return lambda: RedisCounters(url)


def run(make: Make, body: Callable[[CounterStore], Awaitable[T]]) -> T:
    """Run `body` with a fresh store inside its own event loop, and close the store."""
    async def go() -> T:
        store = make()
        try:
            return await body(store)
        finally:
            await store.close()
    return asyncio.run(go())


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest) -> Make:
    return flavours(request)


REQUESTS = Limit("q1:requests:team=research", "requests", 100, window=60)


def test_gcra_admits_exactly_n_then_refuses_with_the_exact_wait(make: Make) -> None:
    async def body(store: CounterStore) -> None:
        first = await store.admit([REQUESTS], NOW, 30)
        assert first.admitted and first.reservation is None  # nothing to settle
        verdict = first.verdicts[0]
        assert verdict.remaining == 99 and verdict.reset == pytest.approx(0.6)
        for _ in range(99):
            assert (await store.admit([REQUESTS], NOW, 30)).admitted
        refused = await store.admit([REQUESTS], NOW, 30)
        assert not refused.admitted and refused.refused_by == 0
        verdict = refused.verdicts[0]
        assert not verdict.allowed and verdict.reason == "limit"
        assert verdict.retry_after == pytest.approx(0.6) and verdict.remaining == 0
        assert verdict.reset == pytest.approx(60)
        assert not (await store.admit([REQUESTS], NOW + 0.59, 30)).admitted
        assert (await store.admit([REQUESTS], NOW + 0.6, 30)).admitted
        assert not (await store.admit([REQUESTS], NOW + 0.6, 30)).admitted
        refilled = [(await store.admit([REQUESTS], NOW + 61, 30)).admitted for _ in range(101)]
        assert refilled.count(True) == 100 and not refilled[-1]
    run(make, body)


def test_burst_caps_what_a_fresh_bucket_admits_at_once(make: Make) -> None:
    quota = Limit("q1:requests:key=k", "requests", 60, window=60, burst=5)

    async def body(store: CounterStore) -> None:
        at_once = [(await store.admit([quota], NOW, 30)).admitted for _ in range(6)]
        assert at_once == [True] * 5 + [False]
        refused = await store.admit([quota], NOW, 30)
        assert refused.verdicts[0].retry_after == pytest.approx(1.0)
        assert (await store.admit([quota], NOW + 1, 30)).admitted
    run(make, body)


def test_tokens_take_the_estimate_and_settle_to_the_real_usage(make: Make) -> None:
    def tokens(cost: float) -> Limit:
        return Limit("q2:tokens:team=research", "tokens", 1000, window=60, cost=cost)

    async def body(store: CounterStore) -> None:
        first = await store.admit([tokens(800)], NOW, 30)
        assert first.admitted and first.reservation is not None
        assert first.verdicts[0].remaining == 200
        refused = await store.admit([tokens(800)], NOW + 1, 30)
        assert not refused.admitted
        # the estimate leaves the window one window after it came, rounded up to a bucket
        retry = refused.verdicts[0].retry_after
        assert 59 <= retry <= 59 + 60 / BUCKETS and retry == pytest.approx(61)
        await store.settle(first.reservation, {"q2:tokens:team=research": 100}, NOW + 2)
        second = await store.admit([tokens(800)], NOW + 2, 30)
        assert second.admitted and second.verdicts[0].remaining == 100
        assert second.reservation is not None
        await store.settle(second.reservation, {}, NOW + 3)  # no answer: released at 0
        after = await store.admit([tokens(900)], NOW + 3, 30)
        assert after.admitted and after.verdicts[0].remaining == 0
        assert not (await store.admit([tokens(1)], NOW + 3, 30)).admitted
        assert (await store.admit([tokens(1000)], NOW + 3 + 62, 30)).admitted
    run(make, body)


def test_a_request_larger_than_the_window_is_refused_for_a_whole_window(make: Make) -> None:
    async def body(store: CounterStore) -> None:
        huge = Limit("q2:tokens:key=k", "tokens", 1000, window=60, cost=5000)
        refused = await store.admit([huge], NOW, 30)
        assert not refused.admitted and refused.verdicts[0].retry_after == 60
    run(make, body)


def test_slots_free_on_settle_and_when_the_lease_ends(make: Make) -> None:
    slots = Limit("q3:concurrency:team=research", "concurrency", 2)

    async def body(store: CounterStore) -> None:
        one = await store.admit([slots], NOW, 30)
        two = await store.admit([slots], NOW, 40)
        assert one.admitted and two.admitted and two.verdicts[0].remaining == 0
        refused = await store.admit([slots], NOW, 30)
        assert not refused.admitted
        assert refused.verdicts[0].retry_after == CONCURRENCY_RETRY
        assert refused.verdicts[0].reset == pytest.approx(40)  # the last lease ends
        assert one.reservation is not None
        await store.settle(one.reservation, {}, NOW + 1)
        three = await store.admit([slots], NOW + 1, 60)
        assert three.admitted and not (await store.admit([slots], NOW + 1, 30)).admitted
        # nobody settles `two` (its process died): its lease ends at NOW + 40
        assert not (await store.admit([slots], NOW + 39, 30)).admitted
        assert (await store.admit([slots], NOW + 40, 30)).admitted
    run(make, body)


def test_one_refusal_takes_nothing_from_any_limit(make: Make) -> None:
    slot = Limit("q3:concurrency:key=k", "concurrency", 1)

    async def body(store: CounterStore) -> None:
        held = await store.admit([REQUESTS, slot], NOW, 30)
        assert held.admitted and held.verdicts[0].remaining == 99
        refused = await store.admit([REQUESTS, slot], NOW, 30)
        assert not refused.admitted and refused.refused_by == 1 and refused.reservation is None
        assert refused.verdicts[0].allowed and refused.verdicts[0].remaining == 99  # untouched
        assert held.reservation is not None
        await store.settle(held.reservation, {}, NOW)
        again = await store.admit([REQUESTS, slot], NOW, 30)
        assert again.admitted and again.verdicts[0].remaining == 98
    run(make, body)


def test_a_shadow_quota_reports_refusals_but_refuses_nothing(make: Make) -> None:
    shadow = Limit("q4:requests:team=research", "requests", 2, window=60, enforce=False)
    enforced = Limit("q5:requests:team=research", "requests", 10, window=60)

    async def body(store: CounterStore) -> None:
        answers = [await store.admit([shadow, enforced], NOW, 30) for _ in range(4)]
        assert all(a.admitted and a.refused_by is None for a in answers)
        assert [a.verdicts[0].allowed for a in answers] == [True, True, False, False]
        assert [a.verdicts[0].reason for a in answers] == ["", "", "limit", "limit"]
        assert answers[2].verdicts[0].retry_after == pytest.approx(30)
        assert answers[3].verdicts[1].remaining == 6  # the enforcing quota counted all four
        # it counts what an enforcing quota would have let in, so it refills on time
        assert (await store.admit([shadow], NOW + 30, 30)).verdicts[0].allowed
    run(make, body)


def test_the_subject_cap_refuses_new_values_only(make: Make) -> None:
    def per_user(user: str) -> list[Limit]:
        return [Limit(f"q6:requests:user={user}", "requests", 10, window=60, family="q6",
                      cap=2, subject=user),
                Limit(f"q6:tokens:user={user}", "tokens", 1000, window=60, cost=10,
                      family="q6", cap=2, subject=user)]

    async def body(store: CounterStore) -> None:
        assert (await store.admit(per_user("ann"), NOW, 30)).admitted
        assert (await store.admit(per_user("bob"), NOW + 10, 30)).admitted
        refused = await store.admit(per_user("cat"), NOW + 20, 30)
        assert not refused.admitted and refused.refused_by == 0 and refused.reservation is None
        assert [v.reason for v in refused.verdicts] == ["subjects", "subjects"]
        assert refused.verdicts[0].retry_after == pytest.approx(40)  # ann's place ends
        assert (await store.admit(per_user("ann"), NOW + 20, 30)).admitted
        assert (await store.admit(per_user("bob"), NOW + 20, 30)).admitted
        # ann was last seen at NOW + 20: her place lasts a window after that
        assert not (await store.admit(per_user("cat"), NOW + 79, 30)).admitted
        fresh = await store.admit(per_user("cat"), NOW + 80, 30)
        assert fresh.admitted and fresh.verdicts[0].remaining == 9  # counted from zero
    run(make, body)


def test_an_unknown_kind_or_a_repeated_counter_is_a_caller_error(make: Make) -> None:
    async def body(store: CounterStore) -> None:
        with pytest.raises(ValueError, match="twice"):
            await store.admit([REQUESTS, REQUESTS], NOW, 30)
        with pytest.raises(ValueError, match="kind"):
            await store.admit([Limit("x", "bananas", 1)], NOW, 30)
    run(make, body)


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("bad", [-1.0, NAN, INF])
def test_a_prepared_admission_with_a_bad_cost_counts_nothing(make: Make, bad: float) -> None:
    tokens = Limit("q1:tokens:team=research", "tokens", 1000, window=60)

    async def body(store: CounterStore) -> None:
        prepared = store.prepare([REQUESTS, tokens])
        with pytest.raises(ValueError, match="cost must be"):
            await store.admit_prepared(prepared, [1.0, bad], NOW, 30)
        after = await store.admit_prepared(prepared, [1.0, 10.0], NOW, 30)
        assert after.verdicts[0].remaining == 99 and after.verdicts[1].remaining == 990
    run(make, body)



@pytest.mark.parametrize(("limits", "error"), [
    ([Limit("r", "requests", 1, window=1)], None),
    ([Limit("b", "budget", 1, period="day", window=-1.0, burst=0.0, cost=0.0)], None),
    ([Limit("x", "requests", 1, window=1), Limit("x", "tokens", 1, window=1)], None),
    ([Limit("r", "requests", NAN, window=1)], "limit must be"),
    ([Limit("r", "requests", INF, window=1)], "limit must be"),
    ([Limit("r", "requests", 0, window=1)], "limit must be"),
    ([Limit("r", "requests", 1, window=1, cost=-1)], "limit must be"),
    ([Limit("r", "requests", 1, window=1, cost=NAN)], "limit must be"),
    ([Limit("r", "requests", 1, window=INF)], "limit must be"),
    ([Limit("b", "budget", 1, period="day", window=-INF)], "limit must be"),
    ([Limit("r", "requests", 1, window=1, burst=NAN)], "limit must be"),
    ([Limit("r", "requests", 1, window=1, burst=INF)], "limit must be"),
    ([Limit("r", "requests", 1)], "needs a window"),
    ([Limit("t", "tokens", 1, window=-2)], "needs a window"),
    ([Limit("b", "budget", 1, period="year")], "period must be"),
    ([Limit("r", "requests", 1, window=1, family="f")], "needs a cap"),
    ([Limit("r", "requests", 1, window=1, family="f", cap=-1)], "needs a cap"),
    # errors come item by item, as the first bad one is met
    ([Limit("r", "requests", NAN, window=1), Limit("x", "bananas", 1)], "limit must be"),
    ([Limit("x", "bananas", 1), Limit("r", "requests", NAN, window=1)], "kind"),
    ([Limit("r", "requests", NAN, window=1), Limit("x", "tokens", 1, window=1),
      Limit("x", "tokens", 1, window=1)], "limit must be"),
    ([Limit("x", "tokens", 1, window=1), Limit("x", "tokens", NAN, window=1)], "twice"),
])
def test_validate_refuses_what_no_store_can_count(limits: list[Limit], error: str | None) -> None:
    from policies.limits import validate

    if error is None:
        validate(limits)
    else:
        with pytest.raises(ValueError, match=error):
            validate(limits)
