"""`gwc simulate` decides as the live gateway does: one request sequence, both ways.

A gateway in front of the OpenAI fake serves a sequence meant to meet every
refusal (a quota per user, a budget per team with an alert, a `deny`, a
model that does not exist); `gwc log export` writes its request log, which
must read back with compiler/traffic.read (the format's round trip), and
`gwc simulate --trace` replays it through the same policy. Every request's
live status must be simulate's outcome, the spend the same, and the alert
the one the gateway queued.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from compiler.compiled import load
from compiler.traffic import read
from policies.keys import KeyRing, Keys
from policies.ledger import LedgerWriter
from policies.memory_counters import MemoryCounters
from policies.records import open_records
from runtime.access_log import AccessLog
from runtime.app import create_app
from runtime.gateway import Gateway
from runtime.limiting import Limiter
from runtime.records_commands import log_export
from runtime.simulate_command import run as simulate
from runtime.state import State
from tests.fakes import API_KEY, Script, openai_fake, serving

PROMPT = "x" * 36  # estimated at 9 tokens, what the fake counts
C = 9 * 100e-6 + 3 * 200e-6  # what one answer of the fake costs at model ok's prices
POLICY = """
provider oa {{ type = openai; base_url = "{openai}/v1"; api_key = "{key}" }}
model ok {{ provider = oa; name = "ok"; input = $100/1M; output = $200/1M }}
route {{
  when model == "forbidden" -> deny "not here"
  otherwise -> requested
}}
quota per user {{ requests = 4 per hour }}
budget per team {{ limit = ${budget:.6f} per day; alert = [50%] }}
auth {{ mode = keys }}
"""
STATUS = {200: "served", 429: "quota", 402: "budget", 403: "deny", 404: "no_route"}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Gateway, Path, dict[str, str], str]]:
    with serving(openai_fake.app(Script())) as upstream:
        path = tmp_path / "policy.gw"
        path.write_text(POLICY.format(openai=upstream, key=API_KEY, budget=5.5 * C))
        db = f"sqlite:///{tmp_path / 'gw.db'}"
        records = open_records(db)
        keys = Keys(records)
        secrets = {f"{team}/{user}": keys.create_key(team, user=user)[1]
                   for team, user in (("t1", "ann"), ("t1", "bob"), ("t2", "cy"))}
        ledger = LedgerWriter(records)
        state = State(Limiter(MemoryCounters()), records, KeyRing(records), ledger)
        with (tmp_path / "access.log").open("wb") as sink:
            gateway = Gateway(str(path), {}, log=AccessLog(sink), state=state)
            app = create_app(gateway, compiled=load(str(path), {}))
            with serving(app) as url:
                yield gateway, path, secrets, url
            gateway.log.close()


def test_simulate_admits_and_refuses_every_request_as_the_live_gateway_did(
        live: tuple[Gateway, Path, dict[str, str], str], tmp_path: Path) -> None:
    gateway, policy, secrets, url = live
    # ann and bob share t1's budget of 5.5 answers; each has 4 requests an hour; cy is alone
    sequence = ["t1/ann"] * 5 + ["t1/bob"] * 3 + ["t2/cy"] * 2 + ["t1/bob"] * 2 + \
        ["t2/cy:forbidden", "t2/cy:nope", "t2/cy", "t2/cy", "t1/ann"]
    statuses = []
    for step in sequence:
        who, _, model = step.partition(":")
        reply = httpx.post(url + "/v1/chat/completions", timeout=10, json={
            "model": model or "ok", "max_tokens": 3,
            "messages": [{"role": "user", "content": PROMPT}]},
            headers={"authorization": f"Bearer {secrets[who]}"})
        statuses.append(reply.status_code)
    assert set(statuses) == set(STATUS), statuses  # every outcome is met at least once
    deadline = time.monotonic() + 5  # settles, and alerts, are sent off the request's path
    while (gateway.state.tasks or len(gateway.alerts.sent) < 2) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert gateway.state.ledger is not None and gateway.state.ledger.flush()
    live_alerts = {(a.subject, a.threshold) for a in gateway.alerts.sent}

    log = tmp_path / "traffic.jsonl"
    assert log_export(argparse.Namespace(db=f"sqlite:///{tmp_path / 'gw.db'}", since=None,
                                         until=None, output=str(log))) == 0
    logged = list(read(log.read_text().splitlines()))  # the format's round trip
    assert [entry.status for entry in logged] == statuses
    assert [entry.request.team for entry in logged] == [s.split("/")[0] for s in sequence]

    trace, report = tmp_path / "trace.jsonl", tmp_path / "report.json"
    assert simulate(argparse.Namespace(
        file=str(policy), traffic=str(log), against=None, format="json",
        output=str(report), trace=str(trace))) == 0
    outcomes = [json.loads(line)["outcome"] for line in trace.read_text().splitlines()]
    assert outcomes == [STATUS[status] for status in statuses]
    result = json.loads(report.read_text())
    assert result["served"] == statuses.count(200)
    assert result["usd"] == pytest.approx(sum(e.usd or 0.0 for e in logged))
    assert result["usd"] == pytest.approx(statuses.count(200) * C)
    assert {(a["subject"], a["threshold"]) for a in result["alerts"]} == live_alerts == {
        ("team=t1", 0.5), ("team=t2", 0.5)}
    assert [e["subject"] for e in result["budgets_exhausted"]] == ["team=t1"]
