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
from policies import records as records_module
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


def test_text_the_copy_must_escape_comes_back_whole(records: Records) -> None:
    odd = "tab\there, new\nline, back\\slash, \\N, quote' and ✓"
    Ledger(records).write([RequestRow(ts=T0, team=odd, meta={"k": odd}, headers={"h": odd}),
                           spend(T0, odd, 1.0, user=odd)])
    [line] = Ledger(records).export_requests()
    assert (line["team"], line["meta"], line["headers"]) == (odd, {"k": odd}, {"h": odd})
    assert [r["subject"] for r in Ledger(records).spend_report("user")] == [odd]


def served(i: int, ts: float, usd: float | None = 0.25,
           **fields: object) -> tuple[SpendRow, RequestRow]:
    """What the gateway hands the ledger for one answered request."""
    charge = spend(ts, "research", usd or 0.0, request_id=f"r{i}", user="alice", key_id="key_a",
                   model="a", provider="mock", endpoint="chat", status=200,
                   counters=("budget:team:research",))
    line = RequestRow(ts=ts + 1e-5, team="research", user="alice", key="key_a",
                      endpoint="chat", model="requested", stream=False, tokens_in=7,
                      tokens_out=5, answered_by="a", usd=usd, cache="miss", status=200,
                      request_id=f"r{i}")
    return charge, line._replace(**fields)


def test_a_requests_spend_and_log_line_are_one_row(records: Records) -> None:
    Ledger(records).write([*served(1, T0), *served(2, T0 + 1, team="ops"),  # disagrees
                           *served(3, T0 + 2, usd=None),  # logged without usd: 0 charged
                           spend(T0 + 3, "research", 0.5), RequestRow(ts=T0 + 4)])
    assert records.rows("SELECT COUNT(*) FROM requests") == [(6,)]  # 1, 2 twice, 3, alone
    assert Ledger(records).spend_report("team") == [
        {"subject": "research", "usd": 1.0, "requests": 4, "tokens": 60}]
    assert records.rows("SELECT request_id, model, provider, prompt_tokens, usd FROM spend "
                        "ORDER BY ts") == [
        ("r1", "a", "mock", 10, 0.25), ("r2", "a", "mock", 10, 0.25),
        ("r3", "a", "mock", 10, 0.0), (None, None, None, 10, 0.5)]
    lines = list(Ledger(records).export_requests())
    assert [(line.get("team"), line.get("usd")) for line in lines] == [
        ("research", 0.25), ("ops", 0.25), ("research", None), (None, None)]
    assert lines[0] == {"ts": "2024-05-01T12:00:00.000Z", "team": "research", "user": "alice",
                        "key": "key_a", "endpoint": "chat", "model": "requested",
                        "stream": False, "tokens_in": 7, "tokens_out": 5, "answered_by": "a",
                        "usd": 0.25, "cache": "miss", "status": 200}
    assert Ledger(records).period_spend_by_counter("budget:team:research", T0, T0 + 3) == 0.5


def test_a_pair_split_between_batches_still_counts_once(
        records: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "BATCH", 3)
    writer = LedgerWriter(records)
    writer.close()  # no thread racing the queue; flush still writes
    for i in range(3):
        for row in served(i, T0 + i):
            writer.add(row)
    assert writer.flush()
    assert records.rows("SELECT COUNT(*) FROM requests") == [(4,)]  # r1 in two rows
    assert Ledger(records).spend_report("key")[0]["requests"] == 3
    assert len(list(Ledger(records).export_requests())) == 3


def test_counters_summed_per_second_rebuild_every_whole_second_period(
        records: Records) -> None:
    both = ("budget:a", "budget:b")
    rows = [spend(T0 - 2 + i / 4, "research", (i % 3 + 1) / 8,
                  counters=both if i % 2 else both[:1]) for i in range(16)]
    Ledger(records).write(rows)
    # 4 seconds of 2 counter sets, (a) and (a, b): 12 rows where there were 24 charges
    assert records.rows("SELECT COUNT(*) FROM spend_counters") == [(12,)]
    ledger = Ledger(records)
    for counter in both:
        for start in range(-3, 3):
            for end in range(start, 4):
                per_request = sum(r.usd for r in rows if counter in r.counters
                                  and T0 + start <= r.ts < T0 + end)  # eighths: exact
                assert ledger.period_spend_by_counter(counter, T0 + start, T0 + end) == \
                    per_request, (counter, start, end)
    assert ledger.spend_report("team") == [
        {"subject": "research", "usd": sum(r.usd for r in rows), "requests": 16,
         "tokens": 240}]


def test_the_previous_schema_upgrades_and_its_rows_keep_counting(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = records_module._steps
    monkeypatch.setattr(records_module, "_steps", lambda: [s for s in steps() if s[0] <= 2])
    old = open_records(db_url)
    with old.transaction() as tx:  # as the ledger wrote them: a row a table and counter
        for i, (team, user, model, usd) in enumerate([("research", "alice", "a", 1.5),
                                                      ("research", None, "b", 0.25),
                                                      ("ops", "carol", "a", 2.0)]):
            tx.run("INSERT INTO spend (ts, request_id, key_id, team, user_id, model, "
                   "provider, endpoint, prompt_tokens, completion_tokens, cached_tokens, "
                   "usd, status) VALUES (?, ?, ?, ?, ?, ?, 'mock', 'chat', 10, 5, 0, ?, 200)",
                   (T0 + i, f"old{i}", f"key_{team}", team, user, model, usd))
            tx.run("INSERT INTO spend_counters (counter, ts, usd) VALUES (?, ?, ?)",
                   (f"budget:team:{team}", T0 + i, usd))
            tx.run("INSERT INTO requests (ts, team, user_id, key_id, endpoint, model, stream, "
                   "meta, answered_by, usd, status) VALUES (?, ?, ?, ?, 'chat', 'asked', 1, "
                   "'{\"app\":\"wiki\"}', ?, ?, 200)", (T0 + i, team, user, f"key_{team}",
                                                      model, usd))
    old.close()
    monkeypatch.setattr(records_module, "_steps", steps)
    records = open_records(db_url)
    assert [v for (v,) in records.rows("SELECT version FROM schema_version")] == [1, 2, 3, 4]
    ledger = Ledger(records)
    assert ledger.spend_report("team") == [
        {"subject": "ops", "usd": 2.0, "requests": 1, "tokens": 15},
        {"subject": "research", "usd": 1.75, "requests": 2, "tokens": 30}]
    assert [(r["subject"], r["usd"]) for r in ledger.spend_report("model")] == [
        ("a", 3.5), ("b", 0.25)]
    assert [(r["subject"], r["requests"]) for r in ledger.spend_report("user", T0 + 1)] == [
        ("carol", 1), (None, 1)]
    assert [r["subject"] for r in ledger.spend_report("key")] == ["key_ops", "key_research"]
    assert records.rows("SELECT request_id FROM spend ORDER BY id") == [
        ("old0",), ("old1",), ("old2",)]
    assert [(line["ts"][11:19], line["model"], line["meta"], line["stream"])
            for line in ledger.export_requests()] == [
        ("12:00:00", "asked", {"app": "wiki"}, True), ("12:00:01", "asked", {"app": "wiki"}, True),
        ("12:00:02", "asked", {"app": "wiki"}, True)]
    counter = "budget:team:research"
    assert ledger.period_spend_by_counter(counter, T0, T0 + DAY) == 1.75
    ledger.write([*served(1, T0 + 10), *served(2, T0 + 10.5)])  # new rows beside the old
    assert ledger.period_spend_by_counter(counter, T0, T0 + DAY) == 2.25
    assert ledger.period_spend_by_counter(counter, T0 + 1, T0 + 10) == 0.25
    assert ledger.spend_report("team")[0] == {"subject": "research", "usd": 2.25,
                                              "requests": 4, "tokens": 60}
    assert len(list(ledger.export_requests())) == 5
    records.close()


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
