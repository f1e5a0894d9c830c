"""A value worked out once per object a loaded policy keeps, found by the object's identity.

A policy's decisions, their guard tuples and its breaker blocks are made once
per load and kept for as long as it serves. They are frozen dataclasses and
tuples of them, whose hash is a Python call over every field: asked on every
request, that costs more than the lookup it serves. So these caches key them
by `id()`, keep the object beside its value (its id cannot be reused while the
entry lives), and start over when full, so that a reloaded policy's objects do
not stay alive through them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ByIdentity(Generic[K, V]):
    """`make(key)`, made the first time `key` itself is asked for and kept."""

    __slots__ = ("_found", "_kept", "_make")

    def __init__(self, make: Callable[[K], V], kept: int) -> None:
        self._make = make
        self._kept = kept
        self._found: dict[int, tuple[K, V]] = {}

    def __call__(self, key: K) -> V:
        found = self._found.get(id(key))
        if found is not None and found[0] is key:
            return found[1]
        value = self._make(key)
        if len(self._found) >= self._kept:
            self._found.clear()
        self._found[id(key)] = (key, value)
        return value
