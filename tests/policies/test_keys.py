"""Virtual keys: secrets shown once and stored hashed, lookups, rotation, refresh."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from policies.keys import KeyRing, Keys, NoSuchKey, hash_secret
from policies.records import Records, open_records
from tests.clocks import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys(records: Records, clock: Clock) -> Keys:
    return Keys(records, clock)


def every_value(records: Records) -> str:
    """Every value of every table, as text: where a leaked secret would show."""
    tables = ["keys", "key_secrets", "versions", "schema_version"]
    return "\n".join(repr(row) for table in tables
                     for row in records.rows(f"SELECT * FROM {table}"))


def test_a_secret_has_the_prefix_and_128_bits_or_more(keys: Keys) -> None:
    seen = set()
    for _ in range(20):
        record, secret = keys.create_key("research")
        assert secret.startswith("gw-")
        assert len(base64.urlsafe_b64decode(secret[3:] + "==")) * 8 >= 128
        assert record.id.startswith("key_") and len(record.id) == 14
        assert record.id not in secret
        seen.add(secret)
    assert len(seen) == 20


def test_the_database_holds_hashes_never_secrets(
        keys: Keys, records: Records, db_url: str, tmp_path: Path) -> None:
    record, secret = keys.create_key("research", "alice", "laptop", models=["a"])
    rotated = keys.rotate(record.id, grace_seconds=60)
    dump = every_value(records)
    for issued in (secret, rotated):
        assert issued not in dump and issued[3:] not in dump
        assert hash_secret(issued) in dump
    if db_url.startswith("sqlite"):
        raw = b"".join(path.read_bytes() for path in tmp_path.glob("gw.db*"))  # and the WAL
        assert secret.encode() not in raw and rotated.encode() not in raw
        assert hash_secret(secret).encode() in raw


def test_created_keys_are_listed_without_hashes(keys: Keys, clock: Clock) -> None:
    first, _ = keys.create_key("research", "alice", "laptop", expires_at=2e6, models=["a", "b"])
    clock.now += 1
    second, _ = keys.create_key("ops")
    assert keys.list_keys() == [first, second]
    assert (first.team, first.user, first.name) == ("research", "alice", "laptop")
    assert first.expires_at == 2e6 and first.created_at == 1_000_000.0
    assert first.models == ("a", "b") and first.allows_model("a") and not first.allows_model("c")
    assert second.models is None and second.allows_model("anything")
    assert keys.get(second.id) == second and keys.get("key_0000000000") is None


def test_lookup_tells_ok_unknown_revoked_and_expired(keys: Keys, records: Records) -> None:
    live, live_secret = keys.create_key("research", "alice")
    _, dated_secret = keys.create_key("research", expires_at=1_000_100.0)
    gone, gone_secret = keys.create_key("research")
    assert keys.revoke(gone.id)
    ring = KeyRing(records)
    found = ring.lookup(live_secret, 1_000_000.0)
    assert found.ok and found.record == live and found.message == ""
    assert ring.lookup("gw-" + "x" * 32, 1_000_000.0).outcome == "unknown"
    assert ring.lookup(dated_secret, 1_000_099.0).outcome == "ok"
    assert ring.lookup(dated_secret, 1_000_100.0).outcome == "expired"
    revoked = ring.lookup(gone_secret, 1_000_000.0)
    assert revoked.outcome == "revoked" and revoked.message == f"API key {gone.id} has been revoked"
    for secret in (live_secret, gone_secret, "gw-guess"):
        lookup = ring.lookup(secret, 2e6)
        assert secret not in repr(lookup) and secret not in lookup.message


def test_revoke_says_whether_the_key_exists_and_keeps_the_first_time(
        keys: Keys, clock: Clock) -> None:
    record, _ = keys.create_key("research")
    assert keys.revoke(record.id)
    clock.now += 50
    assert keys.revoke(record.id)
    assert keys.get(record.id).revoked_at == 1_000_000.0  # type: ignore[union-attr]
    assert not keys.revoke("key_0000000000")


def test_rotation_keeps_the_id_and_the_old_secret_until_the_grace_ends(
        keys: Keys, records: Records, clock: Clock) -> None:
    record, old = keys.create_key("research", "alice")
    clock.now = 1_000_010.0
    new = keys.rotate(record.id, grace_seconds=30)
    assert new != old and new.startswith("gw-")
    ring = KeyRing(records)
    for secret in (old, new):
        found = ring.lookup(secret, 1_000_039.9)
        assert found.ok and found.record is not None and found.record.id == record.id
    assert ring.lookup(old, 1_000_040.0).outcome == "expired"
    assert ring.lookup(new, 1_000_040.0).ok
    clock.now = 1_000_020.0
    newest = keys.rotate(record.id)  # no grace: the previous secrets end now
    ring.refresh()
    assert ring.lookup(new, 1_000_020.0).outcome == "expired"
    assert ring.lookup(old, 1_000_019.0).ok  # its grace already ended sooner than now+30
    assert ring.lookup(newest, 1_000_020.0).ok
    assert [k.id for k in keys.list_keys()] == [record.id]


def test_rotating_an_unknown_or_revoked_key_is_refused(keys: Keys) -> None:
    with pytest.raises(NoSuchKey, match="no key key_0000000000"):
        keys.rotate("key_0000000000")
    record, _ = keys.create_key("research")
    keys.revoke(record.id)
    with pytest.raises(NoSuchKey, match="revoked"):
        keys.rotate(record.id)


def test_refresh_sees_another_replicas_changes_and_is_one_select_otherwise(
        db_url: str, keys: Keys, records: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    record, secret = keys.create_key("research")
    ring = KeyRing(records)
    assert ring.lookup(secret, 1e6).ok
    statements: list[str] = []
    read = records.rows
    monkeypatch.setattr(records, "rows", lambda sql, params=(): statements.append(sql) or
                        read(sql, params))
    index = ring.index
    assert not ring.refresh()
    assert len(statements) == 1 and ring.index is index
    other = open_records(db_url)  # another replica, its own connections
    Keys(other).revoke(record.id)
    other.close()
    assert ring.refresh()
    assert ring.lookup(secret, 1e6).outcome == "revoked"


def test_a_lookup_during_a_refresh_sees_the_old_keys_or_the_new(
        keys: Keys, records: Records) -> None:
    _, secret = keys.create_key("research")
    ring = KeyRing(records)
    index = ring.index
    keys.create_key("ops")
    ring.refresh()
    assert ring.index is not index and len(index) == 1 and len(ring.index) == 2
    assert ring.lookup(secret, 1e6).ok
