"""The shared examples are the language's contract: each behaves as its header says.

A header is `# expect: exit N` and `# expect: error|warning at L:C MESSAGE`
lines. Files with no header are libraries or clean policies: checked all
together, they must pass.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_EXAMPLES

pytestmark = pytest.mark.skipif(not SHARED_EXAMPLES.is_dir(),
                                reason="../shared/spec/examples is not beside this checkout")

EXPECT = re.compile(r"# expect: (error|warning) at (\d+):(\d+) (.*)")
EXIT = re.compile(r"# expect: exit (\d+)")


def _examples() -> list[Path]:
    return sorted(SHARED_EXAMPLES.glob("*.gw")) if SHARED_EXAMPLES.is_dir() else []


def gwc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("path", [p for p in _examples() if EXIT.search(p.read_text())],
                         ids=lambda p: p.name)
def test_example_behaves_as_its_header_says(path: Path) -> None:
    text = path.read_text()
    expected_exit = int(EXIT.search(text).group(1))  # type: ignore[union-attr]
    expected = sorted((int(m[1]), int(m[2]), m[0], m[3]) for m in EXPECT.findall(text))

    result = gwc("check", "--format", "json", str(path))

    report = json.loads(result.stdout)
    found = sorted((d["line"], d["column"], d["severity"], d["message"])
                   for d in report["diagnostics"])
    assert found == expected
    assert result.returncode == expected_exit
    if "exit 1 under --strict" in text:
        assert gwc("check", "--strict", str(path)).returncode == 1


def test_examples_without_a_header_check_clean_together() -> None:
    plain = [str(p) for p in _examples() if not EXIT.search(p.read_text())]
    result = gwc("check", *plain)
    assert result.returncode == 0, result.stdout
    assert "error[" not in result.stdout


def test_tests_in_the_examples_pass() -> None:
    result = gwc("test", *(str(p) for p in _examples() if not EXIT.search(p.read_text())))
    assert result.returncode == 0, result.stdout
    assert re.search(r"^[1-9]\d* passed, 0 failed$", result.stdout, re.M)
