"""What the cache keys answers by, and how it embeds and replays: one piece at a time."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from typing import Any

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st

from compiler.compiled import Cache
from compiler.policy import Source
from policies.local_cache import LocalCache
from runtime.caching import Batched, Cacher, asked, canonical, digest
from runtime.formats.chat import CHAT

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=12)


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6), st.integers())
def test_a_request_keys_alike_whatever_its_key_order_spacing_and_number_spelling(
        body: dict[str, Any], seed: int) -> None:
    spelled = json.loads(json.dumps(shuffled(body, random.Random(seed)), indent=seed % 3),
                         parse_int=float)  # every integer spelled `N.0`
    assert digest(body) == digest(spelled)


@given(st.dictionaries(st.text(max_size=6), json_values | st.floats(-2.0**54, 2.0**54).map(
    float.__round__).map(float), max_size=6))
def test_the_key_is_the_canonical_texts_whether_or_not_the_walk_is_skipped(
        body: dict[str, Any]) -> None:
    walked = orjson.dumps(canonical(("team=a", "/v1/chat/completions", body)),
                          option=orjson.OPT_SORT_KEYS)
    assert digest("team=a", "/v1/chat/completions", body) == \
        hashlib.blake2b(walked, digest_size=16).hexdigest()


def test_numbers_past_64_bits_key_too() -> None:
    assert digest({"seed": 10**30}) == digest({"seed": 10**30}) != digest({"seed": 10**30 + 1})
    assert digest({"temperature": 1e19}) != digest({"temperature": 2e19})


def test_different_values_key_apart() -> None:
    assert digest({"temperature": 0.2}) != digest({"temperature": 0.3})
    assert digest({"a": [1, 2]}) != digest({"a": [2, 1]})
    assert digest({"a": "1"}) != digest({"a": 1})


def test_semantic_mode_compares_the_last_user_message_only_when_it_is_text() -> None:
    body = {"model": "m", "stream": True, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello"},
                                     {"type": "text", "text": "there"}]}]}
    found = asked(body)
    assert found is not None
    text, rest = found
    assert text == "hello\nthere" and "stream" not in rest
    assert rest["messages"][0] == {"role": "system", "content": "be brief"}
    image = {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    assert asked({"messages": [{"role": "user", "content": [image]}]}) is None
    assert asked({"messages": [{"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "yo"}]}) is None


def test_texts_asked_while_a_batch_runs_are_embedded_together() -> None:
    batches: list[list[str]] = []

    async def embed(texts: list[str]) -> np.ndarray:
        batches.append(texts)
        await asyncio.sleep(0.01)
        return np.ones((len(texts), 2), dtype=np.float32)

    async def go() -> None:
        batched = Batched(embed)
        first = asyncio.ensure_future(batched.embed("text 0"))
        await asyncio.sleep(0.001)  # its batch runs: the next ones wait for the one after
        await asyncio.gather(first, *(batched.embed(f"text {i}") for i in range(1, 10)))
        await batched.embed("text 3")  # embedded already: not asked again

    asyncio.run(go())
    assert [len(batch) for batch in batches] == [1, 9]


def test_a_replayed_stream_is_the_answer_it_was_assembled_from() -> None:
    answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}

    async def chunks() -> list[dict[str, Any]]:
        return [chunk async for chunk in CHAT.replay(answer, include_usage=True)]

    replay = asyncio.run(chunks())
    assert replay[-1] == {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
                          "model": "m", "choices": [], "usage": answer["usage"]}
    assert CHAT.assembled(replay, answer["usage"]) == answer


def test_a_stream_with_tool_calls_is_not_kept() -> None:
    chunk = {"id": "c", "created": 1, "model": "m", "choices": [
        {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "f"}}]},
         "finish_reason": None}]}
    assert CHAT.assembled([chunk], {}) is None
    plain = {"id": "c", "created": 1, "model": "m", "choices": [
        {"index": 0, "delta": {"content": "x", "refusal": None}, "finish_reason": "stop"}]}
    assert CHAT.assembled([plain], {}) is not None


@given(st.dictionaries(st.sampled_from(["model", "messages", "content", "role", "x"]),
                       json_values, max_size=4),
       st.lists(json_values, max_size=4))
def test_any_body_is_keyed_or_left_to_exact_mode_without_an_error(
        body: dict[str, Any], messages: list[Any]) -> None:
    for candidate in (body, {**body, "messages": messages},
                      {**body, "messages": [*messages, {"role": "user", "content": body}]}):
        found = asked(candidate)
        assert found is None or isinstance(found[0], str)
        assert len(digest("team=t", "chat", candidate if found is None else found[1])) == 32


def test_a_reload_closes_the_stores_no_block_has_any_more_and_their_vector_process() -> None:
    semantic = Cache(0, Source("p.gw", 1, 1), mode="semantic")
    exact = Cache(1, Source("p.gw", 2, 1))

    async def go() -> tuple[bool, bool]:
        cacher = Cacher()
        store, kept = cacher.store(semantic), cacher.store(exact)
        assert isinstance(store, LocalCache) and store.vectors is not None
        await store.vectors.start()
        child = store.vectors._child
        assert child is not None
        cacher.keep_only([exact])  # the new policy has only the exact block
        for _ in range(100):
            await asyncio.sleep(0.02)
            if child.returncode is not None:
                break
        alive = child.returncode is None
        left = list(cacher.stores.values()) == [kept]
        await cacher.close()
        return alive, left
    alive, left = asyncio.run(go())
    assert not alive and left
