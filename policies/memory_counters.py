"""Quota and budget counters in the process's own memory: one replica's store.

The reference for `RedisCounters`: `redis_counters.lua` is this module's
`admit` and `settle` written again for Redis, with each counter's float
operations in the same order, and the tests hold the two to the same answers.
The script checks every limit, then takes from all; here one pass takes as it
checks and, when an enforcing limit refuses, puts back exactly what it took
(the floats as they were) and answers from the counters as they stand: the
same answers, in one pass for the admissions that are admitted.

Nothing here reads a clock; every call works at the `now` it is given. Being
one event loop's, a call runs to its end without yielding, which is what
makes an admission atomic here.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from policies.limits import (
    BUCKETS,
    CONCURRENCY_RETRY,
    HOLD,
    SLACK,
    Admission,
    CounterStore,
    Limit,
    Prepared,
    Verdict,
    forget_expired,
    new_tuple,
    subjects,
)
from policies.periods import period_of

_INF = math.inf
# What a reservation holds of one counter, to settle it: (kind, counter, its state, amount,
# and for tokens the bucket the estimate went into and the bucket's width).
Item = tuple[int, str, Any, float, int, float]
_REQUESTS, _TOKENS, _SLOTS, _BUDGET = 0, 1, 2, 3  # a prepared limit's kind; an Item's, the last 3


class Leases:
    """Amounts held until settled or until their lease ends, with their running total."""

    __slots__ = ("held", "latest", "soonest", "total")

    def __init__(self) -> None:
        self.total = 0.0
        self.held: dict[str, tuple[float, float]] = {}  # id -> (expiry, amount)
        self.soonest = _INF   # no lease ends before this: a lower bound, kept cheaply
        self.latest = -_INF   # the last lease's end; NaN when it must be looked for again

    def live(self, now: float) -> float:
        if self.soonest > now:  # nothing has run out: the common case, without a scan
            return self.total
        held = self.held
        expired = sorted((expiry, rid) for rid, (expiry, _) in held.items() if expiry <= now)
        for _, rid in expired:
            self.total -= held.pop(rid)[1]
        if not held:
            self.total = 0.0
        self.soonest = min([expiry for expiry, _ in held.values()], default=_INF)
        if expired:
            self.latest = math.nan
        return self.total

    def take(self, rid: str, amount: float, expiry: float) -> None:
        self.total += amount
        self.held[rid] = (expiry, amount)
        if expiry < self.soonest:
            self.soonest = expiry
        if expiry > self.latest:  # False for NaN: looked for when asked
            self.latest = expiry

    def free(self, rid: str) -> bool:
        found = self.held.pop(rid, None)
        if found is not None:
            self.total -= found[1]
            if found[0] >= self.latest:
                self.latest = math.nan
        if not self.held:
            self.total = 0.0
        return found is not None

    def last(self, now: float) -> float:
        if not self.held:
            return 0.0
        latest = self.latest
        if latest != latest:  # NaN
            latest = self.latest = max([expiry for expiry, _ in self.held.values()])
        return latest - now


class Window:
    """A tokens counter: its buckets in ascending order, and their sum while it holds.

    The sum is taken bucket by bucket from the oldest, as the script takes it,
    so that both stores' floats agree; it is kept until a bucket changes.
    """

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets: dict[int, float] = {}  # bucket -> amount, keys ascending
        self.sum: float | None = 0.0  # None: a bucket changed since it was taken

    def total(self) -> float:
        total = self.sum
        if total is None:
            total = 0.0
            for amount in self.buckets.values():
                total += amount
            self.sum = total
        return total

    def drop(self, low: int) -> None:
        """Forget buckets older than `low`."""
        buckets = self.buckets
        for bucket in buckets:
            if bucket >= low:
                return
            old = [i for i in buckets if i < low]
            for i in old:
                del buckets[i]
            self.sum = None
            return

    def put(self, bucket: int, amount: float) -> None:
        """Set a bucket's amount (> 0), keeping the buckets in order."""
        buckets = self.buckets
        self.sum = None
        if bucket in buckets or not buckets or bucket > next(reversed(buckets)):
            buckets[bucket] = amount
            return
        buckets[bucket] = amount  # a `now` behind an earlier one's: rare, so a sort is fine
        ordered = sorted(buckets.items())
        buckets.clear()
        buckets.update(ordered)


class Budget:
    __slots__ = ("reserved", "spent")

    def __init__(self) -> None:
        self.spent: float | None = None  # None: nothing settled (or seeded) this period yet
        self.reserved = Leases()


class MemoryCounters(CounterStore):
    """Counters in dicts, for one process; the default, and the reference."""

    def __init__(self) -> None:
        self._tat: dict[str, int] = {}                 # requests: theoretical arrival, in µs
        self._windows: dict[str, Window] = {}          # tokens
        self._slots: dict[str, Leases] = {}
        self._budgets: dict[tuple[str, str], Budget] = {}
        self._families: dict[str, dict[str, float]] = {}  # family -> subject -> until
        self._held: OrderedDict[str, tuple[float, list[Item]]] = OrderedDict()  # by age
        self._ids = itertools.count(1)  # reservations: unique within this store

    def prepare(self, limits: Sequence[Limit]) -> Planned:
        return Planned(self, limits)

    async def admit_prepared(self, prepared: Prepared, costs: Sequence[float], now: float,
                             lease: float) -> Admission:
        assert isinstance(prepared, Planned) and prepared.store is self
        prepared.check(costs)
        if self._held:
            forget_expired(self._held, now)
        places = self._places(prepared.limits, now, lease) if prepared.families else None
        rid = str(next(self._ids))
        answer = self._admit(prepared, costs, now, lease, places, rid)
        if answer is None:  # refused: what was taken is back; answer as the counters stand
            answer = self._admit(prepared, costs, now, lease, places, None)
            assert answer is not None  # a pass that takes nothing always answers
        if answer.admitted and places is not None:
            for (family, subject), (ok, _, until) in places.items():
                if ok:
                    known = self._families[family]
                    known[subject] = max(known.get(subject, until), until)
        return answer

    def _admit(self, prepared: Planned, costs: Sequence[float], now: float, lease: float,
               places: dict[tuple[str, str], tuple[bool, float, float]] | None,
               rid: str | None) -> Admission | None:
        """One pass over the limits: each checked and, with a reservation id, taken from
        at once, since admissions are mostly admitted. When an enforcing limit refuses,
        what this pass took is put back as it was (exactly: the floats too) and the
        answer is None; without an id, nothing is taken and the answer is the refusal."""
        verdicts: list[Verdict] = []
        items: list[Item] = []  # what the reservation holds, to settle
        undo: list[tuple[Any, ...]] = []  # how to put back what was taken
        refused = None
        now_us = math.floor(now * 1e6 + 0.5)
        for i, ((kind, counter, limit, ceiling, first, second, state, enforce, place),
                cost) in enumerate(zip(prepared.entries, costs, strict=True)):
            if kind == _REQUESTS:  # first: the emission interval, second: the capacity
                amount = math.floor(cost * first + 0.5)
                stored = self._tat.get(counter)
                base = now_us if stored is None or stored < now_us else stored
                allow_at = base + amount - second
                allowed = allow_at <= now_us
                retry = (allow_at - now_us if allow_at > now_us else 0) / 1e6
            elif kind == _TOKENS:  # first: a bucket's width, second: the window
                bucket = math.floor(now / first)
                if state.buckets:
                    state.drop(bucket - BUCKETS)
                total = state.total()
                allowed = total + cost <= ceiling
                retry = 0.0
                if not allowed:
                    retry = second
                    if cost <= ceiling:
                        fallen = 0.0
                        for older, held in state.buckets.items():
                            fallen += held
                            if total - fallen + cost <= ceiling:
                                retry = (older + BUCKETS + 1) * first - now
                                break
            elif kind == _SLOTS:
                allowed = state.live(now) + cost <= ceiling
                retry = CONCURRENCY_RETRY
            else:  # a budget; first: its period, state: [start, end, Budget] of the last one
                if not state[0] <= now < state[1]:
                    state[:] = self._period(counter, first, now)
                ends = state[1]
                state = state[2]
                used = (state.spent or 0.0) + state.reserved.live(now)
                allowed = used + cost <= ceiling
                retry = ends - now
            reason = "limit"
            if places is not None and place is not None:
                has = places.get(place)
                if has is not None and not has[0]:
                    allowed, retry, reason = False, has[1], "subjects"
            if allowed:
                reason, retry = "", 0.0
            elif enforce and refused is None:
                refused = i
                if rid is not None:
                    self._undo(undo, rid)
                    return None
            taken = rid is not None and (enforce or allowed or kind == _BUDGET)
            if kind == _REQUESTS:
                if taken:
                    undo.append((_REQUESTS, counter, stored))
                    base += amount
                    self._tat[counter] = base
                ahead = base - now_us
                remaining = float(math.floor((second - ahead) / first))
                verdicts.append(new_tuple(Verdict, (allowed, remaining if remaining > 0.0 else 0.0,
                                                    ahead / 1e6, retry, None, reason)))
            elif kind == _TOKENS:
                buckets = state.buckets
                if taken:
                    if cost > 0:
                        had = buckets.get(bucket)
                        undo.append((_TOKENS, state, bucket, had))
                        state.put(bucket, (had or 0.0) + cost)
                    items.append((_TOKENS, counter, state, cost, bucket, first))
                reset = (next(reversed(buckets)) + BUCKETS + 1) * first - now if buckets else 0.0
                remaining = limit - state.total()
                verdicts.append(new_tuple(Verdict, (allowed, remaining if remaining > 0.0 else 0.0,
                                                    reset, retry, None, reason)))
            elif kind == _SLOTS:
                if taken:
                    undo.append((_SLOTS, state, state.total, state.soonest, state.latest))
                    state.take(rid, cost, now + lease)
                    items.append((_SLOTS, counter, state, cost, 0, 0.0))
                remaining = limit - state.total
                verdicts.append(new_tuple(Verdict, (allowed, remaining if remaining > 0.0 else 0.0,
                                                    state.last(now), retry, None, reason)))
            else:
                reserved = state.reserved
                if taken:
                    undo.append((_SLOTS, reserved, reserved.total, reserved.soonest,
                                 reserved.latest))
                    reserved.take(rid, cost, now + lease)
                    items.append((_BUDGET, counter, state, cost, 0, 0.0))
                used = (state.spent or 0.0) + reserved.total
                remaining = limit - used
                verdicts.append(new_tuple(Verdict, (allowed, remaining if remaining > 0.0 else 0.0,
                                                    ends - now, retry, used / limit, reason)))
        if rid is None:
            return Admission(False, verdicts, None, refused)
        if items:
            self._held[rid] = (now + lease + HOLD, items)
            return Admission(True, verdicts, rid, None)
        return Admission(True, verdicts, None, None)

    def _undo(self, undo: list[tuple[Any, ...]], rid: str) -> None:
        """Put back what a refused pass took, last first, each counter as it was."""
        for kind, where, *before in reversed(undo):
            if kind == _REQUESTS:
                if before[0] is None:
                    del self._tat[where]
                else:
                    self._tat[where] = before[0]
            elif kind == _TOKENS:
                bucket, had = before
                if had is None:
                    del where.buckets[bucket]
                    where.sum = None
                else:
                    where.put(bucket, had)
            else:  # a Leases: the slot or reservation goes, its figures come back
                del where.held[rid]
                where.total, where.soonest, where.latest = before

    def _period(self, counter: str, period: str, now: float) -> list[Any]:
        """A budget's period holding `now`, as a prepared budget keeps it: [start, end,
        its Budget]; the Budget is the one `share`, `seed` and `spent` read."""
        key, start, end = period_of(period, now)
        found = self._budgets.get((counter, key))
        if found is None:
            found = self._budgets[counter, key] = Budget()
        return [start, end, found]

    async def settle(self, reservation: str, actual: Mapping[str, float], now: float) -> None:
        self.settle_soon(reservation, actual, now)

    def settle_soon(self, reservation: str, actual: Mapping[str, float], now: float) -> None:
        _, items = self._held.pop(reservation, (0.0, []))
        for kind, counter, state, amount, bucket, width in items:
            real = actual.get(counter, 0.0)
            if kind == _TOKENS:
                if bucket >= math.floor(now / width) - BUCKETS:
                    left = state.buckets.get(bucket, 0.0) + (real - amount)
                    if left > 0:
                        state.put(bucket, left)
                    elif state.buckets.pop(bucket, None) is not None:
                        state.sum = None
            elif kind == _SLOTS:
                state.free(reservation)
            else:
                state.reserved.free(reservation)
                if real > 0:
                    state.spent = (state.spent or 0.0) + real

    async def share(self, counters: Sequence[tuple[str, float, str]],
                    now: float) -> dict[str, float]:
        shares = {}
        for counter, limit, period in counters:
            budget = self._budget(counter, period, now)
            shares[counter] = ((budget.spent or 0.0) + budget.reserved.live(now)) / limit
        return shares

    async def seed(self, counter: str, period: str, spent: float, now: float) -> bool:
        budget = self._budget(counter, period, now)
        if budget.spent is not None:
            return False
        budget.spent = spent
        return True

    async def spent(self, counter: str, period: str, now: float) -> float:
        return self._budget(counter, period, now).spent or 0.0

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _budget(self, counter: str, period: str, now: float) -> Budget:
        budget: Budget = self._period(counter, period, now)[2]
        return budget


    def _places(self, limits: Sequence[Limit], now: float,
                lease: float) -> dict[tuple[str, str], tuple[bool, float, float]]:
        """(family, subject) -> (has or gets a place, retry_after, until when it holds it)."""
        places = {}
        for (family, subject), (cap, until) in subjects(limits, now, lease).items():
            known = self._families.setdefault(family, {})
            for gone in [s for s, held_until in known.items() if held_until <= now]:
                del known[gone]
            ok = subject in known or len(known) < cap
            retry = 0.0 if ok else min(known.values(), default=until) - now
            places[family, subject] = (ok, retry, until)
        return places



class Planned(Prepared):
    """Prepared limits for one `MemoryCounters`: for each, its kind, counter, limit, the
    ceiling an admission may reach (limit plus SLACK), two figures of its kind, its
    state, whether it enforces, and its (family, subject) when capped. The state is the
    store's own object (a tokens `Window`, a slots `Leases`), or for a budget its last
    period [start, end, Budget]; a requests quota's arrival time stays in the store."""

    __slots__ = ("entries", "store")

    def __init__(self, store: MemoryCounters, limits: Sequence[Limit]) -> None:
        super().__init__(limits)
        self.store = store
        entries: list[tuple[int, str, float, float, Any, Any, Any, bool,
                            tuple[str, str] | None]] = []
        for item in limits:
            counter, kind, limit = item.counter, item.kind, item.limit
            ceiling = limit + SLACK * limit
            place = (item.family, item.subject or counter) if item.family else None
            if kind == "requests":  # the emission interval and the capacity, in whole µs
                step = max(1, math.floor(item.window * 1e6 / limit + 0.5))
                capacity = math.floor((limit if item.burst is None else item.burst) * step + 0.5)
                entry: tuple[int, Any, Any, Any] = (_REQUESTS, step, capacity, None)
            elif kind == "tokens":  # a bucket's width and the window
                window = store._windows.get(counter)
                if window is None:
                    window = store._windows[counter] = Window()
                entry = (_TOKENS, item.window / BUCKETS, item.window, window)
            elif kind == "concurrency":
                slots = store._slots.get(counter)
                if slots is None:
                    slots = store._slots[counter] = Leases()
                entry = (_SLOTS, 0.0, 0.0, slots)
            else:  # a budget: its period, and its last one (none yet)
                entry = (_BUDGET, item.period, 0.0, [_INF, -_INF, None])
            code, first, second, state = entry
            entries.append((code, counter, limit, ceiling, first, second, state, item.enforce,
                            place))
        self.entries = tuple(entries)
