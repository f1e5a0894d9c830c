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

A request is one row of the `requests` table: its log line and, when it was
charged, its spend (which the `spend` view shows). The gateway hands them as a
SpendRow and then a RequestRow of the same request id; the writer puts such a
pair in one row, one insert where there would be two, and any other row in one
of its own.

A spend row carries the ids of the budget counters it was charged to, so that
`period_spend_by_counter` rebuilds any budget's spend in a period after a
restart, whatever its subject (a team, `meta["app"]`, a `when` condition),
without the ledger knowing how the policy names them. `spend_counters` holds
the charges summed per counter and whole second of a batch: a few rows a
second under any load, not one per counter per request, and exact for periods
that start and end on whole seconds, as every budget's does.
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

import orjson

from policies.records import Records, RecordsError

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
    but the counters are a `requests` row's first parameters, in order."""

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
    key's id, and nothing here is ever a prompt. Its request id, not in the format, puts
    it in one row with its request's SpendRow."""

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
    request_id: str | None = None


class Ledger:
    """The ledger's queries, on one database."""

    def __init__(self, records: Records) -> None:
        self.records = records

    def write(self, rows: Sequence[SpendRow | RequestRow]) -> None:
        """Write rows in one transaction: all of them or, on a RecordsError, none."""
        requests, charged = _request_rows(rows)
        with self.records.transaction() as tx:
            tx.insert("requests", LEDGER_COLUMNS, requests)
            tx.insert("spend_counters", ("counter", "ts", "usd"), _per_second(charged))

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
        """The settled USD charged to a budget counter in [start, end), both whole seconds
        (spend_counters sums each second): what the gateway puts back in the counter when
        it starts."""
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
                f"SELECT id, {TRAFFIC_COLUMNS} FROM requests WHERE logged = 1 AND (ts > ? OR "
                "(ts = ? AND id > ?)) AND ts < ? ORDER BY ts, id LIMIT ?",
                (ts, ts, last_id, end, PAGE))
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
            take, popleft = min(len(self.queue), BATCH - len(self._batch)), self.queue.popleft
            self._batch += [popleft() for _ in range(take)]  # add() never shortens the queue
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


TRAFFIC_COLUMNS = ("ts, team, user_id, key_id, endpoint, model, stream, tools, tokens_in, "
                   "tokens_out, max_tokens, temperature, meta, headers, answered_by, usd, "
                   "cache, status")
TRAFFIC_FIELDS = RequestRow._fields[:-1]  # all but request_id
# A `requests` row: a SpendRow's fields but its counters, in its order (its model is the
# one that answered), then the request log's own.
LEDGER_COLUMNS = ("ts", "request_id", "key_id", "team", "user_id", "answered_by", "provider",
                  "endpoint", "prompt_tokens", "completion_tokens", "cached_tokens", "usd",
                  "status", "logged", "model", "stream", "tools", "tokens_in", "tokens_out",
                  "max_tokens", "temperature", "meta", "headers", "cache")
NOT_LOGGED = (0, None, None, None, None, None, None, None, None, None, None)  # a charge alone


def _request_rows(rows: Sequence[SpendRow | RequestRow]
                  ) -> tuple[list[tuple[Any, ...]], list[SpendRow]]:
    """The `requests` rows, in LEDGER_COLUMNS' order, and the spend rows among `rows`. A
    RequestRow right after the SpendRow of its request, agreeing with it on what both say
    (its missing usd being the spend's 0), shares its row, at the charge's moment
    (microseconds before the log line's)."""
    out: list[tuple[Any, ...]] = []
    charged: list[SpendRow] = []
    spend: SpendRow | None = None  # the row before, if a SpendRow not yet in `out`
    for row in rows:
        if isinstance(row, SpendRow):
            if spend is not None:
                out.append(spend[:-1] + NOT_LOGGED)
            spend = row
            charged.append(row)
            continue
        (ts, team, user, key, endpoint, model, stream, tools, tokens_in, tokens_out,
         max_tokens, temperature, meta, headers, answered_by, usd, cache, status,
         request_id) = row  # unpacked at once: cheaper than reading the fields one by one
        logged = (1, model, None if stream is None else int(stream),  # PostgreSQL's integers
                  None if tools is None else int(tools), tokens_in, tokens_out, max_tokens,
                  temperature, None if meta is None else _json(meta),
                  None if headers is None else _json(headers), cache)
        if spend is not None and request_id is not None and (
                spend.request_id, spend.key_id, spend.team, spend.user, spend.model,
                spend.endpoint, spend.usd, spend.status) == (
                request_id, key, team, user, answered_by, endpoint,
                0.0 if usd is None else usd, status):
            out.append((*spend[:11], usd, status, *logged))
        else:
            if spend is not None:
                out.append(spend[:-1] + NOT_LOGGED)
            out.append((ts, request_id, key, team, user, answered_by, None, endpoint, None,
                        None, None, usd, status, *logged))
        spend = None
    if spend is not None:
        out.append(spend[:-1] + NOT_LOGGED)
    return out, charged


def _per_second(rows: list[SpendRow]) -> list[tuple[str, float, float]]:
    """spend_counters rows: per whole second and set of counters charged together, the
    USD charged, at the moment of the second's first charge (so inside every period
    holding the second)."""
    seconds: dict[tuple[tuple[str, ...], float], list[float]] = {}
    for row in rows:
        if row.counters:
            summed = seconds.get((row.counters, row.ts // 1))
            if summed is None:
                seconds[row.counters, row.ts // 1] = [row.ts, row.usd]
            else:
                summed[1] += row.usd
    return [(counter, ts, usd) for (counters, _), (ts, usd) in seconds.items()
            for counter in counters]


def _traffic(row: tuple[Any, ...]) -> dict[str, Any]:
    line: dict[str, Any] = {}
    for field, value in zip(TRAFFIC_FIELDS, row, strict=True):
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


def _json(value: Mapping[str, Any]) -> str:
    """Compact JSON, as orjson writes it at a tenth of json.dumps' cost."""
    return orjson.dumps(dict(value), default=str, option=orjson.OPT_NON_STR_KEYS).decode()

