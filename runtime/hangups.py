"""Cancelling the work of a request whose client has hung up, and so its upstream call.

Noticing a hang-up takes a task reading the request's `receive` until the
server reports the disconnect. Most answers come long before a hang-up could
save anything, and such a task per request would cost more than the rest of
the watching, so requests are watched only once they have lasted a while: a
sweeper wakes every PERIOD and starts a watcher for each request that was
already in flight at its previous round, so between one and two periods
after it arrived. A request that ends sooner costs two dictionary updates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

from runtime.errors import GatewayError

PERIOD = 0.05  # seconds
T = TypeVar("T")
Task = asyncio.Task[None]


class Hangups:
    def __init__(self, period: float = PERIOD) -> None:
        self.period = period
        self.fresh: dict[Task, Receive] = {}  # arrived since the last round
        self.aged: dict[Task, Receive] = {}  # to be watched at the next round
        self.watchers: dict[Task, Task] = {}
        self.gone: set[Task] = set()
        self.sweeper: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def guard(self, receive: Receive, work: Awaitable[T]) -> T:
        """`await work`, cancelled with a 499 if the client hangs up meanwhile."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self.sweeper = self.loop.create_task(self._sweep())
        # Naming the loop spares a getpid() system call that Python 3.11 makes to find it.
        task: Task = asyncio.current_task(self.loop)  # type: ignore[assignment]
        self.fresh[task] = receive
        try:
            return await work
        except asyncio.CancelledError:
            if task in self.gone:
                raise GatewayError(499, "the client closed the connection",
                                   "client_closed") from None
            raise
        finally:
            if self.fresh.pop(task, None) is None and self.aged.pop(task, None) is None:
                self.watchers.pop(task).cancel()
                self.gone.discard(task)

    async def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
            self.sweeper = self.loop = None

    async def _sweep(self) -> None:
        assert self.loop is not None
        while True:
            await asyncio.sleep(self.period)
            for task, receive in self.aged.items():
                self.watchers[task] = self.loop.create_task(self._watch(task, receive))
            self.aged, self.fresh = self.fresh, {}

    async def _watch(self, task: Task, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone.add(task)
        task.cancel()
