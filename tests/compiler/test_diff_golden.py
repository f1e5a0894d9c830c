"""Golden files: the exact output of `gwc diff` in each format, for a policy pair
with one edit per kind of change (tests/golden/diff/old.gw and new.gw).

Run with GWC_UPDATE_GOLDEN=1 to rewrite them after an intended change, then
read the diff before committing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "diff"
CASES = [("text", []), ("json", []), ("sarif", []), ("github", []), ("markdown", []),
         ("text", ["--traffic", "traffic.jsonl"]), ("json", ["--traffic", "traffic.jsonl"])]


@pytest.mark.parametrize(("fmt", "extra"), CASES,
                         ids=[f + ("-traffic" if e else "") for f, e in CASES])
def test_changes_match_the_golden_file(fmt: str, extra: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "diff", "old.gw", "new.gw", "--format", fmt,
         "--fail-on", "newly-denied", *extra],
        cwd=GOLDEN, capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode == 1, result.stderr
    golden = GOLDEN / f"changes{'-traffic' if extra else ''}.{fmt}"
    if os.environ.get("GWC_UPDATE_GOLDEN"):
        golden.write_text(result.stdout)
    assert result.stdout == golden.read_text()


def test_a_policy_with_errors_is_reported_as_check_reports_it() -> None:
    broken = GOLDEN.parent / "broken.gw"
    result = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "diff", str(broken), "new.gw"],
        cwd=GOLDEN, capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")})
    check = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "check", str(broken)],
        cwd=GOLDEN, capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode == 1
    assert result.stdout == check.stdout
