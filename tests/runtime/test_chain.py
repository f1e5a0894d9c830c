"""The fallback chain on its own: scripted upstreams, an injected sleep, no network.

Each test scripts what each model's upstream does, runs the chain and checks
what a user would see (the answer, or the error), what each upstream saw
(its calls) and the waits the chain asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from compiler.compiled import CompiledPolicy, Deployment, load
from policies.store import MemoryStore
from runtime.chain import Chain
from runtime.errors import GatewayError, UpstreamError
from runtime.pipeline.exchange import Attempt

POLICY = """
provider up {
  type = openai_compatible
  base_url = "http://127.0.0.1:1/v1"
  retry {
    attempts = 3
    backoff  = 100ms..1s
    resume   = true
  }
  breaker { failures = 3 }
}
model a { provider = up }
model b { provider = up }
model c { provider = up; prefill = true }
model small { provider = up; context = 10 }
route { otherwise -> a, b }
auth { mode = none }
"""

Script = Callable[[int], Any]  # call number -> an answer, or an UpstreamError to raise


def status(number: int, **fields: Any) -> UpstreamError:
    return UpstreamError("status", f"answered {number}", status=number, **fields)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> CompiledPolicy:
    path = tmp_path_factory.mktemp("chain") / "policy.gw"
    path.write_text(POLICY)
    return load(str(path), {})


class Run:
    """A chain over named models with scripted upstreams, and what happened."""

    def __init__(self, policy: CompiledPolicy, scripts: dict[str, Script],
                 store: MemoryStore | None = None) -> None:
        self.policy = policy
        self.scripts = scripts
        self.calls: dict[str, int] = {}
        self.waits: list[float] = []
        self.store = store or MemoryStore()

    def chain(self, *names: str, tokens: float = 0) -> Chain:
        async def sleep(seconds: float) -> None:
            self.waits.append(seconds)
        targets = tuple(self.policy.deployments[n] for n in names)
        return Chain(targets, tokens, {"up": None}, self.store,  # type: ignore[dict-item]
                     lambda attempt: None, sleep)

    def answer(self, name: str) -> Any:
        self.calls[name] = self.calls.get(name, 0) + 1
        outcome = self.scripts[name](self.calls[name])
        if isinstance(outcome, UpstreamError):
            raise outcome
        return outcome

    async def call(self, adapter: object, deployment: Deployment, timeouts: object) -> Any:
        return self.answer(deployment.name)

    def plain(self, *names: str, tokens: float = 0) -> tuple[str, Any, list[Attempt]]:
        chain = self.chain(*names, tokens=tokens)
        deployment, answer, _ = asyncio.run(chain.run(self.call))
        return deployment.name, answer, chain.attempts


def test_a_500_once_is_retried_on_the_same_model(policy: CompiledPolicy) -> None:
    run = Run(policy, {"a": lambda n: status(500) if n == 1 else "from a",
                       "b": lambda n: "from b"})
    assert run.plain("a", "b")[:2] == ("a", "from a")
    assert run.calls == {"a": 2} and len(run.waits) == 1 and 0 <= run.waits[0] <= 0.1


def test_a_persistent_503_falls_back_within_the_retry_budget(policy: CompiledPolicy) -> None:
    run = Run(policy, {"a": lambda n: status(503), "b": lambda n: "from b"})
    name, answer, attempts = run.plain("a", "b")
    assert (name, answer) == ("b", "from b") and run.calls == {"a": 3, "b": 1}
    assert [a.outcome for a in attempts] == ["503", "503", "503", "ok"]


def test_retry_after_is_waited_as_told(policy: CompiledPolicy) -> None:
    run = Run(policy, {"a": lambda n: status(429, retry_after=0.7) if n == 1 else "ok"})
    run.plain("a")
    assert run.waits == [0.7]


def test_a_retry_after_beyond_the_backoffs_ceiling_goes_elsewhere_at_once(
        policy: CompiledPolicy) -> None:
    run = Run(policy, {"a": lambda n: status(429, retry_after=30.0), "b": lambda n: "from b"})
    assert run.plain("a", "b")[0] == "b"
    assert run.calls == {"a": 1, "b": 1} and run.waits == []
    last = Run(policy, {"a": lambda n: status(429, retry_after=30.0) if n == 1 else "ok"})
    assert last.plain("a")[1] == "ok" and last.waits == [1.0]  # the last waits, capped


def test_429_without_retry_after_backs_off_exponentially_then_falls_back(
        policy: CompiledPolicy) -> None:
    run = Run(policy, {"a": lambda n: status(429), "b": lambda n: "from b"})
    assert run.plain("a", "b")[0] == "b"
    assert run.calls["a"] == 3 and len(run.waits) == 2
    assert 0 <= run.waits[0] <= 0.1 and 0 <= run.waits[1] <= 0.2  # full jitter, capped


def test_a_timeout_is_not_retried_while_another_model_is_left(policy: CompiledPolicy) -> None:
    run = Run(policy, {"a": lambda n: UpstreamError("timeout", "silent"),
                       "b": lambda n: "from b"})
    assert run.plain("a", "b")[0] == "b"
    assert run.calls == {"a": 1, "b": 1} and run.waits == []


def test_the_last_model_is_retried_after_a_timeout(policy: CompiledPolicy) -> None:
    run = Run(policy, {"a": lambda n: UpstreamError("timeout", "silent") if n < 3 else "late"})
    assert run.plain("a")[:2] == ("a", "late")
    assert run.calls == {"a": 3}


def test_a_context_too_long_goes_to_the_next_model_without_a_retry(
        policy: CompiledPolicy) -> None:
    run = Run(policy, {"a": lambda n: status(400, code="context_length_exceeded"),
                       "b": lambda n: "from b"})
    assert run.plain("a", "b")[0] == "b"
    assert run.calls == {"a": 1, "b": 1}
    assert run.store.breakers()["a"].failures == 0  # the prompt's fault, not the upstream's


def test_a_content_filter_is_passed_on_untried_elsewhere(policy: CompiledPolicy) -> None:
    run = Run(policy, {"a": lambda n: UpstreamError("status", "flagged: violence", status=400,
                                                    code="content_filter"),
                       "b": lambda n: "from b"})
    with pytest.raises(GatewayError) as caught:
        run.plain("a", "b")
    assert (caught.value.status, caught.value.code) == (400, "content_filter")
    assert "violence" in caught.value.message and run.calls == {"a": 1}


def test_junk_answers_count_against_the_breaker_and_fall_back(policy: CompiledPolicy) -> None:
    run = Run(policy, {"a": lambda n: UpstreamError("malformed", "not JSON"),
                       "b": lambda n: "from b"})
    assert run.plain("a", "b")[0] == "b"
    assert run.store.breakers()["a"].state == 2  # three junk answers opened it
    run.plain("a", "b")
    assert run.calls["a"] == 3  # open: not tried again


def test_a_model_with_too_small_a_context_is_passed_over(policy: CompiledPolicy) -> None:
    run = Run(policy, {"small": lambda n: "never", "b": lambda n: "from b"})
    name, _, attempts = run.plain("small", "b", tokens=50)
    assert name == "b" and "small" not in run.calls and attempts[0].skipped


def test_every_model_failing_names_each_attempt(policy: CompiledPolicy) -> None:
    run = Run(policy, {"a": lambda n: status(502), "b": lambda n: UpstreamError("connect", "x")})
    with pytest.raises(GatewayError) as caught:
        run.plain("a", "b")
    assert caught.value.status == 502 and "a (up): 502" in caught.value.message


# ----------------------------------------------------------------- streams

WORDS = [f"w{i}" for i in range(1, 61)]


def chunk(text: str | None = None, finish: str | None = None, role: bool = False) -> dict[str, Any]:
    delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
    if text is not None:
        delta["content"] = text
    return {"id": "up-id", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def words(texts: list[str], cut: bool = False, spaced: bool = False
                ) -> AsyncIterator[dict[str, Any]]:
    """A stream of words, each after a space but the first (unless it continues a text)."""
    yield chunk(role=True)
    for i, word in enumerate(texts):
        yield chunk(word if i == 0 and not spaced else " " + word)
    if cut:
        raise UpstreamError("connect", "the stream broke")
    yield chunk(finish="stop")


class Streams:
    """Scripted stream openers: model name -> (body it got -> its chunks)."""

    def __init__(self, scripts: dict[str, Callable[[dict[str, Any]], AsyncIterator[Any]]]):
        self.scripts = scripts
        self.bodies: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, adapter: object, deployment: Deployment, body: dict[str, Any],
                 timeouts: object) -> AsyncIterator[Any]:
        self.bodies.setdefault(deployment.name, []).append(body)
        return self.scripts[deployment.name](body)


def read(run: Run, streams: Streams, *names: str) -> tuple[str, str]:
    """The stream as the client reads it: the answering model and the text."""
    async def go() -> tuple[str, str]:
        chain = run.chain(*names)
        deployment, chunks = await chain.open_stream({"messages": [{"role": "user",
                                                                    "content": "count"}]},
                                                     streams)
        text = ""
        async for piece in chunks:
            assert piece["id"] == "up-id"
            for choice in piece["choices"]:
                text += choice["delta"].get("content") or ""
        return deployment.name, text
    return asyncio.run(go())


def continuation(body: dict[str, Any]) -> AsyncIterator[Any]:
    prefix = body["messages"][-1]
    assert prefix["role"] == "assistant"
    said = prefix["content"].split()
    return words(WORDS[len(said):], spaced=True) if said == WORDS[:len(said)] else words(["no"])


def test_a_cut_stream_resumes_on_a_prefill_model_with_nothing_lost_or_repeated(
        policy: CompiledPolicy) -> None:
    streams = Streams({"a": lambda body: words(WORDS[:40], cut=True), "c": continuation})
    name, text = read(Run(policy, {}), streams, "a", "b", "c")
    assert name == "a" and text == " ".join(WORDS)
    assert "b" not in streams.bodies  # b takes no prefill


def test_a_refused_prefix_leads_to_the_cuts_own_error(policy: CompiledPolicy) -> None:
    async def refuses(body: dict[str, Any]) -> AsyncIterator[Any]:
        raise status(400, code="invalid_request")
        yield  # an async generator that fails on its first step

    streams = Streams({"a": lambda body: words(WORDS[:40], cut=True), "c": refuses})
    with pytest.raises(UpstreamError) as caught:
        read(Run(policy, {}), streams, "a", "c")
    assert caught.value.message == "the stream broke"


def test_without_resume_a_cut_stream_raises(policy: CompiledPolicy,
                                            tmp_path: Path) -> None:
    path = tmp_path / "p.gw"
    path.write_text(POLICY.replace("resume   = true", "resume   = false"))
    streams = Streams({"a": lambda body: words(WORDS[:40], cut=True), "c": continuation})
    with pytest.raises(UpstreamError):
        read(Run(load(str(path), {}), {}), streams, "a", "c")
    assert "c" not in streams.bodies


def test_a_stream_falls_back_before_its_first_chunk(policy: CompiledPolicy) -> None:
    async def dead(body: dict[str, Any]) -> AsyncIterator[Any]:
        raise status(503)
        yield

    streams = Streams({"a": dead, "b": lambda body: words(["hi"])})
    assert read(Run(policy, {}), streams, "a", "b") == ("b", "hi")
