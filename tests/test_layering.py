"""The import arrows of design.md's layout, read from the source: none runs back up.

dsl imports nothing of ours; compiler only dsl; policies nothing; runtime the
compiler through its one public face (compiler.compiled) and policies, never dsl.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

OURS = ("dsl", "compiler", "policies", "runtime")
ALLOWED = {
    "dsl": {"dsl"},
    "compiler": {"compiler", "dsl"},
    "policies": {"policies"},
    "runtime": {"runtime", "policies", "compiler.compiled"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", OURS)
def test_no_import_runs_back_up(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, name in _imports(path):
            if name.split(".")[0] not in OURS:
                continue
            if not any(name == allowed or name.startswith(allowed + ".")
                       for allowed in ALLOWED[package]):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    assert not wrong, "\n".join(wrong)
