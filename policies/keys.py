"""Virtual keys: who a caller is, from the secret in its Authorization header.

A key has a short id (`key_` and 10 hex digits) that logs, metrics, errors and
the ledger may show, and secrets (`gw-` and 192 random bits) that only its
holder sees, once, when they are issued. The database keeps a secret only as
its sha256: the secrets are random and high-entropy, so no one can guess one
from its hash and a slow password KDF would buy nothing but request latency.

Rotation issues a new secret for the same id, so spend and limits carry on;
the previous secrets keep working until the grace period ends. Expiry and
revocation act on the whole key.

The request path never asks the database: a KeyRing holds every secret's hash
in memory and refreshes when the `keys` version (bumped in the same
transaction as every create, revoke and rotate) has moved, which costs one
SELECT when nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from policies.records import Records, Row, Tx

SECRET_PREFIX = "gw-"
SECRET_BYTES = 24  # 192 bits; token_urlsafe makes them 32 characters
ID_PREFIX = "key_"

Outcome = Literal["ok", "unknown", "revoked", "expired"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    team: str
    user: str | None
    name: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    models: tuple[str, ...] | None  # None: any model

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """What a secret turned out to be. Nothing here holds the secret, so a lookup can
    be logged or put in an error whole."""

    outcome: Outcome
    record: KeyRecord | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def message(self) -> str:
        """For the caller's 401: names the key by its id, never by its secret."""
        if self.record is None:
            return "unknown API key"
        if self.outcome == "revoked":
            return f"API key {self.record.id} has been revoked"
        if self.outcome == "expired":
            return f"API key {self.record.id} has expired"
        return ""


UNKNOWN = KeyLookup("unknown")


class NoSuchKey(LookupError):
    """No key has this id, or it is revoked and so cannot be rotated."""


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Keys:
    """Create, list, revoke and rotate the keys of one database."""

    def __init__(self, records: Records, clock: Callable[[], float] = time.time) -> None:
        self.records = records
        self.clock = clock

    def create_key(self, team: str, user: str | None = None, name: str | None = None,
                   expires_at: float | None = None,
                   models: Sequence[str] | None = None) -> tuple[KeyRecord, str]:
        """A new key and its secret: the one time the secret is seen."""
        now = self.clock()
        secret = _new_secret()
        with self.records.transaction() as tx:
            _bump(tx)  # first, so concurrent creators queue here and see each other's ids
            key_id = _new_id(tx)
            record = KeyRecord(key_id, team, user, name, now, expires_at, None,
                               tuple(models) if models is not None else None)
            tx.run("INSERT INTO keys (id, team, user_id, name, created_at, expires_at, models) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (key_id, team, user, name, now, expires_at, _models_text(record.models)))
            tx.run("INSERT INTO key_secrets (hash, key_id, created_at) VALUES (?, ?, ?)",
                   (hash_secret(secret), key_id, now))
        return record, secret

    def list_keys(self) -> list[KeyRecord]:
        """Every key, oldest first: records only, never a hash."""
        return [_record(row) for row in self.records.rows(
            f"SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, id")]

    def get(self, key_id: str) -> KeyRecord | None:
        found = self.records.rows(f"SELECT {KEY_COLUMNS} FROM keys WHERE id = ?", (key_id,))
        return _record(found[0]) if found else None

    def revoke(self, key_id: str) -> bool:
        """Refuse the key from now on; False if there is no such key. Revoking twice
        keeps the first time."""
        with self.records.transaction() as tx:
            _bump(tx)
            changed = tx.run("UPDATE keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                             (self.clock(), key_id))
        return changed > 0

    def rotate(self, key_id: str, grace_seconds: float = 0) -> str:
        """A new secret for the same key; its current secrets end `grace_seconds` from
        now (an older one already ending sooner keeps its end). NoSuchKey if the key
        does not exist or is revoked."""
        now = self.clock()
        secret = _new_secret()
        with self.records.transaction() as tx:
            _bump(tx)
            found = tx.rows("SELECT revoked_at FROM keys WHERE id = ?", (key_id,))
            if not found or found[0][0] is not None:
                raise NoSuchKey(f"no key {key_id}" if not found else f"key {key_id} is revoked")
            until = now + grace_seconds
            tx.run("UPDATE key_secrets SET valid_until = ? WHERE key_id = ? AND "
                   "(valid_until IS NULL OR valid_until > ?)", (until, key_id, until))
            tx.run("INSERT INTO key_secrets (hash, key_id, created_at) VALUES (?, ?, ?)",
                   (hash_secret(secret), key_id, now))
        return secret


class KeyRing:
    """Every secret's hash in memory, for the request path: `lookup` is a hash and a
    dict get, returning answers made at load time. `refresh` (the gateway calls it
    every quarter second from a thread of its own) reloads only when the keys
    changed, and swaps the whole index at once, so a lookup sees the old keys or the
    new, never half of each. Expiry needs no reload: each entry keeps its deadline."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.version: int | None = None
        # hash -> (deadline or None, the answer until then, the answer from then on)
        self.index: dict[str, tuple[float | None, KeyLookup, KeyLookup]] = {}
        self.refresh()

    def refresh(self) -> bool:
        """Reload if any key changed since the last load; whether it reloaded.
        RecordsError if the database is unreachable; the ring keeps what it had."""
        version = _version(self.records)
        if version == self.version:
            return False
        # The version is read before the keys: a change between the two is loaded now
        # and again at the next refresh, never missed.
        keys = {row[0]: _record(row) for row in self.records.rows(
            f"SELECT {KEY_COLUMNS} FROM keys")}
        self.index = {digest: _entry(keys[key_id], valid_until) for digest, key_id, valid_until
                      in self.records.rows("SELECT hash, key_id, valid_until FROM key_secrets")
                      if key_id in keys}
        self.version = version
        return True

    def lookup(self, secret: str, now: float) -> KeyLookup:
        found = self.index.get(hash_secret(secret))
        if found is None:
            return UNKNOWN
        deadline, before, after = found
        return before if deadline is None or now < deadline else after


def _entry(record: KeyRecord, valid_until: float | None
           ) -> tuple[float | None, KeyLookup, KeyLookup]:
    """A secret's answers: revoked for good, or ok until the secret or the key ends."""
    if record.revoked_at is not None:
        revoked = KeyLookup("revoked", record)
        return None, revoked, revoked
    ends = [t for t in (valid_until, record.expires_at) if t is not None]
    return (min(ends) if ends else None), KeyLookup("ok", record), KeyLookup("expired", record)


KEY_COLUMNS = "id, team, user_id, name, created_at, expires_at, revoked_at, models"


def _record(row: Row) -> KeyRecord:
    key_id, team, user, name, created_at, expires_at, revoked_at, models = row
    return KeyRecord(key_id, team, user, name, float(created_at),
                     None if expires_at is None else float(expires_at),
                     None if revoked_at is None else float(revoked_at),
                     None if models is None else tuple(json.loads(models)))


def _models_text(models: tuple[str, ...] | None) -> str | None:
    return None if models is None else json.dumps(list(models))


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def _new_id(tx: Tx) -> str:
    """An id no key has: 40 random bits, drawn again in the rare case of a clash."""
    while True:
        key_id = ID_PREFIX + secrets.token_hex(5)
        if not tx.rows("SELECT 1 FROM keys WHERE id = ?", (key_id,)):
            return key_id


def _bump(tx: Tx) -> None:
    tx.run("UPDATE versions SET value = value + 1 WHERE name = 'keys'")


def _version(records: Records) -> int:
    return int(records.rows("SELECT value FROM versions WHERE name = 'keys'")[0][0])
