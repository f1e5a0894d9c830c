"""Cache: an answer stored for an equal (or, semantically, a like) request.

The cache stage answers from its store on a hit, and stores fresh answers on
the way out. Until the cache work lands it stores nothing, and every answer
says `x-gw-cache: bypass`.
"""

from __future__ import annotations

from runtime.pipeline.exchange import Exchange


def enter(exchange: Exchange) -> None:
    exchange.cache = "bypass"
