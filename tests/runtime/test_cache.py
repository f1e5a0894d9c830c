"""The cache stage, end to end with the openai SDK: what is a hit, what never is.

Each test runs a gateway in this process in front of the OpenAI fake (the
fixtures of test_limits), whose calls it counts: a hit is an answer the fake
was not asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from compiler.compiled import load
from policies.memory_counters import MemoryCounters
from runtime.app import create_app
from runtime.gateway import Gateway
from runtime.limiting import Limiter
from runtime.state import State
from tests.fakes import API_KEY, serving
from tests.runtime import test_limits
from tests.runtime.test_limits import ADMIN, HEAD, ROUTE, C, Running

run, upstreams = test_limits.run, test_limits.upstreams  # the limits tests' gateway fixtures

EXACT = ROUTE + 'cache when endpoint == "chat" { mode = exact; ttl = 10m }\n'
SEMANTIC = ROUTE + 'cache when endpoint == "chat" { mode = semantic; ttl = 10m }\n'
QUESTION = "How do I enable two-factor authentication on my account?"


class Client:
    """The openai SDK against a running gateway, with the fake's call count beside it."""

    def __init__(self, gw: Running, upstreams: Any, key: str) -> None:
        self.gw, self.script = gw, upstreams.scripts[0]
        self.sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)

    def ask(self, question: str = QUESTION, *, system: str | None = None, model: str = "ok",
            **fields: Any) -> tuple[str, dict[str, str]]:
        messages: list[Any] = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": question})
        raw = self.sdk.chat.completions.with_raw_response.create(
            model=model, messages=messages, max_tokens=3, **fields)
        answer = raw.parse()
        assert answer.choices[0].message.content
        return answer.id, dict(raw.headers)

    def calls(self) -> int:
        return sum(self.script.calls.values())


@pytest.fixture
def client(run: Any, upstreams: Any) -> Iterator[Any]:
    """`client(policy)`: a gateway serving the policy, and an SDK client with a new key."""
    running: list[Any] = []

    def start(policy: str, team: str = "t") -> Client:
        context = run(policy)
        gw = context.__enter__()
        running.append(context)
        _, key = gw.new_key(team)
        return Client(gw, upstreams, key)
    yield start
    for context in running:
        context.__exit__(None, None, None)


def test_the_same_question_twice_is_answered_once_with_a_fresh_id(client: Any) -> None:
    sdk = client(EXACT)
    before = sdk.calls()
    first_id, first = sdk.ask()
    second_id, second = sdk.ask()
    assert sdk.calls() - before == 1
    assert (first["x-gw-cache"], second["x-gw-cache"]) == ("miss", "hit")
    assert second["x-gw-model"] == "ok" and second_id != first_id
    assert second["x-gw-cost"] == "0.00000000" and float(first["x-gw-cost"]) == pytest.approx(C)


def test_key_order_spacing_and_number_spelling_do_not_change_the_key(client: Any) -> None:
    sdk = client(EXACT)
    url = sdk.gw.url + "/v1/chat/completions"
    headers = {"authorization": f"Bearer {sdk.sdk.api_key}", "content-type": "application/json"}
    bodies = ['{"model":"ok","messages":[{"role":"user","content":"hi"}],"temperature":1,'
              '"max_tokens":3}',
              '{ "temperature" : 1e0, "max_tokens": 3,\n "messages": [ {"content": "hi",'
              ' "role": "user"} ], "model": "ok" }']
    seen = [httpx.post(url, content=body, headers=headers).headers["x-gw-cache"]
            for body in bodies]
    assert seen == ["miss", "hit"]


@pytest.mark.parametrize("change", [
    {"system": "You answer in French."}, {"temperature": 0.9}, {"model": "other"},
    {"question": QUESTION.replace("enable", "disable")}])
def test_a_changed_system_prompt_parameter_model_or_ask_is_a_miss(
        client: Any, change: dict[str, Any]) -> None:
    sdk = client(SEMANTIC)
    sdk.ask(temperature=0.2)
    before = sdk.calls()
    question = change.pop("question", QUESTION)
    _, headers = sdk.ask(question, **{"temperature": 0.2, **change})
    assert headers["x-gw-cache"] == "miss" and sdk.calls() == before + 1


def test_a_paraphrase_is_a_semantic_hit_with_its_similarity(client: Any) -> None:
    sdk = client(SEMANTIC)
    sdk.ask()
    _, headers = sdk.ask("how do I enable two factor authentication on my account")
    assert headers["x-gw-cache"] == "hit"
    assert 0 < float(headers["x-gw-cache-similarity"]) <= 1


def test_another_team_never_reads_an_entry(client: Any, upstreams: Any) -> None:
    research = client(EXACT, team="research")
    research.ask()
    _, key = research.gw.new_key("sales")
    sales = Client(research.gw, upstreams, key)
    _, headers = sales.ask()
    assert headers["x-gw-cache"] == "miss"
    _, again = research.ask()
    assert again["x-gw-cache"] == "hit"


def test_an_entry_expires_after_its_ttl(client: Any) -> None:
    sdk = client(EXACT)
    sdk.ask()
    sdk.gw.clock.advance(601)
    _, headers = sdk.ask()
    assert headers["x-gw-cache"] == "miss"


def test_no_cache_fetches_anew_and_no_store_neither_reads_nor_writes(client: Any) -> None:
    sdk = client(EXACT)
    sdk.ask()
    _, fresh = sdk.ask(extra_headers={"cache-control": "no-cache"})
    _, skipped = sdk.ask("A question never asked", extra_headers={"cache-control": "no-store"})
    _, after = sdk.ask("A question never asked")
    assert (fresh["x-gw-cache"], skipped["x-gw-cache"], after["x-gw-cache"]) == \
        ("miss", "bypass", "miss")


def test_a_streamed_request_is_answered_from_the_cache_as_a_stream(client: Any) -> None:
    sdk = client(EXACT)
    sdk.ask()
    before = sdk.calls()
    stream = sdk.sdk.chat.completions.create(
        model="ok", messages=[{"role": "user", "content": QUESTION}], max_tokens=3,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sdk.calls() == before and content
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_a_streamed_answer_is_kept_once_it_completes(client: Any) -> None:
    sdk = client(EXACT)
    for _ in range(2):
        list(sdk.sdk.chat.completions.create(
            model="ok", messages=[{"role": "user", "content": QUESTION}], max_tokens=3,
            stream=True))
    before = sdk.calls()
    _, headers = sdk.ask()  # the plain request differs only in `stream`: the same key
    assert headers["x-gw-cache"] == "hit" and sdk.calls() == before


def test_a_failed_answer_is_never_kept(client: Any) -> None:
    sdk = client(EXACT + 'model broken { provider = oa; name = "error-500" }\n')
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            sdk.ask(model="broken")
    assert asyncio.run(sdk.gw.gateway.cacher.flush()) == 0


def test_a_hit_costs_no_budget_and_is_logged_with_what_it_saved(client: Any) -> None:
    sdk = client(EXACT + "budget per key { limit = $1 per day }\n")
    sdk.ask()
    sdk.ask()
    [counter] = sdk.gw.charged()
    assert sdk.gw.spent_on(counter, 1.0) == pytest.approx(C)  # the miss alone
    lines = sdk.gw.lines()
    assert [line["cache"] for line in lines] == ["miss", "hit"]
    assert lines[1]["saved"] == pytest.approx(C) and lines[1]["model"] == "ok"
    metrics = sdk.gw.gateway.metrics.render().decode()
    assert 'gw_cache_total{result="hit"} 1.0' in metrics


def test_the_admin_flush_empties_one_scope_or_all(client: Any) -> None:
    sdk = client(EXACT, team="research")
    sdk.ask()
    url = sdk.gw.url + "/admin/cache/flush"
    admin = {"authorization": f"Bearer {ADMIN}"}
    assert httpx.post(url, json={"scope": "team=sales"}, headers=admin).json() == {"flushed": 0}
    assert httpx.post(url, json={"scope": "team=research"}, headers=admin).json() == \
        {"flushed": 1}
    assert httpx.post(url, json={"scope": "team="}, headers=admin).status_code == 400
    _, headers = sdk.ask()
    assert headers["x-gw-cache"] == "miss"
    assert httpx.post(url, headers=admin).json() == {"flushed": 1}


@pytest.mark.parametrize("mode", ["exact", "semantic"])
def test_an_entry_kept_by_one_replica_is_a_hit_on_another(
        tmp_path: Path, upstreams: Any, redis_url: str, mode: str) -> None:
    policy = tmp_path / "policy.gw"
    policy.write_text(HEAD.format(openai=upstreams.openai, anthropic=upstreams.anthropic,
                                  key=API_KEY) + ROUTE + "auth { mode = none }\n"
                      f"cache {{ mode = {mode}; scope = global }}\n")

    @contextlib.contextmanager
    def replica() -> Iterator[openai.OpenAI]:
        state = State(Limiter(MemoryCounters()), cache_url=redis_url)
        gateway = Gateway(str(policy), {}, state=state)
        with serving(create_app(gateway, compiled=load(str(policy)))) as url:
            yield openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)

    def ask(sdk: openai.OpenAI, question: str) -> str:
        raw = sdk.chat.completions.with_raw_response.create(
            model="ok", messages=[{"role": "user", "content": question}], max_tokens=3)
        return raw.headers["x-gw-cache"]

    with replica() as first, replica() as second:
        assert ask(first, QUESTION) == "miss"
        deadline = time.monotonic() + 5  # the write goes off the request's path
        seen = ask(second, QUESTION)
        while seen != "hit" and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = ask(second, QUESTION)
        assert seen == "hit"
        assert ask(second, QUESTION.replace("enable", "disable")) == "miss"


def test_a_declared_embedding_model_embeds_through_its_provider(client: Any) -> None:
    sdk = client(ROUTE + 'cache when endpoint == "chat" { mode = semantic; '
                 "embedder = model(emb) }\n")
    embedded = sdk.script.calls.get("emb", 0)
    sdk.ask()
    _, paraphrase = sdk.ask("how do I enable 2-factor authentication on my account")
    _, opposite = sdk.ask(QUESTION.replace("enable", "disable"))
    assert sdk.script.calls["emb"] == embedded + 3  # the fake's vectors are all alike:
    assert (paraphrase["x-gw-cache"], opposite["x-gw-cache"]) == ("hit", "miss")  # the guard


def test_an_embedder_that_fails_leaves_the_request_uncached_not_failed(client: Any) -> None:
    sdk = client(ROUTE + 'provider dead { type = openai; base_url = "http://127.0.0.1:9/v1"; '
                 'api_key = "x" }\nmodel down { provider = dead }\n'
                 'cache when endpoint == "chat" { mode = semantic; embedder = model(down) }\n')
    _, headers = sdk.ask()
    assert headers["x-gw-cache"] == "bypass"


def test_a_changed_number_is_a_miss_however_alike_the_question(client: Any) -> None:
    sdk = client(SEMANTIC)
    sdk.ask("What is 17 times 23?")
    _, again = sdk.ask("What is 17 times 23?")
    _, other = sdk.ask("What is 17 times 24?")
    assert (again["x-gw-cache"], other["x-gw-cache"]) == ("hit", "miss")
