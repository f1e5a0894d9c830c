"""Quota and budget counters in the process's own memory: one replica's store.

The reference for `RedisCounters`: `redis_counters.lua` is this module's
`admit` and `settle` written again for Redis, step for step and in the same
order of float operations, and the tests hold the two to the same answers.
Nothing here reads a clock; every call works at the `now` it is given. Being
one event loop's, a call runs to its end without yielding, which is what
makes an admission atomic here.
"""

from __future__ import annotations

import math
import secrets
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from policies.limits import (
    BUCKETS,
    CONCURRENCY_RETRY,
    HOLD,
    SLACK,
    Admission,
    CounterStore,
    Limit,
    Verdict,
    subjects,
    validate,
)
from policies.periods import period_bounds, period_key

HELD = ("tokens", "concurrency", "budget")  # the kinds a reservation holds until settle


@dataclass
class Leases:
    """Amounts held until settled or until their lease ends, with their running total."""

    total: float = 0.0
    held: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> (expiry, amount)

    def live(self, now: float) -> float:
        expired = sorted((expiry, rid) for rid, (expiry, _) in self.held.items() if expiry <= now)
        for _, rid in expired:
            self.total -= self.held.pop(rid)[1]
        if not self.held:
            self.total = 0.0
        return self.total

    def take(self, rid: str, amount: float, expiry: float) -> None:
        self.total += amount
        self.held[rid] = (expiry, amount)

    def free(self, rid: str) -> bool:
        found = self.held.pop(rid, None)
        if found is not None:
            self.total -= found[1]
        if not self.held:
            self.total = 0.0
        return found is not None

    def last(self, now: float) -> float:
        return max((expiry for expiry, _ in self.held.values()), default=now) - now


@dataclass
class Budget:
    spent: float | None = None  # None: nothing settled (or seeded) this period yet
    reserved: Leases = field(default_factory=Leases)


@dataclass(frozen=True, slots=True)
class Item:
    """What a reservation holds of one counter, to settle it."""

    kind: str
    counter: str
    amount: float
    place: str = ""    # budgets: the period key
    bucket: int = 0    # tokens: the bucket the estimate went into
    window: float = 0.0


@dataclass
class Check:
    """One limit, checked: whether it allows, and how to take from it."""

    allowed: bool
    retry: float
    reason: str = "limit"  # why, when it does not allow


class MemoryCounters(CounterStore):
    """Counters in dicts, for one process; the default, and the reference."""

    def __init__(self) -> None:
        self._tat: dict[str, int] = {}                 # requests: theoretical arrival, in µs
        self._windows: dict[str, dict[int, float]] = {}  # tokens: bucket -> amount
        self._slots: dict[str, Leases] = {}
        self._budgets: dict[tuple[str, str], Budget] = {}
        self._families: dict[str, dict[str, float]] = {}  # family -> subject -> until
        self._held: OrderedDict[str, tuple[float, list[Item]]] = OrderedDict()  # by age

    async def admit(self, limits: Sequence[Limit], now: float, lease: float) -> Admission:
        validate(limits)
        self._forget(now)
        places = self._places(limits, now, lease)
        checks = [self._check(item, now) for item in limits]
        for item, check in zip(limits, checks, strict=True):
            place = places.get((item.family, item.subject or item.counter)) if item.family else None
            if place is not None and not place[0]:
                check.allowed, check.retry, check.reason = False, place[1], "subjects"
        refused = [i for i, (item, check) in enumerate(zip(limits, checks, strict=True))
                   if item.enforce and not check.allowed]
        admitted = not refused
        rid = secrets.token_hex(8)
        items: list[Item] = []
        verdicts = []
        for item, check in zip(limits, checks, strict=True):
            taken = admitted and (item.enforce or check.allowed or item.kind == "budget")
            if taken:
                items += self._take(item, rid, now, lease)
            verdicts.append(self._verdict(item, check, now))
        if admitted:
            for (family, subject), (ok, _, until) in places.items():
                if ok:
                    known = self._families[family]
                    known[subject] = max(known.get(subject, until), until)
        if items:
            self._held[rid] = (now + lease + HOLD, items)
        return Admission(admitted, verdicts, rid if items else None,
                         refused[0] if refused else None)

    async def settle(self, reservation: str, actual: Mapping[str, float], now: float) -> None:
        _, items = self._held.pop(reservation, (0.0, []))
        for item in items:
            real = actual.get(item.counter, 0.0)
            if item.kind == "tokens":
                width = item.window / BUCKETS
                if item.bucket >= math.floor(now / width) - BUCKETS:
                    buckets = self._windows.setdefault(item.counter, {})
                    left = buckets.get(item.bucket, 0.0) + (real - item.amount)
                    if left > 0:
                        buckets[item.bucket] = left
                    else:
                        buckets.pop(item.bucket, None)
            elif item.kind == "concurrency":
                self._slots[item.counter].free(reservation)
            else:
                budget = self._budgets[item.counter, item.place]
                budget.reserved.free(reservation)
                if real > 0:
                    budget.spent = (budget.spent or 0.0) + real

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
        key = (counter, period_key(period, now))
        found = self._budgets.get(key)
        if found is None:
            found = self._budgets[key] = Budget()
        return found

    def _forget(self, now: float) -> None:
        """Drop reservations nobody settled, well past their lease (callers that leaked them)."""
        while self._held:
            keep, _ = next(iter(self._held.values()))  # OrderedDict: O(1), unlike a dict's
            if keep > now:
                return
            self._held.popitem(last=False)

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

    def _check(self, item: Limit, now: float) -> Check:
        limit = item.limit + SLACK * item.limit
        if item.kind == "requests":
            _, capacity, cost, now_us = _gcra(item, now)
            base = max(self._tat.get(item.counter, now_us), now_us)
            allow_at = base + cost - capacity
            return Check(allow_at <= now_us, max(0, allow_at - now_us) / 1e6)
        if item.kind == "tokens":
            buckets, width, _ = self._window(item, now)
            total = sum(buckets[i] for i in sorted(buckets))
            if total + item.cost <= limit:
                return Check(True, 0.0)
            retry = item.window
            if item.cost <= limit:
                fallen = 0.0
                for i in sorted(buckets):
                    fallen += buckets[i]
                    if total - fallen + item.cost <= limit:
                        retry = (i + BUCKETS + 1) * width - now
                        break
            return Check(False, retry)
        if item.kind == "concurrency":
            held = self._slots.setdefault(item.counter, Leases()).live(now)
            return Check(held + item.cost <= limit, CONCURRENCY_RETRY)
        budget = self._budget(item.counter, item.period, now)
        used = (budget.spent or 0.0) + budget.reserved.live(now)
        return Check(used + item.cost <= limit, period_bounds(item.period, now)[1] - now)

    def _window(self, item: Limit, now: float) -> tuple[dict[int, float], float, int]:
        """A tokens counter's live buckets (older ones dropped), their width, the current one."""
        width = item.window / BUCKETS
        current = math.floor(now / width)
        buckets = self._windows.setdefault(item.counter, {})
        for old in [i for i in buckets if i < current - BUCKETS]:
            del buckets[old]
        return buckets, width, current

    def _take(self, item: Limit, rid: str, now: float, lease: float) -> list[Item]:
        if item.kind == "requests":
            _, _, cost, now_us = _gcra(item, now)
            self._tat[item.counter] = max(self._tat.get(item.counter, now_us), now_us) + cost
            return []
        if item.kind == "tokens":
            buckets, _, current = self._window(item, now)
            if item.cost > 0:
                buckets[current] = buckets.get(current, 0.0) + item.cost
            return [Item("tokens", item.counter, item.cost, bucket=current, window=item.window)]
        if item.kind == "concurrency":
            self._slots[item.counter].take(rid, item.cost, now + lease)
            return [Item("concurrency", item.counter, item.cost)]
        self._budget(item.counter, item.period, now).reserved.take(rid, item.cost, now + lease)
        return [Item("budget", item.counter, item.cost, place=period_key(item.period, now))]

    def _verdict(self, item: Limit, check: Check, now: float) -> Verdict:
        """The limit's figures as this admission leaves its counter."""
        reason = "" if check.allowed else check.reason
        retry = 0.0 if check.allowed else check.retry
        if item.kind == "requests":
            step, capacity, _, now_us = _gcra(item, now)
            ahead = max(self._tat.get(item.counter, now_us), now_us) - now_us
            remaining = max(0.0, float(math.floor((capacity - ahead) / step)))
            return Verdict(check.allowed, remaining, ahead / 1e6, retry, reason=reason)
        if item.kind == "tokens":
            buckets, width, _ = self._window(item, now)
            total = sum(buckets[i] for i in sorted(buckets))
            reset = (max(buckets) + BUCKETS + 1) * width - now if buckets else 0.0
            return Verdict(check.allowed, max(0.0, item.limit - total), reset, retry,
                           reason=reason)
        if item.kind == "concurrency":
            slots = self._slots[item.counter]
            return Verdict(check.allowed, max(0.0, item.limit - slots.total), slots.last(now),
                           retry, reason=reason)
        budget = self._budget(item.counter, item.period, now)
        used = (budget.spent or 0.0) + budget.reserved.total
        return Verdict(check.allowed, max(0.0, item.limit - used),
                       period_bounds(item.period, now)[1] - now, retry,
                       share=used / item.limit, reason=reason)


def _gcra(item: Limit, now: float) -> tuple[int, int, int, int]:
    """A requests quota in whole µs: emission interval, burst capacity, this cost, now."""
    step = max(1, math.floor(item.window * 1e6 / item.limit + 0.5))
    burst = item.limit if item.burst is None else item.burst
    return (step, math.floor(burst * step + 0.5), math.floor(item.cost * step + 0.5),
            math.floor(now * 1e6 + 0.5))

