"""`gwc simulate`'s reading and replay: the parsing process, time order, the exit codes,
`--against`, and the route a pool or a cache hit takes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from compiler.traffic import timestamp
from runtime.simulate_command import _lines, batches
from runtime.simulate_command import run as simulate

POLICY = """
provider oa {{ type = openai; base_url = "http://127.0.0.1:9/v1"; api_key = "x" }}
model big   {{ provider = oa; name = "big"; input = $1/1M; output = $2/1M }}
model alt   {{ provider = oa; name = "alt"; input = $4/1M; output = $4/1M }}
pool either {{ strategy = round_robin; members = [big, alt] }}
route {{
  when model == "pooled" -> either
  otherwise -> requested
}}
quota per user {{ requests = {quota} per minute }}
cache {{ mode = exact; ttl = 1h }}
auth {{ mode = headers; team_header = "x-team" }}
"""
START = 1_780_000_000.0


def line(i: int, **fields: Any) -> str:
    return json.dumps({"ts": timestamp(START + i), "team": "t", "user": f"u{i % 2}",
                       "model": "big", "tokens_in": 1000, "tokens_out": 1000, **fields}) + "\n"


def replay(tmp_path: Path, log: str, quota: int = 100, **options: Any) -> dict[str, Any]:
    policy, traffic, out = tmp_path / "p.gw", tmp_path / "t.jsonl", tmp_path / "r.json"
    policy.write_text(POLICY.format(quota=quota))
    traffic.write_text(log)
    args = argparse.Namespace(file=str(policy), traffic=str(traffic), against=None,
                              format="json", output=str(out), trace=None)
    for name, value in options.items():
        setattr(args, name, value)
    assert simulate(args) == 0
    return dict(json.loads(out.read_text()))


def test_the_parsing_process_reads_what_this_one_reads(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(line(i, meta={"app": "a"}, headers={"x-a": "b"}, cache="miss",
                                 status=200, usd=0.5, answered_by="big")
                            for i in range(25_000)) + "\n")
    lines = _lines(str(path))
    here = [entry for batch in batches(str(path), lines, parallel=10**9) for entry in batch]
    there = [entry for batch in batches(str(path), lines, parallel=0) for entry in batch]
    assert len(here) == 25_000 and here == there


def test_a_log_out_of_time_order_is_replayed_in_time_order(tmp_path: Path) -> None:
    lines = [line(i) for i in range(6)]  # u0 and u1 alternate: 3 requests each
    ordered = replay(tmp_path, "".join(lines), quota=2)
    shuffled = replay(tmp_path, "".join(lines[::-1]), quota=2)
    assert ordered == shuffled
    assert ordered["refused"]["quota"] == 2  # each user's third, in time order
    assert [row["first_refused"] for row in ordered["by"]["user"]] == [
        timestamp(START + 4), timestamp(START + 5)]


def test_a_bad_line_is_a_usage_error_naming_it(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.gw").write_text(POLICY.format(quota=1))
    (tmp_path / "t.jsonl").write_text(line(0) + '{"ts": "yesterday"}\n')
    args = argparse.Namespace(file=str(tmp_path / "p.gw"), traffic=str(tmp_path / "t.jsonl"),
                              against=None, format="json", output=None, trace=None)
    assert simulate(args) == 2
    assert "line 2: 'ts' is not an RFC 3339 time" in capsys.readouterr().err
    (tmp_path / "p.gw").write_text("route {")
    assert simulate(args) == 1


def test_a_pool_answers_with_the_member_that_answered_then_and_a_hit_costs_nothing(
        tmp_path: Path) -> None:
    log = line(0, model="pooled", answered_by="alt") + line(1, model="pooled") + \
        line(2, cache="hit", answered_by="big")
    result = replay(tmp_path, log)
    assert {r["model"]: r["requests"] for r in result["routes"]} == {"alt": 1, "big": 2}
    assert result["cache_hits"] == 1
    assert result["usd"] == pytest.approx(1000 * 8e-6 + 1000 * 3e-6)


def test_against_an_older_policy_both_are_replayed(tmp_path: Path) -> None:
    old = tmp_path / "old.gw"
    old.write_text(POLICY.format(quota=1))
    result = replay(tmp_path, "".join(line(i) for i in range(6)), quota=100, against=str(old))
    assert result["new"]["served"] == 6 and result["old"]["served"] == 2
    assert result["old"]["refused"]["quota"] == 4
