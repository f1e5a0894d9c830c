"""Golden files: the exact output of `gwc check` in each format.

Run with GWC_UPDATE_GOLDEN=1 to rewrite them after an intended change, then
read the diff before committing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = [("mistakes.gw", "text"), ("broken.gw", "text"), ("broken.gw", "json"),
         ("problems.gw", "text"), ("problems.gw", "json"),
         ("problems.gw", "sarif"), ("problems.gw", "github"),
         ("guards.gw", "text"), ("guards.gw", "json")]


@pytest.mark.parametrize(("policy", "fmt"), CASES, ids=[f"{p}-{f}" for p, f in CASES])
def test_diagnostics_match_the_golden_file(policy: str, fmt: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "check", "--format", fmt, policy],
        cwd=GOLDEN, capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode == 1
    golden = GOLDEN / f"{Path(policy).stem}.{fmt}"
    if os.environ.get("GWC_UPDATE_GOLDEN"):
        golden.write_text(result.stdout)
    assert result.stdout == golden.read_text()
