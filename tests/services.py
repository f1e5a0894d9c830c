"""The real Redis and PostgreSQL the state tests run against.

This machine and CI run both (127.0.0.1:6379; 127.0.0.1:5432, trust auth,
database `test`). Under CI (`CI` set) a missing service fails the test, so a
broken machine can't pass by skipping; elsewhere the test skips with the reason,
and the rest of the suite runs. `GW_TEST_REDIS_URL` and `GW_TEST_DB_URL` point
the tests at other servers.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.records import Records, open_records

# a database of its own for each pytest-xdist worker (gw0 15, gw1 14, ...), as each
# test empties it
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_URL = os.environ.get("GW_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{15 - _WORKER}")
POSTGRES_URL = os.environ.get("GW_TEST_DB_URL", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable(service: str, reason: object) -> None:
    message = f"{service} is not reachable ({reason})"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must have it", pytrace=False)
    pytest.skip(message)


class RedisServer:
    """A redis-server of the test's own, on a free port, without persistence: to stop,
    kill and start again in fault tests."""

    def __init__(self, folder: Path) -> None:
        from tests.fakes import free_port

        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        try:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            unavailable("redis-server", exc)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
            finally:
                client.close()

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # stopped or not
            self.process.wait(10)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of its own for one test, emptied before and after."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL schema of its own for one test, dropped after it."""
    import psycopg

    schema = f"gwtest_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.Error as exc:
        unavailable("PostgreSQL", exc)
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The gateway's records database, once in SQLite and once in PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gw.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def records(db_url: str) -> Iterator[Records]:
    opened = open_records(db_url)
    yield opened
    opened.close()
