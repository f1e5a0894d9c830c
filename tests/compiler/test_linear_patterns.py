"""`matches` runs on RE2: no header a client sends can make a pattern backtrack."""

from __future__ import annotations

import time
from pathlib import Path

from compiler.compiled import load
from compiler.conditions import Match, atom_holds
from compiler.request import Request

POLICY = """
provider p { type = mock }
model slow { provider = p; name = "s" }
model fast { provider = p; name = "f" }
route {
  when header["x-probe"] matches "(a+)+$" -> slow
  otherwise -> fast
}
"""


def test_a_catastrophic_pattern_on_a_hostile_header_is_decided_at_once(tmp_path: Path) -> None:
    path = tmp_path / "policy.gw"
    path.write_text(POLICY)
    policy = load(str(path))
    hostile = "a" * 50_000 + "!"  # Python's re takes exponential time on this
    started = time.perf_counter()
    decision = policy.decide(Request(model="m", headers={"x-probe": hostile}))
    seconds = time.perf_counter() - started
    assert [target.name for target in decision.targets] == ["fast"]
    assert seconds < 1.0  # RE2 takes well under a millisecond; backtracking, forever
    assert policy.decide(Request(model="m", headers={"x-probe": "aaa"})).targets[0].name \
        == "slow"


def test_the_reference_interpreter_matches_on_re2_too() -> None:
    assert atom_holds(Match("header:x", "(a+)+$"), "a" * 50_000 + "!") is False
    assert atom_holds(Match("header:x", "^gpt-4"), "gpt-4o") is True
