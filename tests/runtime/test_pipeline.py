"""The pipeline's mechanics: its table, early answers, exit halves, stream chunks."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from runtime.errors import GatewayError
from runtime.pipeline import STAGES, Pipeline, Stage


def test_the_stages_run_in_the_documented_order() -> None:
    assert [s.name for s in STAGES] == [
        "observe", "identity", "conversation", "plan", "input_guards", "limits", "cache",
        "chain", "output_guards", "usage"]


class Exchange(SimpleNamespace):
    """Just what the runner reads: the answer, a stream's chunks, the error."""


def recording(log: list[str]) -> Pipeline:
    def enter(name: str, then: Any = None) -> Any:
        async def half(exchange: Any) -> None:
            log.append(f"enter {name}")
            if then is not None:
                then(exchange)
        return half

    def leave(name: str) -> Any:
        def half(exchange: Any) -> None:
            log.append(f"leave {name}")
        return half

    def answer(exchange: Any) -> None:
        exchange.answer = "from the cache"

    def refuse(exchange: Any) -> None:
        raise GatewayError(429, "too many")

    return Pipeline([
        Stage("one", enter("one"), leave("one")),
        Stage("refuses", enter("refuses", lambda x: x.refuse and refuse(x)), leave("refuses")),
        Stage("answers", enter("answers", answer), leave("answers")),
        Stage("after", enter("after"), leave("after")),
    ])


def run(pipeline: Pipeline, **fields: Any) -> Exchange:
    exchange = Exchange(answer=None, chunks=None, error=None, status=200, **fields)

    async def go() -> None:
        await pipeline.enter(exchange)  # type: ignore[arg-type]
        await pipeline.leave(exchange)  # type: ignore[arg-type]
    asyncio.run(go())
    return exchange


def test_an_early_answer_stops_the_way_in_and_every_exit_half_runs() -> None:
    log: list[str] = []
    exchange = run(recording(log), refuse=False)
    assert exchange.answer == "from the cache"
    assert log == ["enter one", "enter refuses", "enter answers",
                   "leave after", "leave answers", "leave refuses", "leave one"]


def test_a_refusal_is_kept_on_the_exchange_with_its_status() -> None:
    log: list[str] = []
    exchange = run(recording(log), refuse=True)
    assert exchange.status == 429 and exchange.error.message == "too many"
    assert log[:2] == ["enter one", "enter refuses"] and len(log) == 6


def test_an_exit_half_that_fails_does_not_skip_the_others() -> None:
    seen: list[str] = []

    def broken(exchange: Any) -> None:
        raise RuntimeError("a bug")

    pipeline = Pipeline([Stage("log", leave=lambda x: seen.append("logged")),
                         Stage("broken", leave=broken)])
    with pytest.raises(RuntimeError):
        run(pipeline)
    assert seen == ["logged"]


def test_chunks_pass_the_chunk_halves_innermost_first_and_may_be_dropped() -> None:
    pipeline = Pipeline([
        Stage("outer", chunk=lambda x, c: {**c, "path": [*c["path"], "outer"]}),
        Stage("inner", chunk=lambda x, c: None if c.get("drop") else
              {**c, "path": [*c["path"], "inner"]}),
    ])
    assert pipeline.outgoing(None, {"path": []}) == {"path": ["inner", "outer"]}  # type: ignore[arg-type]
    assert pipeline.outgoing(None, {"path": [], "drop": True}) is None  # type: ignore[arg-type]


def test_a_stream_is_wrapped_once_as_it_begins_by_the_stream_halves_innermost_first() -> None:
    async def numbers() -> Any:
        for n in (1, 2):
            yield {"n": n}

    def tagged(tag: str) -> Any:
        async def wrap(exchange: Any, chunks: Any) -> Any:
            async for chunk in chunks:
                yield {**chunk, "by": [*chunk.get("by", []), tag]}
        return wrap

    def streams(exchange: Any) -> None:
        exchange.chunks = numbers()

    pipeline = Pipeline([Stage("outer", stream=tagged("outer")),
                         Stage("opens", streams),
                         Stage("inner", stream=tagged("inner"))])
    exchange = Exchange(answer=None, chunks=None, error=None, status=200)

    async def read() -> list[Any]:
        await pipeline.enter(exchange)  # type: ignore[arg-type]
        return [chunk async for chunk in exchange.chunks]
    assert asyncio.run(read()) == [{"n": 1, "by": ["inner", "outer"]},
                                   {"n": 2, "by": ["inner", "outer"]}]
