"""`gwc keys`, `gwc spend` and `gwc log export`, through their command functions (the
CLI parser is the compiler's) and, where cheap, as a process of their own."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from policies.keys import KeyRing
from policies.ledger import Ledger, RequestRow, SpendRow
from policies.records import open_records
from runtime.records_commands import keys, log_export, parse_duration, spend
from tests.conftest import ROOT

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z


def key_args(action: str, db: str, **fields: Any) -> argparse.Namespace:
    """The Namespace `gwc keys ACTION ...` parses to."""
    base: dict[str, Any] = {"team": None, "user": None, "name": None, "expires": None,
                            "models": None, "format": "text", "id": None, "grace": None}
    return argparse.Namespace(action=action, db=db, **{**base, **fields})


def run_json(capsys: pytest.CaptureFixture[str], command: Any, args: argparse.Namespace) -> Any:
    assert command(args) == 0
    return json.loads(capsys.readouterr().out)


def test_create_shows_the_secret_once_and_list_never(
        db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    made = run_json(capsys, keys, key_args("create", db_url, team="research", user="alice",
                                           name="laptop", models="a, b", format="json"))
    assert set(made) >= {"id", "key", "team", "user", "name"}
    assert made["key"].startswith("gw-") and made["id"].startswith("key_")
    assert (made["team"], made["user"], made["name"]) == ("research", "alice", "laptop")
    listed = run_json(capsys, keys, key_args("list", db_url, format="json"))
    assert [k["id"] for k in listed] == [made["id"]]
    assert listed[0]["models"] == ["a", "b"] and listed[0]["revoked_at"] is None
    assert made["key"] not in json.dumps(listed)
    assert keys(key_args("list", db_url)) == 0
    text = capsys.readouterr().out
    assert text.split("\n")[0].split() == ["id", "team", "user", "name", "created", "expires",
                                           "revoked"]
    assert made["id"] in text and made["key"] not in text
    records = open_records(db_url)
    found = KeyRing(records).lookup(made["key"], time.time())
    records.close()
    assert found.ok and found.record is not None and found.record.allows_model("b")


def test_create_in_text_prints_the_key_and_a_warning(
        db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert keys(key_args("create", db_url, team="research", expires="30d")) == 0
    out, err = capsys.readouterr()
    assert out.startswith("id:   key_") and "\nkey:  gw-" in out
    assert "shown this once" in err
    listed = run_json(capsys, keys, key_args("list", db_url, format="json"))
    assert listed[0]["expires_at"] > listed[0]["created_at"]  # RFC 3339 sorts as text


def test_revoke_a_key_and_an_unknown_one(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    made = run_json(capsys, keys, key_args("create", db_url, team="ops", format="json"))
    assert keys(key_args("revoke", db_url, id=made["id"])) == 0
    assert capsys.readouterr().out == f"revoked {made['id']}\n"
    assert keys(key_args("revoke", db_url, id="key_0000000000")) == 1
    assert capsys.readouterr().err == "gwc: no key key_0000000000\n"
    records = open_records(db_url)
    assert KeyRing(records).lookup(made["key"], time.time()).outcome == "revoked"
    records.close()


def test_rotate_gives_a_new_secret_for_the_same_id(
        db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    made = run_json(capsys, keys, key_args("create", db_url, team="ops", format="json"))
    rotated = run_json(capsys, keys, key_args("rotate", db_url, id=made["id"], grace="1h",
                                              format="json"))
    assert rotated["id"] == made["id"] and rotated["key"] != made["key"]
    records = open_records(db_url)
    ring = KeyRing(records)
    now = time.time()
    assert ring.lookup(made["key"], now).ok and ring.lookup(rotated["key"], now).ok
    assert ring.lookup(made["key"], now + 3601).outcome == "expired"
    records.close()
    assert keys(key_args("rotate", db_url, id="key_0000000000")) == 1
    assert "no key key_0000000000" in capsys.readouterr().err


@pytest.mark.parametrize(("action", "fields", "message"), [
    ("create", {"team": "ops", "expires": "soon"}, "`soon` is not a duration"),
    ("create", {}, "keys create needs --team"),
    ("rotate", {"id": "key_0000000000", "grace": "1 fortnight"}, "is not a duration"),
    ("destroy", {}, "keys takes create, list, revoke, rotate"),
])
def test_bad_usage_is_exit_2_before_the_database_is_touched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str,
        fields: dict[str, str], message: str) -> None:
    db = f"sqlite:///{tmp_path}/never/gw.db"
    assert keys(key_args(action, db, **fields)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def seed(db_url: str) -> None:
    records = open_records(db_url)
    Ledger(records).write([
        SpendRow(ts=T0, team="research", user="alice", model="a", usd=2.5, prompt_tokens=100,
                 completion_tokens=20),
        SpendRow(ts=T0 + 60, team="ops", model="b", usd=0.25, prompt_tokens=10,
                 completion_tokens=2),
        SpendRow(ts=T0 - 86_400 * 3, team="ops", model="b", usd=9.0),
        RequestRow(ts=T0, team="research", user="alice", model="a", stream=False, status=200,
                   meta={"app": "wiki"}),
        RequestRow(ts=T0 + 60, team="ops", model="b", status=200, cache="hit"),
    ])
    records.close()


def test_spend_as_json_and_as_a_table(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(db_url)
    args = argparse.Namespace(db=db_url, by="team", since="2024-05-01", format="json")
    assert run_json(capsys, spend, args) == [
        {"subject": "research", "usd": 2.5, "requests": 1, "tokens": 120},
        {"subject": "ops", "usd": 0.25, "requests": 1, "tokens": 12}]
    args = argparse.Namespace(db=db_url, by="user", since=None, format="text")
    assert spend(args) == 0
    assert capsys.readouterr().out.splitlines() == [
        "subject       usd  requests  tokens",
        "-        9.250000         2      12",
        "alice    2.500000         1     120"]


@pytest.mark.parametrize("since", ["2024-05-01T12:00:30Z", "2024-05-01T14:00:30+02:00",
                                   "2024-05-01T12:00:30"])
def test_spend_since_an_rfc3339_time(db_url: str, capsys: pytest.CaptureFixture[str],
                                     since: str) -> None:
    seed(db_url)
    args = argparse.Namespace(db=db_url, by="model", since=since, format="json")
    assert [r["subject"] for r in run_json(capsys, spend, args)] == ["b"]


@pytest.mark.parametrize("since", ["yesterday", "2024-13-01", "2024-05-01T25:00"])
def test_a_time_that_does_not_parse_is_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], since: str) -> None:
    args = argparse.Namespace(db=f"sqlite:///{tmp_path}/gw.db", by="team", since=since,
                              format="text")
    assert spend(args) == 2
    assert f"`{since}` is not a" in capsys.readouterr().err


def test_log_export_writes_json_lines_to_a_file_or_stdout(
        db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(db_url)
    out = tmp_path / "traffic.jsonl"
    args = argparse.Namespace(db=db_url, since="2024-05-01", until=None, output=str(out))
    assert log_export(args) == 0
    assert "2 requests written" in capsys.readouterr().err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [
        {"ts": "2024-05-01T12:00:00.000Z", "team": "research", "user": "alice", "model": "a",
         "stream": False, "meta": {"app": "wiki"}, "status": 200},
        {"ts": "2024-05-01T12:01:00.000Z", "team": "ops", "model": "b", "cache": "hit",
         "status": 200}]
    args = argparse.Namespace(db=db_url, since=None, until="2024-05-01T12:00:30Z", output=None)
    assert log_export(args) == 0
    assert [json.loads(line)["model"] for line in capsys.readouterr().out.splitlines()] == ["a"]


def test_durations() -> None:
    assert [parse_duration(d) for d in ("30s", "15m", "2h", "30d", "1w", "90")] == [
        30, 900, 7200, 2_592_000, 604_800, 90]


CLI = "import sys; from runtime.records_commands import {0}; sys.exit({0}({1}))"


def command(tmp_path: Path, name: str, namespace: str,
            env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = CLI.format(name, f"__import__('argparse').Namespace({namespace})")
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_gw_db_url_and_the_default_database(tmp_path: Path) -> None:
    made = command(tmp_path, "keys", "action='create', team='research', format='json'", {})
    assert made.returncode == 0, made.stderr
    assert (tmp_path / ".gw" / "gw.db").is_file()  # the default, sqlite:///.gw/gw.db
    other = f"sqlite:///{tmp_path}/elsewhere.db"
    listed = command(tmp_path, "keys", "action='list', format='json'", {"GW_DB_URL": other})
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    listed = command(tmp_path, "keys", "action='list', format='json'", {})
    assert [k["id"] for k in json.loads(listed.stdout)] == [json.loads(made.stdout)["id"]]


def test_a_database_that_cannot_be_opened_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = "postgresql://gw:hunter2@127.0.0.1:1/gw"
    done = command(tmp_path, "spend", "by='team', since=None, format='text'", {"GW_DB_URL": url})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("gwc: cannot open the records at postgresql://gw:***@")
    assert done.stderr.count("\n") == 1 and "hunter2" not in done.stderr
