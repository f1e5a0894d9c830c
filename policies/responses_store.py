"""Stored responses of OpenAI's Responses API: what a `previous_response_id` continues.

A stored response is a row of the records database (SQLite or PostgreSQL,
migration 0004): its owner, the deployment that answered (so that a
follow-up can go back to it), the model asked, the response it continues,
its own history (the request's input items, then its output items) and the
Response object as it was returned. A chain's history is found in one
recursive query, oldest first; a chain longer than `max_chain`, or one whose
older link has expired or been deleted, fails with `ChainError` rather than
be continued without part of what was said.

A response belongs to the key that made it and that key's team: `get`,
`delete` and `chain` see only the caller's own rows, and say the same for
another's as for one that was never stored, so that no one learns another
tenant's ids. Without auth the owner is empty, and every caller is it.

Rows are served for `retention` seconds (30 days by default, as OpenAI keeps
them); `save` deletes the expired ones once an hour per store. These are
the only rows of the database that hold prompts and answers: a request with
`store: false` leaves none.

The API is synchronous, as the records' is: the gateway calls it in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from policies.records import Records, Row

RETENTION = 30 * 24 * 3600.0  # seconds a stored response is served
MAX_CHAIN = 1000  # responses one chain may hold: an agent's long session, not a runaway
PURGE_EVERY = 3600.0  # seconds between one store's deletions of expired rows

COLUMNS = ("id, key_id, team, deployment, provider, model, previous_id, history, response, "
           "created_at, expires_at")

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Owner:
    """Who made a response: the caller's key id and team, None without auth."""

    key_id: str | None
    team: str | None

    @property
    def columns(self) -> tuple[str, str]:
        return self.key_id or "", self.team or ""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    owner: Owner
    deployment: str  # the policy's name for the model that answered
    provider: str
    model: str  # as the request asked
    previous_response_id: str | None
    history: list[Item]  # this response's input items, then its output items
    response: Item  # the Response object as returned
    created_at: float
    expires_at: float


class ChainError(LookupError):
    """A response chain that cannot be continued; the message says why, in one line."""


class ResponsesStore:
    def __init__(self, records: Records, clock: Callable[[], float] = time.time,
                 retention: float = RETENTION, max_chain: int = MAX_CHAIN) -> None:
        self.records = records
        self.clock = clock
        self.retention = retention
        self.max_chain = max_chain
        self.purged_at: float | None = None

    def save(self, response_id: str, owner: Owner, *, deployment: str, provider: str,
             model: str, previous_response_id: str | None, history: list[Item],
             response: Item) -> StoredResponse:
        """Keep a response for `retention` seconds from now; RecordsError if the
        database refuses it (an id stored already, say)."""
        now = self.clock()
        stored = StoredResponse(response_id, owner, deployment, provider, model,
                                previous_response_id, history, response, now,
                                now + self.retention)
        with self.records.transaction() as tx:
            tx.run(f"INSERT INTO responses ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (response_id, *owner.columns, deployment, provider, model,
                    previous_response_id, orjson.dumps(history).decode(),
                    orjson.dumps(response).decode(), now, stored.expires_at))
            if self.purged_at is None or now - self.purged_at >= PURGE_EVERY:
                tx.run("DELETE FROM responses WHERE expires_at <= ?", (now,))
                self.purged_at = now
        return stored

    def get(self, response_id: str, owner: Owner) -> StoredResponse | None:
        """The owner's response, None if it is not theirs, not stored or expired."""
        found = self.records.rows(
            f"SELECT {COLUMNS} FROM responses WHERE id = ? AND key_id = ? AND team = ? "
            "AND expires_at > ?", (response_id, *owner.columns, self.clock()))
        return _stored(found[0]) if found else None

    def delete(self, response_id: str, owner: Owner) -> bool:
        """Forget the owner's response; False if there was none to forget. A chain
        through it can no longer be continued."""
        with self.records.transaction() as tx:
            return tx.run("DELETE FROM responses WHERE id = ? AND key_id = ? AND team = ? "
                          "AND expires_at > ?", (response_id, *owner.columns, self.clock())) > 0

    def chain(self, response_id: str, owner: Owner) -> list[Item]:
        """The history of the chain that ends at the owner's response, oldest first;
        ChainError if the response is not there, a link is missing or the chain is
        over `max_chain` responses long."""
        return self.continued(response_id, owner)[1]

    def continued(self, response_id: str, owner: Owner) -> tuple[str, list[Item]]:
        """The deployment that made the owner's response, and its chain's history, in one
        query: what a follow-up needs (ChainError as `chain` says)."""
        key_id, team = owner.columns
        now = self.clock()
        rows = self.records.rows(
            "WITH RECURSIVE chain (id, previous_id, deployment, history, depth) AS ("
            " SELECT id, previous_id, deployment, history, 1 FROM responses"
            " WHERE id = ? AND key_id = ? AND team = ? AND expires_at > ?"
            " UNION ALL"
            " SELECT r.id, r.previous_id, r.deployment, r.history, c.depth + 1"
            " FROM responses r JOIN chain c ON r.id = c.previous_id"
            " WHERE r.key_id = ? AND r.team = ? AND r.expires_at > ? AND c.depth <= ?)"
            " SELECT id, previous_id, deployment, history FROM chain ORDER BY depth DESC",
            (response_id, key_id, team, now, key_id, team, now, self.max_chain))
        if not rows:
            raise ChainError(f"response `{response_id}` is not stored or has expired")
        if len(rows) > self.max_chain:
            raise ChainError(f"the chain of responses ending at `{response_id}` is over "
                             f"{self.max_chain} long; start a new one")
        oldest, previous, _, _ = rows[0]
        if previous is not None:
            raise ChainError(f"response `{oldest}` continues `{previous}`, which is not stored "
                             "or has expired")
        return str(rows[-1][2]), [item for *_, history in rows for item in orjson.loads(history)]


def _stored(row: Row) -> StoredResponse:
    (response_id, key_id, team, deployment, provider, model, previous_id, history, response,
     created_at, expires_at) = row
    return StoredResponse(response_id, Owner(key_id or None, team or None), deployment,
                          provider, model, previous_id, orjson.loads(history),
                          orjson.loads(response), float(created_at), float(expires_at))
