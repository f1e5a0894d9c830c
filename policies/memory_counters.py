"""Quota and budget counters in the process's own memory: one replica's store.

The reference for `RedisCounters`: `redis_counters.lua` is this module's
`admit` and `settle` written again for Redis, step for step and in the same
order of float operations, and the tests hold the two to the same answers.
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
    Verdict,
    forget_expired,
    new_tuple,
    subjects,
    validate,
)
from policies.periods import period_of

_INF = math.inf
# What a reservation holds of one counter, to settle it: (kind, counter, its state, amount,
# and for tokens the bucket the estimate went into and the bucket's width).
_TOKENS, _SLOTS, _BUDGET = 1, 2, 3
Item = tuple[int, str, Any, float, int, float]


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
        self._gcras: dict[tuple[float, float, float | None, float], tuple[int, int, int]] = {}

    async def admit(self, limits: Sequence[Limit], now: float, lease: float) -> Admission:
        validate(limits)
        if self._held:
            forget_expired(self._held, now)
        places = None
        for item in limits:
            if item.family:
                places = self._places(limits, now, lease)
                break
        # One pass checks every limit and keeps the figures that taking from it and its
        # verdict need; the second takes (when every enforcing limit allows) and answers.
        checked: list[tuple[bool, float, str, Any, Any]] = []
        refused = None
        now_us = math.floor(now * 1e6 + 0.5)
        for i, (counter, kind, limit, window, period, burst, cost, enforce, family, _,
                subject) in enumerate(limits):
            reason = "limit"
            if kind == "requests":
                figures: Any = self._gcra(window, limit, burst, cost)
                step, capacity, amount = figures
                base = self._tat.get(counter, now_us)
                if base < now_us:
                    base = now_us
                allow_at = base + amount - capacity
                allowed = allow_at <= now_us
                retry = (allow_at - now_us if allow_at > now_us else 0) / 1e6
                state: Any = base
            elif kind == "tokens":
                ceiling = limit + SLACK * limit
                state = self._windows.get(counter)
                if state is None:
                    state = self._windows[counter] = Window()
                width = window / BUCKETS
                current = math.floor(now / width)
                if state.buckets:
                    state.drop(current - BUCKETS)
                total = state.total()
                allowed = total + cost <= ceiling
                retry = 0.0
                if not allowed:
                    retry = window
                    if cost <= ceiling:
                        fallen = 0.0
                        for bucket, amount in state.buckets.items():
                            fallen += amount
                            if total - fallen + cost <= ceiling:
                                retry = (bucket + BUCKETS + 1) * width - now
                                break
                figures = (width, current)
            elif kind == "concurrency":
                state = self._slots.get(counter)
                if state is None:
                    state = self._slots[counter] = Leases()
                allowed = state.live(now) + cost <= limit + SLACK * limit
                retry = CONCURRENCY_RETRY
                figures = None
            else:
                key, _, end = period_of(period, now)
                state = self._budgets.get((counter, key))
                if state is None:
                    state = self._budgets[counter, key] = Budget()
                used = (state.spent or 0.0) + state.reserved.live(now)
                allowed = used + cost <= limit + SLACK * limit
                retry = end - now
                figures = end
            if places is not None and family:
                place = places.get((family, subject or counter))
                if place is not None and not place[0]:
                    allowed, retry, reason = False, place[1], "subjects"
            if not allowed and refused is None and enforce:
                refused = i
            checked.append((allowed, retry, reason, state, figures))
        admitted = refused is None
        rid = str(next(self._ids)) if admitted else ""
        items: list[Item] = []
        verdicts = []
        for item, (allowed, retry, reason, state, figures) in zip(limits, checked, strict=True):
            counter, kind, limit, _, _, _, cost, enforce = item[:8]
            taken = admitted and (enforce or allowed or kind == "budget")
            if allowed:
                reason, retry = "", 0.0
            if kind == "requests":
                step, capacity, amount = figures
                if taken:
                    state += amount
                    self._tat[counter] = state
                ahead = state - now_us
                remaining = float(math.floor((capacity - ahead) / step))
                verdicts.append(new_tuple(Verdict, (allowed, remaining if remaining > 0.0 else 0.0,
                                                    ahead / 1e6, retry, None, reason)))
            elif kind == "tokens":
                width, current = figures
                buckets = state.buckets
                if taken:
                    if cost > 0:
                        state.put(current, buckets.get(current, 0.0) + cost)
                    items.append((_TOKENS, counter, state, cost, current, width))
                reset = (next(reversed(buckets)) + BUCKETS + 1) * width - now if buckets else 0.0
                remaining = limit - state.total()
                verdicts.append(new_tuple(Verdict, (allowed, remaining if remaining > 0.0 else 0.0,
                                                    reset, retry, None, reason)))
            elif kind == "concurrency":
                if taken:
                    state.take(rid, cost, now + lease)
                    items.append((_SLOTS, counter, state, cost, 0, 0.0))
                remaining = limit - state.total
                verdicts.append(new_tuple(Verdict, (allowed, remaining if remaining > 0.0 else 0.0,
                                                    state.last(now), retry, None, reason)))
            else:
                reserved = state.reserved
                if taken:
                    reserved.take(rid, cost, now + lease)
                    items.append((_BUDGET, counter, state, cost, 0, 0.0))
                used = (state.spent or 0.0) + reserved.total
                remaining = limit - used
                verdicts.append(new_tuple(Verdict, (allowed, remaining if remaining > 0.0 else 0.0,
                                                    figures - now, retry, used / limit, reason)))
        if admitted and places is not None:
            for (family, subject), (ok, _, until) in places.items():
                if ok:
                    known = self._families[family]
                    known[subject] = max(known.get(subject, until), until)
        if items:
            self._held[rid] = (now + lease + HOLD, items)
            return Admission(True, verdicts, rid, None)
        return Admission(admitted, verdicts, None, refused)

    def _gcra(self, window: float, limit: float, burst: float | None,
              cost: float) -> tuple[int, int, int]:
        """A requests quota in whole µs: emission interval, burst capacity, this cost.

        The same few quotas come back on every request: their figures are kept.
        """
        key = (window, limit, burst, cost)
        found = self._gcras.get(key)
        if found is None:
            if len(self._gcras) >= 4096:
                self._gcras.clear()
            found = self._gcras[key] = _gcra(window, limit, burst, cost)
        return found

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
        key = (counter, period_of(period, now)[0])
        found = self._budgets.get(key)
        if found is None:
            found = self._budgets[key] = Budget()
        return found


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


def _gcra(window: float, limit: float, burst: float | None,
          cost: float) -> tuple[int, int, int]:
    step = max(1, math.floor(window * 1e6 / limit + 0.5))
    return step, math.floor((limit if burst is None else burst) * step + 0.5), \
        math.floor(cost * step + 0.5)
