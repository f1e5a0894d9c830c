"""Quotas, budgets and their subjects, end to end: what a client of the gateway sees.

Each test runs a gateway in this process (`Running`, on a port of its own,
in front of the OpenAI and Anthropic fakes) with a clock the test moves, a
SQLite database for keys and the ledger, and its own policy. The fakes'
answers cost a known amount: 9 prompt and 3 completion tokens, so at the
prices below `C` dollars. A prompt of 36 characters is estimated at 9 tokens,
so a request with `max_tokens = 3` reserves exactly `C` from a budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from compiler.compiled import load
from policies.keys import KeyRing, Keys
from policies.ledger import LedgerWriter
from policies.memory_counters import MemoryCounters
from policies.records import Records, open_records
from runtime.access_log import AccessLog
from runtime.app import create_app
from runtime.gateway import Gateway
from runtime.limiting import Limiter
from runtime.state import State
from tests.clocks import Clock
from tests.fakes import API_KEY, Script, anthropic_fake, openai_fake, serving

ADMIN = "limits-admin"
PROMPT = "x" * 36  # estimated at 9 tokens, what the fakes count
IN, OUT = 100e-6, 200e-6  # the model ok's prices a token
C = 9 * IN + 3 * OUT  # what one answer of the fake costs

HEAD = """
provider oa {{ type = openai; base_url = "{openai}/v1"; api_key = "{key}" }}
provider an {{ type = anthropic; base_url = "{anthropic}"; api_key = "{key}" }}
model ok     {{ provider = oa; name = "ok"; input = $100/1M; output = $200/1M }}
model cheap  {{ provider = oa; name = "ok"; input = $1/1M; output = $1/1M }}
model other  {{ provider = oa; name = "ok"; input = $100/1M; output = $200/1M }}
model cut    {{ provider = oa; name = "cut"; input = $100/1M; output = $200/1M }}
model emb    {{ provider = oa; name = "emb"; input = $100/1M }}
model gpt-cached {{ provider = oa; name = "cached"; input = $2/1M; cached_input = $0.5/1M;
                    output = $8/1M }}
model claude-cached {{ provider = an; name = "cached"; input = $3/1M; cached_input = $0.3/1M;
                       cache_write = $3.75/1M; output = $15/1M; max_output = 1k }}
"""
ROUTE = """
route {
  when endpoint == "embeddings" -> emb
  otherwise -> requested
}
"""


@dataclass
class Upstreams:
    openai: str
    anthropic: str
    scripts: tuple[Script, Script]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    scripts = Script(), Script()
    with serving(openai_fake.app(scripts[0])) as o, serving(anthropic_fake.app(scripts[1])) as a:
        yield Upstreams(o, a, scripts)


@dataclass
class Running:
    """A gateway on a port, with the handles a test reads it by."""

    url: str
    gateway: Gateway
    clock: Clock
    records: Records
    keys: Keys
    policy: Path
    log: Path
    head: str

    def post(self, path: str, body: dict[str, Any], key: str | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        sent = dict(headers or {})
        if key is not None:
            sent["authorization"] = f"Bearer {key}"
        return httpx.post(self.url + path, json=body, headers=sent, timeout=10)

    def chat(self, key: str | None = None, model: str = "ok", max_tokens: int | None = 3,
             headers: dict[str, str] | None = None, **fields: Any) -> httpx.Response:
        body: dict[str, Any] = {"model": model,
                                "messages": [{"role": "user", "content": PROMPT}], **fields}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return self.post("/v1/chat/completions", body, key, headers)

    def stream(self, key: str | None = None, model: str = "ok", **fields: Any
               ) -> tuple[int, str]:
        """A streamed chat, read to its end (or its cut): status and the raw events."""
        body = {"model": model, "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": 3, "stream": True, **fields}
        headers = {"authorization": f"Bearer {key}"} if key else {}
        text = ""
        # a cut stream ends in a broken read
        with httpx.stream("POST", self.url + "/v1/chat/completions", json=body,
                          headers=headers, timeout=10) as reply, \
                contextlib.suppress(httpx.HTTPError):
            for piece in reply.iter_text():
                text += piece
        return reply.status_code, text

    def new_key(self, team: str = "t", **options: Any) -> tuple[str, str]:
        """A key (its id and secret), known to the gateway at once."""
        record, secret = self.keys.create_key(team, **options)
        self.refresh()
        return record.id, secret

    def refresh(self) -> None:
        keyring = self.gateway.state.keyring
        assert keyring is not None
        keyring.refresh()

    def settled(self) -> None:
        """Wait for the settles off the request path, then write the ledger."""
        deadline = time.monotonic() + 5
        while self.gateway.state.tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        ledger = self.gateway.state.ledger
        assert ledger is not None and ledger.flush()

    def spend(self) -> list[dict[str, Any]]:
        """The ledger's spend rows, oldest first."""
        self.settled()
        rows = self.records.rows("SELECT id, key_id, model, prompt_tokens, completion_tokens, "
                                 "cached_tokens, usd, endpoint FROM spend ORDER BY id")
        return [{"key": r[1], "model": r[2], "prompt": r[3], "completion": r[4],
                 "cached": r[5], "usd": float(r[6]), "endpoint": r[7]} for r in rows]

    def charged(self) -> dict[str, float]:
        """The ledger's USD by the budget counter it was charged to."""
        self.settled()
        return {counter: float(usd) for counter, usd in self.records.rows(
            "SELECT counter, SUM(usd) FROM spend_counters GROUP BY counter")}

    def spent_on(self, counter: str, limit: float, period: str = "day") -> float:
        """What a budget counter holds (spent and reserved), in USD."""
        self.settled()
        counters = self.gateway.limiter.counters
        share = asyncio.run(counters.share([(counter, limit, period)], self.clock()))
        return share[counter] * limit

    def lines(self) -> list[dict[str, Any]]:
        """The access log's request lines so far."""
        self.gateway.log.flush()
        found = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [line for line in found if "request_id" in line]

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics").text

    def reload(self, policy: str) -> dict[str, Any]:
        """Edit the policy and reload it through the admin API."""
        self.policy.write_text(self.head + policy)
        reply = httpx.post(self.url + "/admin/reload", timeout=60,
                           headers={"authorization": f"Bearer {ADMIN}"})
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


@pytest.fixture
def run(tmp_path: Path, upstreams: Upstreams
        ) -> Callable[..., contextlib.AbstractContextManager[Running]]:
    """`run(policy)`: a gateway serving HEAD + policy, as a context manager."""
    @contextlib.contextmanager
    def start(policy: str, auth: str = "keys") -> Iterator[Running]:
        head = HEAD.format(openai=upstreams.openai, anthropic=upstreams.anthropic,
                           key=API_KEY) + f"auth {{ mode = {auth} }}\n"
        path = tmp_path / "policy.gw"
        path.write_text(head + policy)
        clock = Clock(time.time())
        records = open_records(f"sqlite:///{tmp_path / 'gw.db'}")
        ledger = LedgerWriter(records)
        limiter = Limiter(MemoryCounters(), clock, seed=ledger.ledger.period_spend_by_counter)
        state = State(limiter, records, KeyRing(records), ledger)
        log_path = tmp_path / "access.log"
        sink = log_path.open("wb")
        gateway = Gateway(str(path), {}, log=AccessLog(sink), state=state)
        app = create_app(gateway, admin_key=ADMIN, compiled=load(str(path), {}))
        try:
            with serving(app) as url:
                yield Running(url, gateway, clock, records, Keys(records, clock), path,
                              log_path, head)
        finally:
            gateway.log.close()
            sink.close()
    return start


def error_of(reply: httpx.Response) -> dict[str, Any]:
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}
    return dict(body["error"])


# ---------------------------------------------------------------- subjects


def test_a_budget_per_feature_keeps_each_features_spend_and_refuses_only_the_spent_one(
        run: Any) -> None:
    policy = ROUTE + f"budget per meta[\"feature\"] {{ limit = ${2.5 * C:.6f} per day }}\n"
    with run(policy) as gw:
        _, key = gw.new_key()
        search = {"metadata": {"feature": "search"}}
        assert [gw.chat(key, **search).status_code for _ in range(2)] == [200, 200]
        # by header, the same feature: its third answer would pass the limit
        refused = gw.chat(key, headers={"x-gw-meta-feature": "search"})
        assert refused.status_code == 402
        assert error_of(refused)["code"] == "budget_exceeded"
        assert gw.chat(key, headers={"x-gw-meta-feature": "chat"}).status_code == 200
        assert gw.chat(key, metadata={"feature": "chat"}).status_code == 200
        assert gw.chat(key, **search).status_code == 402
        assert len(gw.spend()) == 4
        by_counter = gw.charged()
        assert sorted(by_counter.values()) == pytest.approx([2 * C, 2 * C])
        search_counter = next(c for c in by_counter if "feature=search/" in c)
        assert gw.spent_on(search_counter, 2.5 * C) == pytest.approx(2 * C)


def test_past_max_values_a_new_value_is_refused_and_the_values_seen_go_on(run: Any) -> None:
    policy = ROUTE + """
quota per header["x-app"] {
  requests   = 100 per minute
  max_values = 2
}
"""
    with run(policy) as gw:
        _, key = gw.new_key()
        for app in ("a", "b"):
            assert gw.chat(key, headers={"x-app": app}).status_code == 200
        third = gw.chat(key, headers={"x-app": "c"})
        assert third.status_code == 429
        assert error_of(third)["code"] == "subject_limit_reached"
        assert int(third.headers["retry-after"]) >= 1
        assert [gw.chat(key, headers={"x-app": app}).status_code for app in "ab"] == [200, 200]
        assert gw.chat(key).status_code == 200  # no value: not counted by the block
        gw.clock.advance(61)  # the places lapse with their quota's window
        assert gw.chat(key, headers={"x-app": "c"}).status_code == 200


# ---------------------------------------------------------------- quotas


def test_a_requests_quota_refuses_with_the_real_wait_and_says_whats_left(run: Any) -> None:
    policy = ROUTE + """
quota per key {
  requests = 2 per minute
  tokens   = 1000 per minute
}
"""
    with run(policy) as gw:
        _, key = gw.new_key()
        first = gw.chat(key)
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-reset-requests"] == "30s"
        assert first.headers["x-ratelimit-limit-tokens"] == "1000"
        assert first.headers["x-ratelimit-remaining-tokens"] == str(1000 - 9 - 3)
        assert first.headers["x-ratelimit-reset-tokens"].endswith("s")
        assert gw.chat(key).headers["x-ratelimit-remaining-requests"] == "0"
        gw.clock.advance(10.5)
        refused = gw.chat(key)
        assert refused.status_code == 429
        assert error_of(refused)["code"] == "rate_limit_exceeded"
        # one request every 30 s once the burst is spent: 19.5 s to go, rounded up
        assert refused.headers["retry-after"] == str(math.ceil(30 - 10.5))
        gw.clock.advance(19.4)
        assert gw.chat(key).status_code == 429
        assert 'gw_refusals_total{mode="enforce",reason="rate_limit_exceeded"} 2.0' in \
            gw.metrics()
        gw.clock.advance(0.2)
        assert gw.chat(key).status_code == 200


def test_a_shadow_quota_refuses_nothing_and_reports_what_it_would_have(run: Any) -> None:
    policy = ROUTE + """
quota global {
  requests = 1 per minute
  mode     = shadow
}
"""
    with run(policy, auth="none") as gw:
        assert [gw.chat().status_code for _ in range(3)] == [200, 200, 200]
        lines = gw.lines()
        assert "would_refuse" not in lines[0]
        assert all(len(line.get("would_refuse", [])) == 1 for line in lines[1:])
        assert 'gw_refusals_total{mode="shadow",reason="rate_limit_exceeded"} 2.0' in gw.metrics()


def test_over_downgrade_sends_an_over_budget_request_to_the_cheap_model(run: Any) -> None:
    policy = ROUTE + f"""
budget per key {{
  limit = ${1.5 * C:.6f} per day
  over  = downgrade(cheap)
}}
"""
    with run(policy) as gw:
        _, key = gw.new_key()
        answered = [gw.chat(key) for _ in range(4)]
        assert [r.status_code for r in answered] == [200] * 4
        assert [r.headers["x-gw-model"] for r in answered] == ["ok", "cheap", "cheap", "cheap"]


def test_over_allow_never_refuses(run: Any) -> None:
    policy = ROUTE + f"""
budget per key {{
  limit = ${C / 10:.6f} per day
  over  = allow
}}
"""
    with run(policy) as gw:
        _, key = gw.new_key()
        answered = [gw.chat(key) for _ in range(4)]
        assert [(r.status_code, r.headers["x-gw-model"]) for r in answered] == [(200, "ok")] * 4
        [counter] = gw.charged()
        assert gw.spent_on(counter, C / 10) == pytest.approx(4 * C)
        # each would have been refused: the log and the metrics say so
        assert [len(line.get("would_refuse", [])) for line in gw.lines()] == [1] * 4
        assert 'gw_refusals_total{mode="shadow",reason="budget_exceeded"} 4.0' in gw.metrics()


# ---------------------------------------------------------------- streams


def test_a_streams_spend_is_settled_from_its_usage(run: Any) -> None:
    with run(ROUTE + "budget per key { limit = $1 per day }\n") as gw:
        key_id, key = gw.new_key()
        status, events = gw.stream(key)  # no usage asked for: the gateway asks for itself
        assert status == 200 and events.endswith("data: [DONE]\n\n") and '"usage"' not in events
        [row] = gw.spend()
        assert (row["key"], row["prompt"], row["completion"]) == (key_id, 9, 3)
        assert row["usd"] == pytest.approx(C)
        [line] = gw.lines()
        assert line["cost"] == pytest.approx(C) and line["tokens"]["total_tokens"] == 12
        [counter] = gw.charged()
        assert gw.spent_on(counter, 1.0) == pytest.approx(C)


def test_a_stream_cut_after_its_first_chunk_is_charged_for_what_it_delivered(run: Any) -> None:
    with run(ROUTE + "budget per key { limit = $1 per day }\n") as gw:
        _, key = gw.new_key()
        status, events = gw.stream(key, model="cut")
        assert status == 200 and '"hello"' in events and "stream_interrupted" in events
        # "hello" delivered: 5 characters, 2 tokens at four a token; the prompt read whole
        expected = 9 * IN + 2 * OUT
        [line] = gw.lines()
        assert line["tokens"] == {"prompt_tokens": 9, "completion_tokens": 2,
                                  "total_tokens": 11, "estimated": True}
        assert line["cost"] == pytest.approx(expected) and line["status"] == 502
        [row] = gw.spend()
        assert row["usd"] > 0 and row["usd"] == pytest.approx(expected)
        [counter] = gw.charged()
        assert gw.spent_on(counter, 1.0) == pytest.approx(expected)


# ---------------------------------------------------------------- reloads


def test_a_reload_keeps_counting_and_a_new_subject_starts_afresh(run: Any) -> None:
    limits = """
quota per {subject} {{ requests = {requests} per minute }}
budget per {subject} {{ limit = ${limit:.6f} per day }}
"""
    with run(ROUTE + limits.format(subject="key", requests=4, limit=10 * C)) as gw:
        _, key = gw.new_key()
        assert [gw.chat(key).status_code for _ in range(2)] == [200, 200]
        [counter] = gw.charged()
        assert gw.reload(ROUTE + limits.format(subject="key", requests=3, limit=3 * C)
                         )["outcome"] == "loaded"
        # 3 a minute, two of them already made
        third = gw.chat(key)
        assert third.status_code == 200 and third.headers["x-ratelimit-remaining-requests"] == "0"
        assert gw.chat(key).status_code == 429
        # the budget kept its spend under its new limit: 3C spent of 3C
        assert gw.spent_on(counter, 3 * C) == pytest.approx(3 * C)
        gw.clock.advance(61)
        refused = gw.chat(key)
        assert refused.status_code == 402 and error_of(refused)["code"] == "budget_exceeded"
        # per team instead: other counters, from nothing
        gw.reload(ROUTE + limits.format(subject="team", requests=3, limit=3 * C))
        fresh = gw.chat(key)
        assert fresh.status_code == 200 and fresh.headers["x-ratelimit-remaining-requests"] == "2"


# ---------------------------------------------------------------- endpoints


def test_embeddings_count_against_quotas_and_budgets(run: Any) -> None:
    policy = ROUTE + """
quota per key { requests = 2 per minute }
budget per key { limit = $1 per day }
"""
    with run(policy) as gw:
        key_id, key = gw.new_key()
        embedded = [gw.post("/v1/embeddings", {"model": "emb", "input": "some text"}, key)
                    for _ in range(2)]
        assert [r.status_code for r in embedded] == [200, 200]
        assert [r.headers["x-ratelimit-remaining-requests"] for r in embedded] == ["1", "0"]
        assert embedded[0].headers["x-gw-cost"] == f"{4 * IN:.8f}"  # the fake's 4 tokens
        refused = gw.post("/v1/embeddings", {"model": "emb", "input": "more"}, key)
        assert refused.status_code == 429 and "retry-after" in refused.headers
        assert gw.chat(key).status_code == 429  # one quota for every endpoint
        rows = gw.spend()
        assert [(r["endpoint"], r["key"]) for r in rows] == [("embeddings", key_id)] * 2
        [counter] = gw.charged()
        assert gw.spent_on(counter, 1.0) == pytest.approx(8 * IN)
