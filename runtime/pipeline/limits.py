"""Limits: the plan's quotas and budgets, reserved before the call and settled after.

A reservation is taken on the way in, so that concurrent requests cannot
overspend, and settled on the way out: to what the answer really cost, or
released, at no cost, when there was no answer. The quota and budget
mechanisms, and the stores that share their counters across replicas, come
with the limits work; until then nothing is reserved, and this exit half
settles an empty list.
"""

from __future__ import annotations

from typing import Protocol

from runtime.pipeline.exchange import Exchange


class Reservation(Protocol):
    def settle(self, cost: float | None) -> None:
        """Settle to `cost` in USD; None releases it (the request got no answer)."""


def leave(exchange: Exchange) -> None:
    answered = exchange.error is None and exchange.answered_by is not None
    for reservation in exchange.reservations:
        reservation.settle((exchange.cost or 0.0) if answered else None)
    exchange.reservations.clear()
