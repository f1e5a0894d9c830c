"""`gwc keys`, `gwc spend` and `gwc log export`: the commands over the gateway's
database (`--db`, else `GW_DB_URL`, else `sqlite:///.gw/gw.db`).

Each takes the parsed arguments and returns the exit code: 0 done, 1 not found
or the database failed, 2 a duration or a time that does not parse. A database
that cannot be opened is one line on standard error, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any, TextIO, cast

from policies.keys import KeyRecord, Keys, NoSuchKey
from policies.ledger import BY_COLUMN, By, Ledger, rfc3339
from policies.records import Records, RecordsError, open_records

DEFAULT_DB = "sqlite:///.gw/gw.db"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
Step = Callable[[Records], int]  # a command's work once its arguments are read


class Usage(Exception):
    """An argument the command cannot use: exit 2, before the database is opened."""


def keys(args: argparse.Namespace) -> int:
    """`gwc keys create|list|revoke|rotate`."""
    def prepare() -> Step:
        action = KEY_ACTIONS.get(getattr(args, "action", None) or "")
        if action is None:
            raise Usage(f"keys takes {', '.join(KEY_ACTIONS)}")
        return action(args)
    return _run(args, prepare)


def spend(args: argparse.Namespace) -> int:
    """`gwc spend [--by team|user|key|model] [--since DATE] [--format json]`."""
    def prepare() -> Step:
        by = getattr(args, "by", None) or "team"
        if by not in BY_COLUMN:
            raise Usage(f"--by is one of {', '.join(BY_COLUMN)}, not `{by}`")
        subject, since = cast(By, by), _time(getattr(args, "since", None))
        return lambda records: _report(Ledger(records).spend_report(subject, since),
                                       _format(args))
    return _run(args, prepare)


def log_export(args: argparse.Namespace) -> int:
    """`gwc log export [--since T] [--until T] [-o FILE]`: the request log as JSON Lines."""
    def prepare() -> Step:
        since, until = _time(getattr(args, "since", None)), _time(getattr(args, "until", None))
        output = getattr(args, "output", None)

        def export(records: Records) -> int:
            lines = Ledger(records).export_requests(since, until)
            if output in (None, "-"):
                _write_lines(lines, sys.stdout)
                return 0
            with open(output, "w", encoding="utf-8") as sink:
                count = _write_lines(lines, sink)
            print(f"gwc: {count} requests written to {output}", file=sys.stderr)
            return 0
        return export
    return _run(args, prepare)


def _report(report: list[dict[str, Any]], form: str) -> int:
    if form == "json":
        print(json.dumps(report))
    else:
        _table(["subject", "usd", "requests", "tokens"],
               [[_cell(r["subject"]), f"{r['usd']:.6f}", str(r["requests"]), str(r["tokens"])]
                for r in report], right=frozenset({1, 2, 3}))
    return 0


def _create(args: argparse.Namespace) -> Step:
    team = getattr(args, "team", None)
    if not team:
        raise Usage("keys create needs --team")
    expires = getattr(args, "expires", None)
    lifetime = parse_duration(expires) if expires else None
    models = [m.strip() for m in (getattr(args, "models", None) or "").split(",") if m.strip()]

    def create(records: Records) -> int:
        record, secret = Keys(records).create_key(
            team, getattr(args, "user", None), getattr(args, "name", None),
            expires_at=time.time() + lifetime if lifetime is not None else None,
            models=models or None)
        if _format(args) == "json":
            print(json.dumps({"id": record.id, "key": secret, "team": record.team,
                              "user": record.user, "name": record.name,
                              "expires_at": _moment(record.expires_at),
                              "models": list(record.models) if record.models else None}))
        else:
            print(f"id:   {record.id}\nkey:  {secret}\nteam: {record.team}")
            print("gwc: the key is shown this once; keep it now", file=sys.stderr)
        return 0
    return create


def _list(args: argparse.Namespace) -> Step:
    def listing(records: Records) -> int:
        found = Keys(records).list_keys()
        if _format(args) == "json":
            print(json.dumps([key_json(record) for record in found]))
            return 0
        _table(["id", "team", "user", "name", "created", "expires", "revoked"],
               [[r.id, r.team, _cell(r.user), _cell(r.name), _cell(_moment(r.created_at)),
                 _cell(_moment(r.expires_at)), _cell(_moment(r.revoked_at))] for r in found])
        return 0
    return listing


def _revoke(args: argparse.Namespace) -> Step:
    def revoke(records: Records) -> int:
        if not Keys(records).revoke(args.id):
            print(f"gwc: no key {args.id}", file=sys.stderr)
            return 1
        print(f"revoked {args.id}")
        return 0
    return revoke


def _rotate(args: argparse.Namespace) -> Step:
    grace = getattr(args, "grace", None)
    seconds = parse_duration(grace) if grace else 0.0

    def rotate(records: Records) -> int:
        keys = Keys(records)
        try:
            secret = keys.rotate(args.id, seconds)
        except NoSuchKey as exc:
            print(f"gwc: {exc}", file=sys.stderr)
            return 1
        record = keys.get(args.id)
        assert record is not None  # rotate just found it
        until = _moment(time.time() + seconds)
        if _format(args) == "json":
            print(json.dumps({"id": record.id, "key": secret, "team": record.team,
                              "user": record.user, "name": record.name,
                              "previous_until": until}))
        else:
            print(f"id:   {record.id}\nkey:  {secret}\nteam: {record.team}")
            print(f"gwc: the key is shown this once; the previous one works until {until}",
                  file=sys.stderr)
        return 0
    return rotate


KEY_ACTIONS = {"create": _create, "list": _list, "revoke": _revoke, "rotate": _rotate}


def parse_duration(text: str) -> float:
    """Seconds in `30s`, `15m`, `2h`, `30d`, `1w` (or a bare number of seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise Usage(f"`{text}` is not a duration: write it as 30s, 15m, 2h or 30d")
    return float(match[1]) * UNITS.get(match[2], 1)


def _time(text: str | None) -> float | None:
    """A moment given as YYYY-MM-DD (midnight UTC), RFC 3339 (UTC without an offset),
    or a duration meaning that long ago (`7d`)."""
    if text is None:
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise Usage(f"`{text}` is not a date") from None
        return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    if re.fullmatch(r"\d+(?:\.\d+)?[smhdw]", text):
        return time.time() - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Usage(f"`{text}` is not a time: write YYYY-MM-DD, an RFC 3339 time such as "
                    "2024-05-01T12:00:00Z, or how long ago, such as 7d") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _run(args: argparse.Namespace, prepare: Callable[[], Step]) -> int:
    """Read the arguments (exit 2 if they are wrong), then open the database and do the
    work; a database that fails is one line on standard error and exit 1."""
    try:
        step = prepare()
    except Usage as exc:
        print(f"gwc: {exc}", file=sys.stderr)
        return 2
    url = getattr(args, "db", None) or os.environ.get("GW_DB_URL") or DEFAULT_DB
    try:
        records = open_records(url)
    except RecordsError as exc:
        print(f"gwc: {exc}", file=sys.stderr)
        return 1
    try:
        return step(records)
    except (RecordsError, OSError) as exc:
        print(f"gwc: {exc}", file=sys.stderr)
        return 1
    finally:
        records.close()


def _write_lines(lines: Iterator[dict[str, Any]], sink: TextIO) -> int:
    count = 0
    for line in lines:
        sink.write(json.dumps(line, separators=(",", ":")) + "\n")
        count += 1
    sink.flush()
    return count


def key_json(record: KeyRecord) -> dict[str, Any]:
    return {"id": record.id, "team": record.team, "user": record.user, "name": record.name,
            "created_at": _moment(record.created_at), "expires_at": _moment(record.expires_at),
            "revoked_at": _moment(record.revoked_at),
            "models": list(record.models) if record.models is not None else None}


def _table(header: list[str], rows: Sequence[list[str]],
           right: frozenset[int] = frozenset()) -> None:
    """Columns padded to their widest cell; numbers (`right`) aligned to the right."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip())


def _format(args: argparse.Namespace) -> str:
    return getattr(args, "format", None) or "text"


def _moment(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts)


def _cell(value: str | None) -> str:
    return "-" if value is None else value
