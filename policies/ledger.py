"""The spend ledger and the request log: what each request cost and what it was,
written off the request path, read back for reports, restarts and `gwc simulate`.

The request path only hands a row to a LedgerWriter, which queues it in memory;
the writer's own thread writes the queue in batches, one transaction each
(every PERIOD seconds, or at once when BATCH rows are waiting). While the
database is unreachable a batch stays at the head of the queue and is tried
again next round, the failure logged on the `gwc` logger. Rows are lost only
past MAX_QUEUE waiting (a database down for many minutes under load), oldest
first, or when the database refuses a row itself; each is counted in
`dropped` and logged.

A spend row carries the ids of the budget counters it was charged to, kept in
`spend_counters`, so `period_spend_by_counter` rebuilds any budget's spend in
a period after a restart, whatever its subject (a team, `meta["app"]`, a
`when` condition), without the ledger knowing how the policy names them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from policies.records import Records, RecordsError, Tx

PERIOD = 0.5  # seconds between the writer's rounds
BATCH = 500  # rows a round writes in one transaction; this many waiting starts a round early
MAX_QUEUE = 100_000  # rows waiting past which the oldest are dropped, and counted
PAGE = 1000  # request-log rows an export reads at a time

log = logging.getLogger("gwc")

By = Literal["team", "user", "key", "model"]
BY_COLUMN: dict[str, str] = {"team": "team", "user": "user_id", "key": "key_id", "model": "model"}


class SpendRow(NamedTuple):
    """What a settled request cost, and to whom. Tokens: prompt_tokens includes the
    cached ones, as the providers count them. A named tuple, as RequestRow: the request
    path makes one each per request, at half a frozen dataclass's cost, and its fields
    are the insert's parameters in the columns' order."""

    ts: float
    request_id: str | None = None
    key_id: str | None = None
    team: str | None = None
    user: str | None = None
    model: str | None = None
    provider: str | None = None
    endpoint: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    usd: float = 0.0
    status: int | None = None
    counters: tuple[str, ...] = ()  # the budget counters charged, for period_spend_by_counter


class RequestRow(NamedTuple):
    """One line of the request log, in the traffic format of interface.md; `key` is the
    key's id, and nothing here is ever a prompt."""

    ts: float
    team: str | None = None
    user: str | None = None
    key: str | None = None
    endpoint: str | None = None
    model: str | None = None  # as the request named it
    stream: bool | None = None
    tools: bool | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    meta: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    answered_by: str | None = None
    usd: float | None = None
    cache: str | None = None
    status: int | None = None


class Ledger:
    """The ledger's queries, on one database."""

    def __init__(self, records: Records) -> None:
        self.records = records

    def write(self, rows: Sequence[SpendRow | RequestRow]) -> None:
        """Write rows in one transaction: all of them or, on a RecordsError, none."""
        spend = [row for row in rows if isinstance(row, SpendRow)]
        requests = [row for row in rows if isinstance(row, RequestRow)]
        with self.records.transaction() as tx:
            _write_spend(tx, spend)
            _write_requests(tx, requests)

    def spend_report(self, by: By, since: float | None = None) -> list[dict[str, Any]]:
        """Spend by subject since a time, most first: `{"subject","usd","requests","tokens"}`,
        tokens being prompt plus completion. A subject is None for requests without one
        (no user, say). USD is rounded to 1e-9, below any price, so that the two
        databases' summing orders cannot show."""
        column = BY_COLUMN[by]
        rows = self.records.rows(
            f"SELECT {column}, SUM(usd), COUNT(*), SUM(prompt_tokens + completion_tokens) "
            f"FROM spend WHERE ts >= ? GROUP BY {column}",
            (since if since is not None else float("-inf"),))
        report = [{"subject": subject, "usd": round(float(usd), 9), "requests": int(count),
                   "tokens": int(tokens)} for subject, usd, count, tokens in rows]
        report.sort(key=lambda r: (-r["usd"], r["subject"] is None, r["subject"] or ""))
        return report

    def period_spend_by_counter(self, counter: str, start: float, end: float) -> float:
        """The settled USD charged to a budget counter in [start, end): what the gateway
        puts back in the counter when it starts."""
        rows = self.records.rows(
            "SELECT COALESCE(SUM(usd), 0) FROM spend_counters "
            "WHERE counter = ? AND ts >= ? AND ts < ?", (counter, start, end))
        return float(rows[0][0])

    def export_requests(self, since: float | None = None,
                        until: float | None = None) -> Iterator[dict[str, Any]]:
        """The request log in [since, until), oldest first, in the traffic format: `ts`
        RFC 3339 UTC, absent fields left out. Read a page at a time, so an export of
        millions of rows holds a thousand in memory and no lock between pages."""
        ts, last_id = since if since is not None else float("-inf"), -1  # the page's start
        end = until if until is not None else float("inf")
        while True:
            page = self.records.rows(
                f"SELECT id, {REQUEST_COLUMNS} FROM requests WHERE (ts > ? OR (ts = ? AND "
                "id > ?)) AND ts < ? ORDER BY ts, id LIMIT ?", (ts, ts, last_id, end, PAGE))
            for row in page:
                yield _traffic(row[1:])
            if len(page) < PAGE:
                return
            last_id, ts = page[-1][0], page[-1][1]

    def claim_alert(self, subject: str, period_key: str, threshold: float) -> bool:
        """True for the first caller ever to claim this alert, in any process, before or
        after any restart; False for every other, so each alert is sent once."""
        with self.records.transaction() as tx:
            return tx.run(
                "INSERT INTO alerts (subject, period_key, threshold, claimed_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (subject, period_key, threshold, time.time())) == 1


class LedgerWriter:
    """Queues ledger rows and writes them from a thread of its own."""

    def __init__(self, records: Records) -> None:
        self.ledger = Ledger(records)
        self.queue: deque[SpendRow | RequestRow] = deque(maxlen=MAX_QUEUE)
        self.dropped = 0
        self._reported = 0  # of the dropped, those already logged
        self._failing = False  # the last round found the database unreachable
        self._batch: list[SpendRow | RequestRow] = []  # taken from the queue, not yet written
        self._round = threading.Lock()  # one round at a time: the thread's or a flush
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gwc-ledger", daemon=True)
        self._thread.start()

    def add(self, row: SpendRow | RequestRow) -> None:
        """Queue a row: an append, for the request path."""
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1  # the deque drops its oldest to make room
        self.queue.append(row)
        if len(self.queue) >= BATCH:
            self._wake.set()

    def flush(self) -> bool:
        """Write everything queued so far, now, in the calling thread (at SIGTERM, say);
        whether it all reached the database. A failure is logged and the rows stay
        queued."""
        rounds = (len(self.queue) + len(self._batch)) // BATCH + 1  # rows added meanwhile wait
        for _ in range(rounds):
            if not self._write_round():
                return False
        return not self._batch

    def close(self) -> bool:
        """Stop the thread and flush; whether every row reached the database."""
        self._stopping.set()
        self._wake.set()
        self._thread.join()
        written = self.flush()
        if not written:
            log.error("gwc: %d ledger rows were not written: the database is unreachable",
                      len(self.queue) + len(self._batch))
        return written

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(PERIOD)
            self._wake.clear()
            while self._write_round() and len(self.queue) >= BATCH:
                pass
            if self._failing:  # a full queue must not make a busy loop of a database down
                self._stopping.wait(PERIOD)

    def _write_round(self) -> bool:
        """Write one batch; False if the database is unreachable (the batch stays for the
        next round). A batch the database refuses while reachable holds a row it will
        never take (a NUL in PostgreSQL text, an integer past 64 bits): its rows are then
        written one by one and the bad ones dropped, logged, so one row cannot stop the
        ledger."""
        with self._round:
            self._report_drops()
            while self.queue and len(self._batch) < BATCH:
                self._batch.append(self.queue.popleft())
            if not self._batch:
                return True
            try:
                self.ledger.write(self._batch)
            except Exception as exc:
                if not self._reachable(exc):
                    return False
                return self._write_one_by_one()
            self._batch = []
            if self._failing:
                log.warning("gwc: the ledger's database answers again; its rows are written")
                self._failing = False
            return True

    def _write_one_by_one(self) -> bool:
        while self._batch:
            try:
                self.ledger.write(self._batch[:1])
            except Exception as exc:
                if not self._reachable(exc):
                    return False
                log.error("gwc: dropped a ledger row the database refused (ts %s): %s",
                          self._batch[0].ts, exc)
                self.dropped += 1
                self._reported += 1
            self._batch.pop(0)
        return True

    def _reachable(self, exc: Exception) -> bool:
        """Whether the database answers; if not, the first failure of a run of them is
        logged (not one line every round of an outage)."""
        try:
            self.ledger.records.rows("SELECT 1")
        except RecordsError:
            if not self._failing:
                log.warning("gwc: could not write %d ledger rows, will retry: %s",
                            len(self._batch), exc)
            self._failing = True
            return False
        return True

    def _report_drops(self) -> None:
        if self.dropped > self._reported:
            log.error("gwc: %d ledger rows dropped: more than %d were waiting for the "
                      "database", self.dropped - self._reported, self.queue.maxlen)
            self._reported = self.dropped


REQUEST_COLUMNS = ("ts, team, user_id, key_id, endpoint, model, stream, tools, tokens_in, "
                   "tokens_out, max_tokens, temperature, meta, headers, answered_by, usd, "
                   "cache, status")


def _write_spend(tx: Tx, rows: list[SpendRow]) -> None:
    tx.many("INSERT INTO spend (ts, request_id, key_id, team, user_id, model, provider, "
            "endpoint, prompt_tokens, completion_tokens, cached_tokens, usd, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [row[:-1] for row in rows])  # all but the counters
    tx.many("INSERT INTO spend_counters (counter, ts, usd) VALUES (?, ?, ?)",
            [(counter, r.ts, r.usd) for r in rows for counter in r.counters])


def _write_requests(tx: Tx, rows: list[RequestRow]) -> None:
    tx.many(f"INSERT INTO requests ({REQUEST_COLUMNS}) VALUES ({', '.join('?' * 18)})",
            [(r.ts, r.team, r.user, r.key, r.endpoint, r.model, _flag(r.stream),
              _flag(r.tools), r.tokens_in, r.tokens_out, r.max_tokens, r.temperature,
              _json(r.meta), _json(r.headers), r.answered_by, r.usd, r.cache, r.status)
             for r in rows])


def _traffic(row: tuple[Any, ...]) -> dict[str, Any]:
    line: dict[str, Any] = {}
    for field, value in zip(RequestRow._fields, row, strict=True):
        if value is None:
            continue
        if field == "ts":
            value = rfc3339(value)
        elif field in ("stream", "tools"):
            value = bool(value)
        elif field in ("meta", "headers"):
            value = json.loads(value)
        line[field] = value
    return line


def rfc3339(ts: float) -> str:
    """`2024-05-01T12:00:00.250Z`: UTC, to the millisecond."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(dict(value), separators=(",", ":"), default=str)
