"""The records database: URLs, migrations run once however many open it at once."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from policies.records import Records, RecordsError, open_records
from tests.conftest import ROOT


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gw.db"
    return str(request.getfixturevalue("postgres_url"))


def versions(records: Records) -> list[int]:
    return [v for (v,) in records.rows("SELECT version FROM schema_version ORDER BY version")]


def test_open_migrates_once_and_again_is_a_no_op(db_url: str) -> None:
    first = open_records(db_url)
    applied = versions(first)
    assert applied[:2] == [1, 2]
    assert first.migrate() == []
    second = open_records(db_url)
    assert versions(second) == applied
    first.close()
    second.close()


def test_threads_opening_at_once_apply_each_step_once(db_url: str) -> None:
    errors: list[Exception] = []
    start = threading.Barrier(6)

    def opener() -> None:
        start.wait()
        try:
            open_records(db_url).close()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    records = open_records(db_url)
    assert versions(records) == sorted(set(versions(records)))
    records.close()


OPENER = """
import sys, time
from policies.records import open_records
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
open_records(sys.argv[1]).close()
"""


def test_processes_opening_at_once_apply_each_step_once(db_url: str) -> None:
    import time

    at = str(time.time() + 1.5)  # all start together, once their interpreters are up
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, db_url, at], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outcomes = [(proc.communicate(timeout=30)[1], proc.returncode) for proc in procs]
    assert outcomes == [("", 0)] * 4
    records = open_records(db_url)
    applied = versions(records)
    assert applied == sorted(set(applied)) and applied[:2] == [1, 2]
    records.close()


def test_a_relative_sqlite_url_is_under_the_working_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    records = open_records("sqlite:///.gw/gw.db")
    assert (tmp_path / ".gw" / "gw.db").is_file()
    assert records.rows("PRAGMA journal_mode") == [("wal",)]  # several processes share it
    records.close()


def test_an_absolute_sqlite_url_has_four_slashes(tmp_path: Path) -> None:
    records = open_records(f"sqlite:///{tmp_path}/deep/er/gw.db")
    assert (tmp_path / "deep" / "er" / "gw.db").is_file()
    records.close()


@pytest.mark.parametrize("url", ["mysql://x", "sqlite:///", "sqlite:///:memory:", "gw.db"])
def test_an_unknown_url_is_refused_in_one_line(url: str) -> None:
    with pytest.raises(RecordsError) as caught:
        open_records(url)
    assert "\n" not in str(caught.value)


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    with pytest.raises(RecordsError) as caught:
        open_records("postgresql://gw:hunter2@127.0.0.1:1/gw")
    message = str(caught.value)
    assert "\n" not in message and "hunter2" not in message
    assert message.startswith("cannot open the records at postgresql://gw:***@127.0.0.1:1/gw")


def test_a_failed_transaction_leaves_nothing(db_url: str) -> None:
    records = open_records(db_url)
    with pytest.raises(RuntimeError), records.transaction() as tx:
        tx.run("INSERT INTO versions (name, value) VALUES ('scratch', 1)")
        raise RuntimeError("halfway")
    assert records.rows("SELECT value FROM versions WHERE name = 'scratch'") == []
    with pytest.raises(RecordsError):
        records.rows("SELECT no_such_column FROM versions")
    assert records.rows("SELECT value FROM versions WHERE name = 'keys'") == [(0,)]
    records.close()


def test_closed_records_refuse_politely(db_url: str) -> None:
    records = open_records(db_url)
    records.close()
    with pytest.raises(RecordsError, match="closed"):
        records.rows("SELECT 1")


def test_a_sqlite_file_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file where the folder would be")
    with pytest.raises(RecordsError, match="cannot make the folder") as caught:
        open_records(f"sqlite:///{tmp_path}/plain/gw.db")
    assert "\n" not in str(caught.value)


def test_insert_writes_many_rows_with_nulls_and_odd_text(db_url: str) -> None:
    records = open_records(db_url)
    odd = "tab\there, new\nline, back\\slash, \\N, quote' and ✓"
    rows = [(f"key_{i}", odd, None if i % 2 else f"u{i}", float(i)) for i in range(5)]
    with records.transaction() as tx:
        tx.insert("keys", ("id", "team", "user_id", "created_at"), rows)
    assert records.rows("SELECT id, team, user_id, created_at FROM keys ORDER BY id") == rows
    with pytest.raises(RecordsError), records.transaction() as tx:  # all or nothing
        tx.insert("keys", ("id", "team", "created_at"), [("key_9", "t", 1.0), ("key_0", "t", 1.0)])
    assert records.rows("SELECT COUNT(*) FROM keys") == [(5,)]
    records.close()
