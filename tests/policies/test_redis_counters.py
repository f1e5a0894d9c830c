"""What only the Redis store can get wrong: round trips, keys, failures, replicas,
calls asked together travelling together, and giving MemoryCounters' answers to any
sequence of calls."""

from __future__ import annotations

import asyncio
import math
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from policies.limits import BUCKETS, Admission, CounterStore, Limit, StoreUnavailable
from policies.memory_counters import MemoryCounters
from policies.redis_counters import MAX_OPS, SETTLE_DELAY, RedisCounters, _command, _expiry
from tests.policies.test_quotas import NOW
from tests.services import RedisServer

QUOTA = Limit("q1:requests:team=research", "requests", 100, window=60)
TOKENS = Limit("q2:tokens:team=research", "tokens", 1000, window=60, cost=300)
SLOT = Limit("q3:concurrency:team=research", "concurrency", 4)
BUDGET = Limit("b1:team=research", "budget", 5.0, period="month", cost=0.5)
SUBJECT = Limit("q4:requests:user=ann", "requests", 10, window=60, family="q4", cap=5,
                subject="ann")


def test_a_quota_of_100_a_minute_admits_exactly_100_across_three_replicas(
        redis_url: str) -> None:
    async def go() -> list[Admission]:
        replicas = [RedisCounters(redis_url, timeout=5) for _ in range(3)]  # counts, not bounds
        try:
            return list(await asyncio.gather(*(replicas[i % 3].admit([QUOTA], NOW + i / 1000, 30)
                                               for i in range(300))))
        finally:
            for store in replicas:
                await store.close()
    assert sum(a.admitted for a in asyncio.run(go())) == 100


def counting(sent: list[Any], held: asyncio.Event | None = None
             ) -> Callable[..., Awaitable[None]]:
    """Connection.send_packed_command, noting each command sent: one per round trip.

    With `held`, the first command is kept in flight a while after it is sent
    (`held` is set meanwhile), so that a test can ask more during it.
    """
    send = Connection.send_packed_command

    async def counted(self: Connection, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        await send(self, command, check_health)
        if held is not None and len(sent) == 1:
            held.set()
            await asyncio.sleep(0.1)
    return counted


def operations(command: Any) -> list[str]:
    """The operations of a sent EVALSHA, by name, in order: its headers' first words."""
    packed = b"".join(command) if isinstance(command, list) else bytes(command)
    return [word.decode() for word in packed.split()
            if word in (b"admit", b"settle", b"share")]


def answered(answer: Admission) -> tuple[Any, ...]:
    """An admission without its reservation's id, which each store makes its own way."""
    return answer.admitted, answer.refused_by, answer.reservation is None, answer.verdicts


def test_one_round_trip_to_admit_and_one_to_settle(redis_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    counted = counting(sent)

    async def go() -> None:
        store = RedisCounters(redis_url)
        try:
            await store.admit([QUOTA], NOW, 30)  # connects, loads the script
            monkeypatch.setattr(Connection, "send_packed_command", counted)
            for i in range(10):
                answer = await store.admit([QUOTA, TOKENS, SLOT, BUDGET, SUBJECT], NOW + i, 30)
                assert answer.admitted and answer.reservation is not None
                await store.settle(answer.reservation, {TOKENS.counter: 10}, NOW + i)
        finally:
            await store.close()

    asyncio.run(go())
    assert len(sent) == 20


def test_many_settles_go_in_one_round_trip_and_free_what_each_held(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    counted = counting(sent)

    async def go() -> tuple[Admission, float]:
        store = RedisCounters(redis_url)
        try:
            held = [await store.admit([SLOT, BUDGET], NOW, 30) for _ in range(4)]
            assert not (await store.admit([SLOT], NOW, 30)).admitted  # four slots taken
            monkeypatch.setattr(Connection, "send_packed_command", counted)
            await store.settle_many([(a.reservation or "", {BUDGET.counter: 0.25})
                                     for a in held], NOW + 1)
            monkeypatch.undo()
            return await store.admit([SLOT], NOW + 1, 30), await store.spent(
                BUDGET.counter, "month", NOW + 1)
        finally:
            await store.close()

    again, spent = asyncio.run(go())
    assert len(sent) == 1 and again.admitted and spent == pytest.approx(1.0)


# A burst of admissions, varied so that each kind of limit refuses some of them.
SMALL = Limit("burst:requests", "requests", 30, window=60, burst=20)
FEW = Limit("burst:concurrency", "concurrency", 6)
CHEAP = Limit("burst:budget", "budget", 1.0, period="day", cost=0.0625)
WINDOW = Limit("burst:tokens", "tokens", 2000, window=60, cost=150)


def burst(i: int) -> list[Limit]:
    chosen = [[SMALL, WINDOW], [FEW, CHEAP], [SMALL, FEW, CHEAP, WINDOW]][i % 3]
    user = f"user-{i % 7}"
    return [*chosen, Limit(f"burst:user:{user}", "requests", 9, window=30, family="burst",
                           cap=4, subject=user)]


def test_a_burst_of_admissions_travels_together_and_is_answered_as_one_by_one(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    plans = [(burst(i), NOW + i / 100) for i in range(100)]

    async def go() -> tuple[list[Any], list[Any]]:
        memory = MemoryCounters()
        alone = [answered(await memory.admit(limits, now, 30)) for limits, now in plans]
        store = RedisCounters(redis_url)
        try:
            await store.ping()
            await store.admit([Limit("warm", "requests", 1, window=1)], NOW, 30)  # loads it
            monkeypatch.setattr(Connection, "send_packed_command", counting(sent))
            together = await asyncio.gather(*(store.admit(limits, now, 30)
                                              for limits, now in plans))
        finally:
            await store.close()
        return alone, [answered(answer) for answer in together]

    alone, together = asyncio.run(go())
    assert together == alone
    assert {False, True} <= {answer[0] for answer in alone}  # some refused, some admitted
    # the first goes at once; the rest, asked while it is out, in calls of at most MAX_OPS
    assert [len(operations(command)) for command in sent] == [1, MAX_OPS, 99 - MAX_OPS]


def test_settles_asked_during_a_call_ride_with_the_next_and_count_first(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    one = Limit("one-slot", "concurrency", 1)

    async def go() -> tuple[bool, bool, bool]:
        store = RedisCounters(redis_url)
        try:
            held = await store.admit([one], NOW, 30)
            assert held.reservation is not None
            assert not (await store.admit([one], NOW, 30)).admitted  # the slot is taken
            out = asyncio.Event()
            monkeypatch.setattr(Connection, "send_packed_command", counting(sent, out))
            first = asyncio.create_task(store.admit([QUOTA], NOW, 30))
            await out.wait()  # the first call is in flight
            settled = asyncio.create_task(store.settle(held.reservation, {}, NOW + 1))
            again = asyncio.create_task(store.admit([one], NOW + 1, 30))
            await settled
            return (await first).admitted, (await again).admitted, settled.done()
        finally:
            await store.close()

    first, again, settled = asyncio.run(go())
    assert first and settled and again  # the settle went first: its slot was free again
    assert [operations(command) for command in sent] == [["admit"], ["settle", "admit"]]


def test_a_settle_soon_rides_with_the_next_admission_or_goes_alone_soon_after(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    one = Limit("one-slot", "concurrency", 1)

    async def go() -> tuple[bool, bool, bool]:
        store = RedisCounters(redis_url)
        try:
            monkeypatch.setattr(Connection, "send_packed_command", counting(sent))
            held = await store.admit([one], NOW, 30)
            assert held.reservation is not None
            store.settle_soon(held.reservation, {}, NOW + 1)  # sends nothing yet
            readmitted = await store.admit([one], NOW + 1, 30)  # with it: the slot is free
            assert readmitted.reservation is not None
            store.settle_soon(readmitted.reservation, {}, NOW + 2)
            await asyncio.sleep(SETTLE_DELAY * 5)  # no admission came: it went alone
            alone = (await store.admit([one], NOW + 3, 30)).admitted
            assert (await store.admit([one], NOW + 3, 30)).reservation is None  # it holds
            return held.admitted, readmitted.admitted, alone
        finally:
            await store.close()

    assert asyncio.run(go()) == (True, True, True)
    assert [operations(command) for command in sent if operations(command)] == [
        ["admit"], ["settle", "admit"], ["settle"], ["admit"], ["admit"]]


def test_settles_waiting_to_ride_are_sent_when_the_store_closes(redis_url: str) -> None:
    async def go() -> float:
        store = RedisCounters(redis_url)
        held = await store.admit([BUDGET], NOW, 30)
        assert held.reservation is not None
        store.settle_soon(held.reservation, {BUDGET.counter: 0.25}, NOW)
        await store.close()
        reader = RedisCounters(redis_url)
        try:
            return await reader.spent(BUDGET.counter, BUDGET.period, NOW)
        finally:
            await reader.close()

    assert asyncio.run(go()) == 0.25


def test_one_operation_failing_in_the_script_fails_only_its_caller(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    broken = Limit("broken", "requests", 5, window=60)
    client = redis.Redis.from_url(redis_url)
    client.hset("{gw}:q:broken", "not", "a number")  # GET on it: WRONGTYPE

    async def go() -> list[Any]:
        store = RedisCounters(redis_url)
        try:
            await store.admit([QUOTA], NOW, 30)
            monkeypatch.setattr(Connection, "send_packed_command", counting(sent))
            return list(await asyncio.gather(store.admit([QUOTA], NOW, 30),
                                             store.admit([broken], NOW, 30),
                                             store.admit([QUOTA], NOW, 30),
                                             return_exceptions=True))
        finally:
            await store.close()

    answers = asyncio.run(go())
    client.close()
    assert isinstance(answers[1], StoreUnavailable) and "WRONGTYPE" in str(answers[1])
    assert answers[0].admitted and answers[2].admitted
    assert [operations(command) for command in sent] == [["admit"], ["admit", "admit"]]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    own = RedisServer(tmp_path)
    own.start()
    yield own
    own.kill()


def test_a_stalled_redis_fails_every_queued_caller_within_the_bound(server: RedisServer) -> None:
    timeout = 0.2  # the bound: four times it, from when each caller asks

    async def go() -> tuple[list[Any], float, bool]:
        store = RedisCounters(server.url, timeout=timeout)
        try:
            await store.admit([QUOTA], NOW, 30)
            server.signal(signal.SIGSTOP)
            started = time.monotonic()
            # 300 callers: six calls, each taking its socket timeout, but every caller is
            # answered by its own bound, not after the five calls before its own
            answers = await asyncio.gather(*(store.admit([QUOTA], NOW, 30) for _ in range(300)),
                                           return_exceptions=True)
            took = time.monotonic() - started
            server.signal(signal.SIGCONT)
            after = await store.admit([Limit("after", "requests", 1, window=1)], NOW, 30)
            return list(answers), took, after.admitted
        finally:
            await store.close()

    answers, took, after = asyncio.run(go())
    assert all(isinstance(answer, StoreUnavailable) for answer in answers)
    assert all(str(server.port) in str(answer) for answer in answers)
    assert took < timeout * 4 + 0.3
    assert after  # Redis answers again: so does the store


def test_redis_killed_mid_call_fails_each_caller_and_a_restart_serves_again(
        server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []

    async def go() -> tuple[list[Any], float, Admission]:
        store = RedisCounters(server.url)
        try:
            await store.admit([QUOTA], NOW, 30)  # connects, loads the script
            out = asyncio.Event()
            monkeypatch.setattr(Connection, "send_packed_command", counting(sent, out))
            server.signal(signal.SIGSTOP)  # so that the call in flight is never answered
            started = time.monotonic()
            callers = [asyncio.create_task(store.admit([QUOTA, SLOT], NOW, 30))
                       for _ in range(20)]
            await out.wait()  # the first is in flight, the others queued
            callers.append(asyncio.create_task(store.share([(BUDGET.counter, 5.0, "month")],
                                                           NOW)))
            server.kill()
            answers = await asyncio.gather(*callers, return_exceptions=True)
            took = time.monotonic() - started
            monkeypatch.undo()
            server.start()  # empty: the script must be loaded again
            return list(answers), took, await store.admit([QUOTA], NOW, 30)
        finally:
            await store.close()

    answers, took, after = asyncio.run(go())
    assert all(isinstance(answer, StoreUnavailable) for answer in answers)
    assert took < 1.0 and after.admitted


def test_every_key_is_in_one_hash_tagged_slot_and_expires(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    async def go() -> None:
        store = RedisCounters(redis_url, namespace="tenant-7")
        try:
            answer = await store.admit([QUOTA, TOKENS, SLOT, BUDGET, SUBJECT], NOW, 30)
            assert answer.reservation is not None
            await store.settle(answer.reservation, {BUDGET.counter: 0.2}, NOW + 1)
        finally:
            await store.close()

    asyncio.run(go())
    keys = [str(key) for key in client.keys("*")]
    assert len(keys) >= 5 and all(key.startswith("{tenant-7}:") for key in keys)
    assert all(client.pttl(key) > 0 for key in keys)
    assert any(":b:2027-01:b1:team=research" in key for key in keys)
    client.close()


def test_keys_last_as_long_as_their_newest_figures_need(redis_url: str) -> None:
    """The script gives a key its expiry when it writes a field there first (a tokens
    bucket, a budget's reservations or spend), not on every write: later writes to the
    same field need no more. A newer bucket still moves the window's expiry on."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    namespace = uuid.uuid4().hex
    width = TOKENS.window / BUCKETS
    later = NOW + 3 * width  # a newer bucket of the same window

    async def go() -> None:
        store = RedisCounters(redis_url, namespace=namespace)
        try:
            for at in (NOW, NOW + 0.1, later, later + 0.1):
                answer = await store.admit([TOKENS, BUDGET], at, 30)
                assert answer.admitted and answer.reservation is not None
                await store.settle(answer.reservation, {TOKENS.counter: 100,
                                                        BUDGET.counter: 0.2}, at + 0.05)
        finally:
            await store.close()

    asyncio.run(go())
    keys = [str(key) for key in client.keys("{" + namespace + "}:*")]
    window = next(key for key in keys if TOKENS.counter in key)
    budget = next(key for key in keys if ":b:" in key and key.endswith(BUDGET.counter))
    newest = math.floor(later / width)
    margin = 5000  # ms: this test's own time between the writes and the reads
    assert client.pttl(window) >= ((newest + BUCKETS + 1) * width - later) * 1000 - margin
    assert client.pttl(budget) >= (_expiry("month", later)[1] - later) * 1000 - margin
    assert all(client.pttl(key) > 0 for key in keys)
    client.close()


def test_the_script_is_loaded_again_after_redis_forgets_it(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)

    async def go() -> tuple[bool, bool]:
        store = RedisCounters(redis_url)
        try:
            first = await store.admit([QUOTA], NOW, 30)
            client.script_flush()
            return first.admitted, (await store.admit([QUOTA], NOW, 30)).admitted
        finally:
            await store.close()

    assert asyncio.run(go()) == (True, True)
    client.close()


def test_an_unreachable_redis_is_store_unavailable_within_a_second() -> None:
    url = "redis://:hunter2@127.0.0.1:6399/0"  # nothing listens there
    calls: list[Callable[[CounterStore], Awaitable[object]]] = [
        lambda s: s.ping(),
        lambda s: s.admit([QUOTA, BUDGET], NOW, 30),
        lambda s: s.share([(BUDGET.counter, 5.0, "month")], NOW),
        lambda s: s.seed(BUDGET.counter, "month", 1.0, NOW),
        lambda s: s.spent(BUDGET.counter, "month", NOW),
    ]

    async def go() -> None:
        store = RedisCounters(url)
        try:
            for call in calls:
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as caught:
                    await call(store)
                assert time.monotonic() - started < 1.0
                assert "hunter2" not in str(caught.value) and "127.0.0.1:6399" in str(caught.value)
        finally:
            await store.close()
    asyncio.run(go())


def test_seed_rebuilds_a_budget_after_redis_lost_everything(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)

    async def go() -> tuple[bool, Admission]:
        store = RedisCounters(redis_url)
        try:
            held = await store.admit([BUDGET], NOW, 30)
            assert held.reservation is not None
            await store.settle(held.reservation, {BUDGET.counter: 4.75}, NOW)
            client.flushdb()  # Redis restarted without persistence
            seeded = await store.seed(BUDGET.counter, "month", 4.75, NOW)  # from the ledger
            return seeded, await store.admit([BUDGET], NOW, 30)
        finally:
            await store.close()

    seeded, after = asyncio.run(go())
    assert seeded and not after.admitted
    client.close()


# Random calls, the same on both stores: the answers must be the same.
LIMITS = [
    Limit("r", "requests", 3, window=10, burst=2),
    Limit("rs", "requests", 2, window=8, enforce=False),
    Limit("t", "tokens", 100, window=10),
    Limit("c", "concurrency", 2),
    Limit("b", "budget", 1.0, period="day"),
    Limit("ba", "budget", 0.5, period="day", enforce=False),
]
COSTS = {"requests": [1.0], "tokens": [0.0, 25.0, 33.3, 75.0], "concurrency": [1.0],
         "budget": [0.1, 0.25, 0.5, 0.3]}  # 0.1, 0.3, 33.3: floats that do not add up exactly
admits = st.tuples(
    st.just("admit"),
    st.lists(st.integers(0, len(LIMITS) - 1), min_size=1, max_size=4, unique=True),
    st.integers(0, 3),                                  # which cost
    st.sampled_from(["", "ann", "bob", "cat"]),         # a capped subject, or none
    st.sampled_from([4.0, 16.0]),                       # lease
)
settles = st.tuples(st.just("settle"), st.integers(0, 20), st.sampled_from([0.0, 0.5, 1.0, 2.0]))
steps = st.sampled_from([0.0, 0.0, 0.25, 1.0, 3.0, 9.0, 86400.0])
programs = st.lists(st.tuples(st.one_of(admits, settles), steps), max_size=25)


def limits_of(picked: list[int], cost: int, subject: str) -> list[Limit]:
    chosen = []
    for i in picked:
        base = LIMITS[i]
        costs = COSTS[base.kind]
        chosen.append(Limit(base.counter, base.kind, base.limit, base.window, base.period,
                            base.burst, costs[cost % len(costs)], base.enforce))
    if subject:
        chosen.append(Limit(f"s:{subject}", "requests", 5, window=20, family="s", cap=2,
                            subject=subject))
    return chosen


Step = tuple[tuple[Any, ...], float]


async def play(store: CounterStore, groups: list[list[Step]], together: bool = False
               ) -> list[Any]:
    """The calls of `groups`, in order; `together`: a group's are asked at once, so that
    they travel in a script call or two (a settle settles what earlier groups held)."""
    now, held, seen = NOW, [], list[Any]()
    for group in groups:
        calls: list[Awaitable[Any]] = []
        chosen: list[list[Limit] | None] = []  # an admission's limits; None for a settle
        for op, step in group:
            now += step
            if op[0] == "admit":
                chosen.append(limits_of(op[1], op[2], op[3]))
                calls.append(store.admit(chosen[-1], now, op[4]))
            elif held:
                rid, limits = held.pop(op[1] % len(held))
                chosen.append(None)
                calls.append(store.settle(rid, {item.counter: item.cost * op[2]
                                                for item in limits}, now))
        answers = await asyncio.gather(*calls) if together else [await call for call in calls]
        for limits, answer in zip(chosen, answers, strict=True):
            if limits is not None:
                seen.append(answered(answer))
                if answer.reservation is not None:
                    held.append((answer.reservation, limits))
    seen.append(await store.share([("b", 1.0, "day"), ("ba", 0.5, "day")], now))
    seen.append([await store.spent(c, "day", now) for c in ("b", "ba")])
    return seen


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(programs)
def test_redis_gives_memorys_answers_to_any_calls(redis_url: str,
                                                  program: list[Step]) -> None:
    assert_the_stores_agree(redis_url, program)


def assert_the_stores_agree(redis_url: str, program: list[Step]) -> None:
    assert_groups_agree(redis_url, [[step] for step in program])


def assert_groups_agree(redis_url: str, groups: list[list[Step]]) -> None:
    async def go() -> tuple[list[Any], list[Any]]:
        # answers are the point here, not bounds: a loaded machine must not fail a connect
        redis_store = RedisCounters(redis_url, namespace=uuid.uuid4().hex, timeout=5)
        try:
            return (await play(MemoryCounters(), groups),
                    await play(redis_store, groups, together=True))
        finally:
            await redis_store.close()
    memory, shared = asyncio.run(go())
    assert memory == shared


# Calls asked at once travel together: the answers must still be memory's, one by one.
groups = st.lists(st.lists(st.tuples(st.one_of(admits, settles), steps), min_size=1,
                           max_size=8), max_size=8)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(groups)
def test_redis_gives_memorys_answers_to_calls_asked_at_once(
        redis_url: str, program: list[list[Step]]) -> None:
    assert_groups_agree(redis_url, program)


# A replica's clock may be behind another's: `now` going back must not part the stores
# either (MemoryCounters keeps its buckets in order and its lease bounds cached).
backwards = st.lists(st.tuples(st.one_of(admits, settles),
                               st.sampled_from([-9.0, -3.0, -0.25, 0.0, 1.0, 3.0, 9.0])),
                     max_size=25)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(backwards)
def test_redis_gives_memorys_answers_when_time_goes_back(
        redis_url: str, program: list[Step]) -> None:
    assert_the_stores_agree(redis_url, program)


@given(st.lists(st.text(), max_size=6), st.lists(st.text(), max_size=6))
def test_a_script_call_is_written_as_redis_py_would_write_it(keys: list[str],
                                                            args: list[str]) -> None:
    # the store packs its own commands (a third of redis-py's CPU): the bytes must not differ
    packer = Connection(decode_responses=True)
    expected = b"".join(packer.pack_command("EVALSHA", "f" * 40, len(keys), *keys, *args))
    assert _command("EVALSHA", "f" * 40, keys, args) == expected
