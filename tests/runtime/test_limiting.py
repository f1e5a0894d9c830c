"""How the limits stage names a request's counters: apart for every block that
counts apart, stable across processes, and never holding a header's text."""

from __future__ import annotations

from pathlib import Path

from compiler.compiled import load
from compiler.request import Request
from policies.memory_counters import MemoryCounters
from runtime.limiting import Limiter

POLICY = """
provider local { type = mock }
model a { provider = local; input = $1/1M; output = $1/1M }
route { otherwise -> a }
auth { mode = headers }
"""


def counters(tmp_path: Path, blocks: str, request: Request) -> list[str]:
    path = tmp_path / "policy.gw"
    path.write_text(POLICY + blocks)
    compiled = load(str(path))
    counters = Limiter(MemoryCounters()).build(
        compiled.decide(request), {"team": request.team, "user": request.user, "key": None},
        request.get)
    assert counters is not None
    return [limit.counter for limit in counters.limits]


def test_budgets_of_one_subject_and_other_periods_count_apart(tmp_path: Path) -> None:
    names = counters(tmp_path, """
budget per team { limit = $10 per day }
budget per team { limit = $100 per month }
budget per team { limit = $10 per day }
""", Request(team="research"))
    assert len(set(names)) == 3 and names[0].endswith("team=research/day")
    assert names[1].endswith("/month") and names[2] == names[0] + "#2"


def test_a_header_subject_is_counted_by_a_digest_never_its_text(tmp_path: Path) -> None:
    secret = "sk-live-abcdefghijklmnop"
    names = counters(tmp_path, 'quota per header["x-api-key"] { requests = 5 per minute }\n',
                     Request(headers={"x-api-key": secret}))
    assert len(names) == 1 and secret not in names[0] and "header:x-api-key=#" in names[0]
