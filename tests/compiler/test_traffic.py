"""The traffic format: what `gwc log export` writes, `gwc simulate` and `diff --traffic` read."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.request import ENDPOINTS, Request
from compiler.traffic import SCHEMA, Logged, TrafficError, read, write

ROOT = Path(__file__).resolve().parents[2]
names = st.sampled_from(["research", "legal", "alice", "ci-bot"])
strings = st.dictionaries(st.sampled_from(["x-app", "x-feature"]), names, max_size=2)
requests = st.builds(
    Request, model=st.none() | names, user=st.none() | names, team=st.none() | names,
    key=st.none() | names, endpoint=st.sampled_from(ENDPOINTS), stream=st.booleans(),
    tools=st.booleans(), tokens=st.integers(0, 10**6).map(float),
    max_tokens=st.none() | st.integers(1, 10**5).map(float),
    temperature=st.none() | st.sampled_from([0.0, 0.2, 1.0]), headers=strings, meta=strings)
logged = st.builds(Logged, at=st.integers(1_700_000_000_000, 1_900_000_000_000).map(
    lambda ms: ms / 1000), request=requests, tokens_out=st.integers(0, 10**5),
    answered_by=st.none() | names, usd=st.none() | st.sampled_from([0.0, 0.0125, 3.5]),
    cache=st.none() | st.sampled_from(["hit", "miss", "bypass"]),
    status=st.none() | st.sampled_from([200, 400, 429, 502]))


def test_the_published_schema_is_the_one_lines_are_read_by() -> None:
    assert json.loads((ROOT / "docs" / "traffic.schema.json").read_text()) == SCHEMA


@given(st.lists(logged, max_size=5))
def test_what_is_written_reads_back_whole_and_fits_the_schema(entries: list[Logged]) -> None:
    out = io.StringIO()
    assert write(entries, out) == len(entries)
    text = out.getvalue().splitlines()
    for line in text:
        jsonschema.validate(json.loads(line), SCHEMA)
    assert list(read(text)) == entries


@pytest.mark.parametrize(("line", "message"), [
    ("[1]", "a line is a JSON object"),
    ("{", "not JSON"),
    ('{"team": "research"}', "'ts' is required"),
    ('{"ts": "yesterday"}', "not an RFC 3339 time"),
    ('{"ts": "2026-12-01T09:30:00"}', "needs its offset"),
    ('{"ts": "2026-12-01T09:30:00Z", "prompt": "hello"}', "unknown field 'prompt'"),
    ('{"ts": "2026-12-01T09:30:00Z", "tokens_in": 2.5}', "'tokens_in' must be a whole number"),
    ('{"ts": "2026-12-01T09:30:00Z", "endpoint": "fax"}', "endpoint must be one of"),
    ('{"ts": "2026-12-01T09:30:00Z", "status": 42}', "'status' must be an HTTP status"),
])
def test_a_bad_line_is_named_with_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(TrafficError) as wrong:
        list(read(['{"ts": "2026-12-01T09:00:00Z"}', line]))
    assert wrong.value.line == 2 and message in wrong.value.message
