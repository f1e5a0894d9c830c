"""The spend ledger and request log: batched off the request path, nothing lost,
reports that add up, alerts claimed once."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from policies import ledger as ledger_module
from policies.ledger import Ledger, LedgerWriter, RequestRow, SpendRow, rfc3339
from policies.records import Records, open_records
from tests.conftest import ROOT

DAY = 86_400.0
T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z


def spend(ts: float, team: str, usd: float, **fields: object) -> SpendRow:
    tokens = {"prompt_tokens": 10, "completion_tokens": 5}
    return SpendRow(ts=ts, team=team, usd=usd, **{**tokens, **fields})  # type: ignore[arg-type]


def test_rows_queued_are_written_by_a_flush_and_read_by_another_replica(
        records: Records, db_url: str) -> None:
    writer = LedgerWriter(records)
    for i in range(1234):  # more than two batches
        writer.add(spend(T0 + i, "research" if i % 2 else "ops", 0.001, model="a"))
    assert writer.flush()
    assert not writer.queue
    other = open_records(db_url)
    report = Ledger(other).spend_report("team")
    other.close()
    assert report == [{"subject": "ops", "usd": 0.617, "requests": 617, "tokens": 9255},
                      {"subject": "research", "usd": 0.617, "requests": 617, "tokens": 9255}]
    assert writer.close()


def test_the_writer_thread_writes_without_being_asked(records: Records) -> None:
    writer = LedgerWriter(records)
    writer.add(spend(T0, "research", 1.0))
    ledger = Ledger(records)
    for _ in range(100):
        if ledger.spend_report("team"):
            break
        time.sleep(0.05)
    assert ledger.spend_report("team")[0]["usd"] == 1.0
    assert writer.close()


def test_reports_group_sort_and_start_at_since(records: Records) -> None:
    Ledger(records).write([
        spend(T0, "research", 2.5, user="alice", key_id="key_a", model="a"),
        spend(T0 + 1, "research", 0.5, user="bob", key_id="key_b", model="b"),
        spend(T0 + 2, "ops", 1.0, key_id="key_c", model="a"),
        spend(T0 - DAY, "ops", 100.0, user="carol", key_id="key_c", model="b"),
    ])
    ledger = Ledger(records)
    assert ledger.spend_report("team", since=T0) == [
        {"subject": "research", "usd": 3.0, "requests": 2, "tokens": 30},
        {"subject": "ops", "usd": 1.0, "requests": 1, "tokens": 15}]
    assert [(r["subject"], r["usd"]) for r in ledger.spend_report("user", since=T0)] == [
        ("alice", 2.5), (None, 1.0), ("bob", 0.5)]
    assert [r["subject"] for r in ledger.spend_report("key")] == ["key_c", "key_a", "key_b"]
    assert [(r["subject"], r["usd"]) for r in ledger.spend_report("model")] == [
        ("b", 100.5), ("a", 3.5)]
    assert ledger.spend_report("team", since=T0 + 10) == []


def test_period_spend_rebuilds_a_budget_counter(records: Records) -> None:
    ledger = Ledger(records)
    ledger.write([
        spend(T0, "research", 1.25, counters=("budget:team:research", "budget:global")),
        spend(T0 + 10, "research", 0.75, counters=("budget:team:research",)),
        spend(T0 + DAY, "research", 5.0, counters=("budget:team:research",)),
        spend(T0, "ops", 2.0, counters=("budget:global",)),
    ])
    assert ledger.period_spend_by_counter("budget:team:research", T0, T0 + DAY) == 2.0
    assert ledger.period_spend_by_counter("budget:team:research", T0, T0 + DAY + 1) == 7.0
    assert ledger.period_spend_by_counter("budget:global", T0, T0 + DAY) == 3.25
    assert ledger.period_spend_by_counter("budget:team:nobody", T0, T0 + DAY) == 0.0


def test_the_request_log_exports_in_the_traffic_format(records: Records) -> None:
    Ledger(records).write([
        RequestRow(ts=T0 + 0.25, team="research", user="alice", key="key_a",
                   endpoint="/v1/chat/completions", model="gpt-4o", stream=True, tools=False,
                   tokens_in=12, tokens_out=3, max_tokens=100, temperature=0.2,
                   meta={"app": "wiki"}, headers={"x-tier": "gold"}, answered_by="a",
                   usd=0.002, cache="miss", status=200),
        RequestRow(ts=T0 + 5, model="b", status=429),
        RequestRow(ts=T0 - 5, model="early"),
    ])
    lines = list(Ledger(records).export_requests(since=T0))
    assert lines == [
        {"ts": "2024-05-01T12:00:00.250Z", "team": "research", "user": "alice", "key": "key_a",
         "endpoint": "/v1/chat/completions", "model": "gpt-4o", "stream": True, "tools": False,
         "tokens_in": 12, "tokens_out": 3, "max_tokens": 100, "temperature": 0.2,
         "meta": {"app": "wiki"}, "headers": {"x-tier": "gold"}, "answered_by": "a",
         "usd": 0.002, "cache": "miss", "status": 200},
        {"ts": "2024-05-01T12:00:05.000Z", "model": "b", "status": 429}]
    assert [line["model"] for line in Ledger(records).export_requests(until=T0 + 5)] == [
        "early", "gpt-4o"]


def test_an_export_reads_page_by_page_in_order(
        records: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "PAGE", 7)
    Ledger(records).write([RequestRow(ts=T0 + i // 3, tokens_in=i) for i in range(50)])
    assert [line["tokens_in"] for line in Ledger(records).export_requests()] == list(range(50))


def test_alerts_are_claimed_once_across_replicas(records: Records, db_url: str) -> None:
    other = open_records(db_url)
    first, second = Ledger(records), Ledger(other)
    assert first.claim_alert("team:research", "2024-05", 0.8)
    assert not second.claim_alert("team:research", "2024-05", 0.8)
    assert not first.claim_alert("team:research", "2024-05", 0.8)
    assert second.claim_alert("team:research", "2024-05", 0.5)
    assert second.claim_alert("team:research", "2024-06", 0.8)
    other.close()
    restarted = open_records(db_url)
    assert not Ledger(restarted).claim_alert("team:research", "2024-05", 0.8)
    restarted.close()


def test_racing_claims_give_one_winner(records: Records, db_url: str) -> None:
    replicas = [open_records(db_url) for _ in range(4)]
    wins: list[bool] = []
    start = threading.Barrier(len(replicas))

    def claim(replica: Records) -> None:
        start.wait()
        wins.append(Ledger(replica).claim_alert("global", "2024-05-01", 1.0))

    threads = [threading.Thread(target=claim, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False, False, False, True]
    for replica in replicas:
        replica.close()


def test_rows_wait_while_the_database_is_down_and_are_written_after(
        records: Records, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    writer = LedgerWriter(records)
    connect = records._connect

    def refused() -> object:
        raise sqlite3.OperationalError("connection refused")

    records.close()  # its pooled connections go: every statement must connect again
    monkeypatch.setattr(records, "_closed", False)
    monkeypatch.setattr(records, "_connect", refused)
    for i in range(10):
        writer.add(spend(T0 + i, "research", 0.1))
    with caplog.at_level(logging.WARNING, logger="gwc"):
        assert not writer.flush()
    assert "could not write 10 ledger rows, will retry: connection refused" in caplog.text
    assert writer.dropped == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gwc"):
        assert not writer.flush()
    assert "could not write" not in caplog.text  # once an outage, not once a round
    monkeypatch.setattr(records, "_connect", connect)
    with caplog.at_level(logging.WARNING, logger="gwc"):
        assert writer.flush()
    assert "answers again" in caplog.text
    assert Ledger(records).spend_report("team")[0]["requests"] == 10
    assert writer.close()


def test_a_row_the_database_refuses_is_dropped_alone(
        records: Records, caplog: pytest.LogCaptureFixture) -> None:
    writer = LedgerWriter(records)
    writer.add(spend(T0, "research", 1.0))
    writer.add(spend(T0 + 1, "research", 1.0, prompt_tokens=2**70))  # past any BIGINT
    writer.add(spend(T0 + 2, "research", 1.0))
    with caplog.at_level(logging.ERROR, logger="gwc"):
        assert writer.flush()
    assert "dropped a ledger row the database refused" in caplog.text
    assert writer.dropped == 1
    assert Ledger(records).spend_report("team")[0]["requests"] == 2
    assert writer.close()


def test_past_the_bound_the_oldest_rows_are_dropped_and_counted(
        records: Records, caplog: pytest.LogCaptureFixture) -> None:
    writer = LedgerWriter(records)
    writer.close()  # no thread racing the queue; flush still writes
    writer.queue = ledger_module.deque(maxlen=5)
    for i in range(8):
        writer.add(spend(T0 + i, "research", 1.0, request_id=f"r{i}"))
    assert writer.dropped == 3
    with caplog.at_level(logging.ERROR, logger="gwc"):
        assert writer.flush()
    assert "3 ledger rows dropped" in caplog.text
    rows = records.rows("SELECT request_id FROM spend ORDER BY ts")
    assert [r for (r,) in rows] == ["r3", "r4", "r5", "r6", "r7"]


def test_rfc3339_is_utc_to_the_millisecond() -> None:
    assert rfc3339(T0) == "2024-05-01T12:00:00.000Z"
    assert rfc3339(T0 + 0.1234) == "2024-05-01T12:00:00.123Z"


WRITER = """
import sys, time
from policies.ledger import LedgerWriter, SpendRow
from policies.records import open_records
records = open_records(sys.argv[1])
writer = LedgerWriter(records)
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
for i in range(300):
    writer.add(SpendRow(ts=1e9 + i, team=sys.argv[3], usd=0.5))
    if i % 50 == 0:
        time.sleep(0.01)
sys.exit(0 if writer.close() else 1)
"""


def test_replicas_writing_at_once_lose_nothing(records: Records, db_url: str) -> None:
    at = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, db_url, at, f"team{n}"], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for n in range(3)]
    assert [(p.communicate(timeout=60)[1], p.returncode) for p in procs] == [("", 0)] * 3
    assert Ledger(records).spend_report("team") == [
        {"subject": f"team{n}", "usd": 150.0, "requests": 300, "tokens": 0}
        for n in range(3)]
