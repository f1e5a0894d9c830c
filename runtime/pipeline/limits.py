"""Limits: the plan's quotas and budgets, reserved before the call and settled after.

A reservation is taken on the way in, so that concurrent requests cannot
overspend, and settled on the way out to what the answer really cost, or
released when there was no answer. The quota and budget mechanisms (and the
stores that share their counters across replicas) come with the limits work;
until then the plan's quotas and budgets reserve nothing, and `gwc serve`
says so when it loads a policy that has any.
"""

from __future__ import annotations

from runtime.pipeline.exchange import Exchange


def enter(exchange: Exchange) -> None:
    exchange.reservations = []


def leave(exchange: Exchange) -> None:
    exchange.reservations.clear()
