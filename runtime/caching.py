"""What the cache stage keys answers by, and how it finds, replays and keeps them.

Exact mode keys an answer by a digest of the canonical request: every field
that can change the answer, with keys sorted and numbers in one spelling
(`1`, `1.0` and `1e0` are one number), so that equal requests always meet.
Fields that only say how to deliver it (`stream`, `stream_options`) or who
asks (`user`, `metadata`, `store`) are left out. Semantic mode keys a
partition the same way, but for the last user message, which is embedded
and compared within the partition only: a changed system prompt, model,
earlier turn or parameter is another partition, never a near hit.

Every key starts with the scope's subject, so one tenant's entries are never
another's: `team=research` by default (the caller's key where it has no
team), `global` only when a policy writes it. A request whose subject is
unknown (scope `user` and no user) is not cached.

A semantic candidate is a hit only at `threshold` or above **and** when the
lexical guard (policies/lexical.py) finds both messages ask the same thing:
no similarity can tell "enable 2FA" from "disable 2FA" apart reliably. Both
are judged in the block's vector process, beside the search: the event loop
only takes the best hit it answers that has not expired.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import json
import logging
import math
import types
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import redis.asyncio as aioredis

from compiler.compiled import Cache, Deployment
from policies.cache_store import CacheStore, Entry
from policies.local_cache import LocalCache
from policies.redis_cache import RedisCache
from policies.vector_process import EmbedderFailed, VectorProcess
from runtime.errors import UpstreamError

if TYPE_CHECKING:
    from runtime.pipeline.exchange import Body, Exchange
    from runtime.providers.base import Adapter

logger = logging.getLogger("gwc")
IGNORED = frozenset(("stream", "stream_options", "user", "metadata", "store"))
EXACT_INTS = 2**53  # floats up to this are integers exactly, and are spelled as integers
VECTORS_KEPT = 4096  # a model's embeddings of recent messages: a repeat costs no call
# a declared embedding model has no figures of its own here: it starts at the threshold
# of the sentence model measured (docs/language.md says to measure it)
MEASURED = {"model": "minilm"}


def canonical(value: Any) -> Any:
    """JSON with one spelling per number: an integral float is its integer."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer() and -EXACT_INTS <= value <= EXACT_INTS:
        return int(value)
    return value


def digest(*parts: Any) -> str:
    """A key for `parts` whatever their key order and number spelling.

    orjson writes every integral float within EXACT_INTS as `N.0`, so JSON without
    `.0` in it has none to respell, and is its own canonical text: the walk
    through every message is made only for a request that may need it."""
    text: bytes | None
    try:
        text = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer past 64 bits: canonical() and the standard library
        text = None
    if text is None or b".0" in text:
        normal = canonical(parts)
        try:
            text = orjson.dumps(normal, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            text = json.dumps(normal, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(text, digest_size=16).hexdigest()


def scope_of(block: Cache, exchange: Exchange) -> str | None:
    """Whose entries a request reads and writes, as `dimension=value`; None: nobody's."""
    scope = block.scope
    if scope == "global":
        return "global"
    if scope is None:
        if exchange.team is not None:
            return f"team={exchange.team}"
        return f"key={exchange.key_id}" if exchange.key_id is not None else None
    value = {"team": exchange.team, "user": exchange.user, "key": exchange.key_id}[scope]
    return f"{scope}={value}" if value is not None else None


def asked(body: Body) -> tuple[str, Body] | None:
    """The last user message's text, and the request without it, when the request
    ends with a user message of text only; else None (semantic mode keys it exactly)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list):
        if not all(isinstance(p, dict) and p.get("type") == "text"
                   and isinstance(p.get("text"), str) for p in content):
            return None
        content = "\n".join(p["text"] for p in content)
    if not isinstance(content, str):
        return None
    rest = {k: v for k, v in body.items() if k not in IGNORED}
    rest["messages"] = [*messages[:-1], {**last, "content": None}]
    return content, rest


@dataclass(slots=True)
class Lookup:
    """Where a request's answer is, or would be, kept."""

    store: CacheStore
    block: Cache
    scope: str
    key: str = ""  # exact
    partition: str = ""  # semantic
    text: str = ""
    vector: np.ndarray | None = None


class Cacher:
    """The gateway's cached answers: one store per cache block's settings (in memory,
    or in Redis when `GW_STATE_URL` names one), a semantic one with its vector
    process (policies/vector_process.py), and the `model(NAME)` embedders."""

    def __init__(self, redis: aioredis.Redis | None = None) -> None:
        self.redis = redis
        self.stores: dict[str, CacheStore] = {}
        self._embedders: dict[str, Batched] = {}
        self._missing: set[str] = set()  # embedders whose extra is not installed
        self._closing: set[asyncio.Task[None]] = set()  # stores a reload left behind
        self._warned = -math.inf  # when a lookup that failed was last logged

    def store(self, block: Cache) -> CacheStore:
        name = _store_name(*_settings(block))
        found = self.stores.get(name)
        if found is None:
            # a semantic block's rows are searched in a process of its own, which embeds
            # too unless the embedder is a model the gateway calls
            vectors = VectorProcess(block.embedder if block.embedder != "model" else None)
            found = self.stores[name] = RedisCache(self.redis, name, block.max_entries,
                                                   vectors) if self.redis is not None \
                else LocalCache(block.max_entries,
                                vectors if block.mode == "semantic" else None)
        found.resize(block.max_entries)
        return found

    async def find(self, block: Cache, exchange: Exchange,
                   read: bool) -> tuple[Lookup | None, Entry | None, float | None]:
        """The request's place in the cache, and the entry found there (if `read`)
        with its similarity (semantic hits only)."""
        scope = scope_of(block, exchange)
        if scope is None:
            return None, None, None
        store, now = self.store(block), exchange.gateway.limiter.clock()
        question = asked(exchange.body) if block.mode == "semantic" else None
        if question is None:
            request = {k: v for k, v in exchange.body.items() if k not in IGNORED}
            lookup = Lookup(store, block, scope, key=digest(scope, exchange.endpoint.path,
                                                            request))
            return lookup, await store.get(lookup.key, scope, now) if read else None, None
        text, rest = question
        lookup = Lookup(store, block, scope, partition=digest(scope, exchange.endpoint.path,
                                                              rest), text=text)
        threshold = None  # a lookup that reads nothing passes none
        if read:
            threshold = block.threshold if block.threshold is not None else \
                _embedders().DEFAULT_THRESHOLDS[MEASURED.get(block.embedder, block.embedder)]
        try:
            vector = await self.embedder(block, exchange).embed(text) \
                if block.embedder == "model" else None
            lookup.vector, found = await store.nearest(lookup.partition, scope, text, vector,
                                                       now, threshold)
        except EmbedderFailed as missing:  # its extra not installed
            if block.embedder not in self._missing:  # said once, not on every request
                self._missing.add(block.embedder)
                logger.error("gwc: the cache block at %s:%d goes uncached: %s",
                             block.source.file, block.source.line, missing)
            return None, None, None
        except (UpstreamError, ValueError):  # its model down or answering junk
            logger.warning("gwc: the cache's embedder failed; the request goes on uncached",
                           exc_info=True)
            return None, None, None
        except OSError as down:  # the vector process stopped, or is slow: a miss
            if now - self._warned >= 1.0:  # said once a second, not for every request
                self._warned = now
                logger.warning("gwc: the request goes on uncached: %s", down)
            return None, None, None
        if not read or not found:
            return lookup, None, None
        entry, similarity = found[0]  # the best of the hits the vector process found
        store.used(entry)
        return lookup, entry, similarity

    def keep(self, lookup: Lookup, exchange: Exchange, answer: Body) -> None:
        deployment = exchange.answered_by
        assert deployment is not None
        ttl = lookup.block.ttl
        entry = Entry(orjson.dumps(answer), deployment.name, deployment.provider.name,
                      exchange.cost or 0.0, lookup.scope, exchange.gateway.limiter.clock() + ttl,
                      lookup.text)
        if lookup.vector is None:
            lookup.store.put(lookup.key, entry, ttl)
        else:
            lookup.store.add(lookup.partition, lookup.vector, entry, ttl)

    async def flush(self, scope: str | None = None) -> int:
        return sum([await store.flush(scope) for store in self.stores.values()])

    def keep_only(self, blocks: list[Cache]) -> None:
        """After a reload, the stores of settings no block has any more are closed, a
        semantic one's vector process with it (a request still on the policy before
        that reaches one misses)."""
        wanted = {_store_name(*_settings(block)) for block in blocks}
        for name in [name for name in self.stores if name not in wanted]:
            closing = asyncio.get_running_loop().create_task(self.stores.pop(name).close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for store in self.stores.values():
            await store.close()
        if self.redis is not None:
            await self.redis.aclose()

    def embedder(self, block: Cache, exchange: Exchange) -> Batched:
        """`model(NAME)` through its provider's adapter in the policy the request runs
        on (the gateway's own embedders run in the block's vector process)."""
        assert block.embedder_model is not None
        loaded = exchange.loaded
        deployment = loaded.policy.deployments[block.embedder_model]
        name = f"model:{deployment.name}:{id(loaded)}"
        found = self._embedders.get(name)
        if found is None:
            self._embedders.clear()  # a reload's adapters replace the old ones
            adapter = loaded.adapters[deployment.provider.name]
            found = self._embedders[name] = Batched(functools.partial(
                _embed_by_model, adapter, deployment))
        return found


@functools.lru_cache(maxsize=256)
def _store_name(*settings: str | None) -> str:
    """A block's entries are named by what they depend on, so that a reload keeps them."""
    return digest(*settings)


def _settings(block: Cache) -> tuple[str | None, ...]:
    return block.mode, block.scope, block.embedder, block.embedder_model


@functools.cache
def _embedders() -> types.ModuleType:
    """policies.embedders, imported when a semantic block first needs it: a gateway
    that caches exactly never loads it (and then kept: an import per lookup costs the
    import system's lock and lookups)."""
    return importlib.import_module("policies.embedders")


async def _embed_by_model(adapter: Adapter, deployment: Deployment,
                          texts: list[str]) -> np.ndarray:
    """Vectors from an embedding model the policy declares, rows L2-normalised."""
    answer = await adapter.embed(deployment.model, {"model": deployment.model.upstream,
                                                    "input": texts}, deployment.timeouts)
    data = sorted(answer.get("data") or [], key=lambda item: item.get("index", 0))
    vectors = np.asarray([item["embedding"] for item in data], dtype=np.float32)
    if vectors.shape[0] != len(texts):
        raise ValueError(f"the embedding model answered {vectors.shape[0]} vectors for "
                         f"{len(texts)} texts")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


class Batched:
    """A `model(NAME)` embedder, one batch at a time: texts asked while a batch runs go
    together in the next, so a burst costs a few calls to the model, not one each."""

    def __init__(self, embed: Callable[[list[str]], Awaitable[np.ndarray]]) -> None:
        self._embed = embed
        self._queue: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._running = False
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()

    async def embed(self, text: str) -> np.ndarray:
        found = self._recent.get(text)
        if found is not None:
            self._recent.move_to_end(text)
            return found
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append((text, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    vectors = await self._embed([text for text, _ in batch])
                except Exception as exc:  # each waiter hears of it; the next batch tries anew
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (text, future), vector in zip(batch, vectors, strict=True):
                    self._recent[text] = vector
                    if not future.done():
                        future.set_result(vector)
                while len(self._recent) > VECTORS_KEPT:
                    self._recent.popitem(last=False)
        finally:
            self._running = False
