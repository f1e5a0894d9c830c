"""Budget alerts: each threshold's webhook sent once per subject and period.

An admission that leaves a budget's share at or past one of its `alert`
thresholds queues that alert; a task of its own sends it, never the request.
"Once" holds across replicas and restarts because the database decides: the
first process to claim (subject, period, threshold) sends, every other claim
is refused (`Ledger.claim_alert`, a unique row). A send that fails is retried
with backoff for up to an hour; one that never gets through is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from compiler.compiled import Budget
from policies import backoff
from policies.periods import period_key
from runtime.limiting import Applied

logger = logging.getLogger("gwc")
ATTEMPTS = 12  # 0.5 s doubling up to 5 min: about an hour of trying
MAX_QUEUE = 10_000


@dataclass(frozen=True, slots=True)
class Alert:
    budget: str  # the budget's counter
    subject: str
    period: str  # "2026-12"
    threshold: float
    spent: float
    limit: float
    notify: str | None


@dataclass
class Alerts:
    claim: Callable[[str, str, float], bool] | None  # the ledger's claim_alert, in a thread
    webhooks: Callable[[str], tuple[str, str] | None]  # notify name -> (url, format)
    post: Callable[[str, dict[str, Any]], Awaitable[None]]
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    queue: asyncio.Queue[Alert] = field(default_factory=lambda: asyncio.Queue(MAX_QUEUE))
    seen: set[tuple[str, str, float]] = field(default_factory=set)  # claimed or claiming here
    sent: list[Alert] = field(default_factory=list)  # the ones this process sent, for tests

    def check(self, applied: Sequence[Applied]) -> None:
        """Queue the alerts an admission's shares cross: on the request path, a set lookup."""
        for item in applied:
            block, share = item.block, item.verdict.share
            if not isinstance(block, Budget) or share is None or not block.alerts:
                continue
            period = period_key(item.limit.period, self.clock())
            for threshold in block.alerts:
                key = (item.limit.counter, period, threshold)
                if share >= threshold and key not in self.seen:
                    self.seen.add(key)
                    alert = Alert(item.limit.counter, item.subject, period, threshold,
                                  share * item.limit.limit, item.limit.limit, block.notify)
                    try:
                        self.queue.put_nowait(alert)
                    except asyncio.QueueFull:
                        logger.error("gwc: alert queue full; dropped %s", alert)

    async def run(self) -> None:
        """Send what is queued, one at a time, for as long as the gateway serves."""
        while True:
            alert = await self.queue.get()
            try:
                await self._deliver(alert)
            except Exception:  # one alert's bug must not stop the others
                logger.exception("gwc: the alert for %s failed", alert.subject)

    async def _deliver(self, alert: Alert) -> None:
        if self.claim is not None and not await asyncio.to_thread(
                self.claim, f"{alert.budget}|{alert.subject}", alert.period, alert.threshold):
            return  # another replica, or an earlier run of this one, has sent it
        target = self.webhooks(alert.notify) if alert.notify else None
        if target is None:
            logger.warning("gwc: budget alert: %s has spent %.0f%% of $%g (%s)", alert.subject,
                           alert.threshold * 100, alert.limit, alert.period)
            self.sent.append(alert)
            return
        url, shape = target
        body = payload(alert, shape)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self.post(url, body)
                self.sent.append(alert)
                return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if attempt == ATTEMPTS:
                    logger.error("gwc: the alert for %s never reached its webhook: %s",
                                 alert.subject, exc)
                    return
                await self.sleep(backoff.delay(attempt, 0.5, 300.0, None))


def payload(alert: Alert, shape: str) -> dict[str, Any]:
    """Slack's incoming-webhook message, or plain JSON for anything else."""
    if shape == "slack":
        return {"text": f"gwc: {alert.subject} has spent ${alert.spent:.2f} of its "
                        f"${alert.limit:g} budget for {alert.period} "
                        f"({alert.threshold:.0%} alert)"}
    return {"subject": alert.subject, "period": alert.period, "spent": round(alert.spent, 6),
            "limit": alert.limit, "threshold": alert.threshold}

