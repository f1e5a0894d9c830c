"""Stored responses: kept for their owner alone, chained oldest first, expired in time.

Each test runs on SQLite and on the real PostgreSQL (a schema of its own, so
parallel workers never meet), through the `records` fixture.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.records import Records
from policies.responses_store import RETENTION, ChainError, Owner, ResponsesStore
from tests.clocks import Clock

ALICE = Owner("key_alice00001", "research")
BOB = Owner("key_bob0000001", "research")  # same team, another key
NOBODY = Owner(None, None)  # auth { mode = none }



@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(records: Records, clock: Clock) -> ResponsesStore:
    return ResponsesStore(records, clock)


def turn(text: str) -> list[dict[str, Any]]:
    """A response's history: the user's item, then the assistant's."""
    return [{"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": text}]},
            {"id": f"msg_{text}", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": f"re: {text}", "annotations": []}]}]


def save(store: ResponsesStore, response_id: str, owner: Owner = ALICE,
         previous: str | None = None, text: str | None = None) -> None:
    store.save(response_id, owner, deployment="gpt", provider="openai", model="gpt-4o",
               previous_response_id=previous, history=turn(text or response_id),
               response={"id": response_id, "object": "response", "status": "completed"})


def test_a_saved_response_comes_back_whole(store: ResponsesStore, clock: Clock) -> None:
    history = [*turn('é ✓ \u2028 "quoted"'), {"type": "function_call", "call_id": "call_1",
                                               "name": "f", "arguments": '{"a": [1, 2.5]}'}]
    kept = store.save("resp_1", ALICE, deployment="claude-main", provider="anthropic",
                      model="claude-sonnet", previous_response_id=None, history=history,
                      response={"id": "resp_1", "usage": {"input_tokens": 9}, "metadata": {}})
    found = store.get("resp_1", ALICE)
    assert found == kept
    assert (found.deployment, found.provider, found.model) == ("claude-main", "anthropic",
                                                               "claude-sonnet")
    assert found.history == history and found.response["usage"] == {"input_tokens": 9}
    assert found.owner == ALICE and found.previous_response_id is None
    assert (found.created_at, found.expires_at) == (clock.now, clock.now + RETENTION)


def test_no_one_but_the_owner_sees_a_response(store: ResponsesStore) -> None:
    save(store, "resp_a")
    for stranger in (BOB, Owner("key_alice00001", "ops"), NOBODY):
        assert store.get("resp_a", stranger) is None
        assert store.delete("resp_a", stranger) is False
        with pytest.raises(ChainError, match="`resp_a` is not stored"):
            store.chain("resp_a", stranger)
    assert store.get("resp_a", ALICE) is not None  # still there for its owner


def test_without_auth_the_empty_owner_owns_its_own(store: ResponsesStore) -> None:
    save(store, "resp_open", NOBODY)
    found = store.get("resp_open", NOBODY)
    assert found is not None and found.owner == NOBODY
    assert store.get("resp_open", ALICE) is None


def test_a_chain_is_its_responses_histories_oldest_first(store: ResponsesStore) -> None:
    save(store, "resp_1", text="one")
    save(store, "resp_2", previous="resp_1", text="two")
    save(store, "resp_3", previous="resp_2", text="three")
    save(store, "resp_other", text="unrelated")
    assert store.chain("resp_3", ALICE) == turn("one") + turn("two") + turn("three")
    assert store.chain("resp_2", ALICE) == turn("one") + turn("two")
    assert store.chain("resp_1", ALICE) == turn("one")


def test_a_chain_through_a_deleted_response_fails_naming_the_gap(store: ResponsesStore) -> None:
    save(store, "resp_1")
    save(store, "resp_2", previous="resp_1")
    save(store, "resp_3", previous="resp_2")
    assert store.delete("resp_2", ALICE) is True
    assert store.delete("resp_2", ALICE) is False
    assert store.get("resp_2", ALICE) is None
    with pytest.raises(ChainError) as gap:
        store.chain("resp_3", ALICE)
    assert str(gap.value) == "response `resp_3` continues `resp_2`, which is not stored or " \
                             "has expired"


def test_a_chain_cannot_pass_through_another_owners_response(store: ResponsesStore) -> None:
    save(store, "resp_bob", BOB)
    save(store, "resp_alice", ALICE, previous="resp_bob")  # an id Alice should not know
    with pytest.raises(ChainError, match="continues `resp_bob`"):
        store.chain("resp_alice", ALICE)


def test_a_chain_over_the_bound_fails_clearly(records: Records, clock: Clock) -> None:
    store = ResponsesStore(records, clock, max_chain=3)
    for i in range(1, 5):
        save(store, f"resp_{i}", previous=f"resp_{i - 1}" if i > 1 else None)
    assert len(store.chain("resp_3", ALICE)) == 6  # three responses: at the bound
    with pytest.raises(ChainError) as long:
        store.chain("resp_4", ALICE)
    assert str(long.value) == "the chain of responses ending at `resp_4` is over 3 long; " \
                              "start a new one"


def test_a_chain_that_loops_ends_at_the_bound(records: Records, clock: Clock) -> None:
    store = ResponsesStore(records, clock, max_chain=10)
    save(store, "resp_x", previous="resp_y")  # only a broken writer could make a loop
    save(store, "resp_y", previous="resp_x")
    with pytest.raises(ChainError, match="over 10 long"):
        store.chain("resp_x", ALICE)


def test_an_expired_response_is_not_served_and_is_deleted_later(
        store: ResponsesStore, records: Records, clock: Clock) -> None:
    save(store, "resp_old")
    save(store, "resp_next", previous="resp_old")
    clock.now += RETENTION - 1
    save(store, "resp_young")  # within the hour since the last purge: nothing deleted
    clock.now += 1
    assert store.get("resp_old", ALICE) is None
    assert store.delete("resp_old", ALICE) is False
    with pytest.raises(ChainError, match="not stored or has expired"):
        store.chain("resp_next", ALICE)
    assert store.get("resp_young", ALICE) is not None
    assert records.rows("SELECT COUNT(*) FROM responses")[0][0] == 3
    clock.now += 3600
    save(store, "resp_new")  # an hour on: the expired rows go
    left = {row[0] for row in records.rows("SELECT id FROM responses")}
    assert left == {"resp_young", "resp_new"}


def test_retention_is_a_setting(records: Records, clock: Clock) -> None:
    store = ResponsesStore(records, clock, retention=60)
    save(store, "resp_brief")
    clock.now += 59
    assert store.get("resp_brief", ALICE) is not None
    clock.now += 1
    assert store.get("resp_brief", ALICE) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 53, 2 ** 53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(st.dictionaries(st.text(), json_values, max_size=4), max_size=4),
       response=st.dictionaries(st.text(), json_values, max_size=5))
def test_any_json_is_kept_as_it_was(store: ResponsesStore, history: list[dict[str, Any]],
                                    response: dict[str, Any]) -> None:
    response_id = f"resp_{len(store.records.rows('SELECT id FROM responses'))}"
    store.save(response_id, ALICE, deployment="d", provider="p", model="m",
               previous_response_id=None, history=history, response=response)
    found = store.get(response_id, ALICE)
    assert found is not None and found.history == history and found.response == response
    assert store.chain(response_id, ALICE) == history


def test_a_follow_up_learns_the_deployment_and_the_history_in_one_call(
        store: ResponsesStore) -> None:
    save(store, "resp_1")
    store.save("resp_2", ALICE, deployment="claude-main", provider="anthropic",
               model="claude", previous_response_id="resp_1", history=turn("resp_2"),
               response={"id": "resp_2", "object": "response", "status": "completed"})
    deployment, history = store.continued("resp_2", ALICE)
    assert deployment == "claude-main"  # the newest response's, not the chain's first
    assert history == store.chain("resp_2", ALICE) == [*turn("resp_1"), *turn("resp_2")]
    with pytest.raises(ChainError):
        store.continued("resp_2", BOB)
