"""`gwc` as a user runs it: a subprocess, its exit code and its output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from compiler import codes
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
BROKEN = 'provider p { type = mock }\nmodel a { provider = p }\nroute { otherwise -> b }\n'
WARNED = ('provider p { type = mock }\nmodel a { provider = p }\n'
          'route {\n  when team == "x" -> a\n}\n')


def gwc(*args: str, cwd: Path | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def policy(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(text: str, name: str = "p.gw") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


# ----------------------------------------------------------------- check

def test_check_exit_codes(policy) -> None:  # type: ignore[no-untyped-def]
    assert gwc("check", str(EXAMPLES / "quickstart.gw")).returncode == 0
    assert gwc("check", policy(BROKEN)).returncode == 1
    warned = policy(WARNED, "w.gw")
    assert gwc("check", warned).returncode == 0
    assert gwc("check", "--strict", warned).returncode == 1
    missing = gwc("check", "/nonexistent/x.gw")
    assert missing.returncode == 2
    assert missing.stderr == "gwc: cannot read '/nonexistent/x.gw': No such file or directory\n"
    assert gwc("check").returncode == 2
    assert gwc("check", "--format", "xml", warned).returncode == 2


@pytest.mark.parametrize("command", ["check", "test", "fmt"])
def test_a_file_on_the_command_line_must_be_a_regular_file_of_policy_size(
        tmp_path: Path, command: str) -> None:
    fifo, folder, big = tmp_path / "fifo.gw", tmp_path / "folder.gw", tmp_path / "big.gw"
    os.mkfifo(fifo)
    folder.mkdir()
    with open(big, "wb") as handle:
        handle.truncate(5 << 20)
    for path, reason in ((fifo, "not a regular file"), ("/dev/zero", "not a regular file"),
                         (folder, "it is a directory"),
                         (big, "larger than 4 MiB, too large for a policy")):
        result = gwc(command, str(path), timeout=20)  # a FIFO must not be waited on
        assert result.returncode == 2, (path, result.stderr)
        assert result.stderr == f"gwc: cannot read '{path}': {reason}\n"


@pytest.mark.parametrize("command", [["compile"], ["explain", "--request", "{}"]])
def test_a_graph_command_refuses_what_is_not_a_policy_file(tmp_path: Path,
                                                          command: list[str]) -> None:
    big = tmp_path / "big.gw"
    with open(big, "wb") as handle:
        handle.truncate(5 << 20)
    for path in (big, "/dev/zero"):
        result = gwc(command[0], str(path), *command[1:], timeout=20)
        assert result.returncode == 2 and result.stderr.startswith(f"gwc: cannot read '{path}'")


def test_syntax_errors_do_not_hide_the_other_problems(policy) -> None:  # type: ignore[no-untyped-def]
    path = policy('provider local {\n  type    = mock\n  timeout = 5M\n}\n'
                  'model fast { provider = local }\nmodel smart {\n  provider = local\n\n'
                  'route {\n  when model == "smart" -> smart\n  otherwise -> fats\n}\n')
    result = gwc("check", "--format", "json", path)
    assert result.returncode == 1
    found = [(d["code"], d["line"]) for d in json.loads(result.stdout)["diagnostics"]]
    assert found == [("GW201", 3), ("GW006", 6), ("GW101", 11)]
    for command in (["compile", path], ["explain", path, "--request", "{}"], ["test", path]):
        refused = gwc(*command)
        assert refused.returncode == 1 and "GW006" in refused.stderr, command
        assert refused.stdout in (
            "", f"FAIL {path}: the policy does not check\n0 passed, 1 failed\n")


def test_check_json_has_the_documented_shape(policy) -> None:  # type: ignore[no-untyped-def]
    result = gwc("check", "--format", "json", policy(BROKEN))
    report = json.loads(result.stdout)
    assert report["errors"] == 1 and report["warnings"] == 0
    (d,) = report["diagnostics"]
    assert {k: d[k] for k in ("line", "column", "end_line", "end_column", "severity", "code")} == {
        "line": 3, "column": 22, "end_line": 3, "end_column": 23, "severity": "error",
        "code": "GW101"}
    assert set(d) >= {"file", "message", "help"}


def test_check_sarif_is_sarif_2_1_0(policy) -> None:  # type: ignore[no-untyped-def]
    sarif = json.loads(gwc("check", "--format", "sarif", policy(WARNED)).stdout)
    assert sarif["version"] == "2.1.0"
    (run,) = sarif["runs"]
    rules = run["tool"]["driver"]["rules"]
    (result,) = run["results"]
    assert rules[result["ruleIndex"]]["id"] == result["ruleId"] == "GW302"
    assert result["level"] == "warning"
    region = result["locations"][0]["physicalLocation"]["region"]
    assert (region["startLine"], region["startColumn"]) == (3, 1)


def test_an_imported_file_given_too_is_checked_through_its_importer() -> None:
    result = gwc("check", "common.gw", "production.gw", cwd=EXAMPLES)
    assert result.returncode == 0
    assert "GW109" not in result.stdout
    alone = gwc("check", "common.gw", cwd=EXAMPLES)
    assert alone.returncode == 1 and "error[GW109]: the policy has no 'route' block" in alone.stdout


def test_check_does_not_load_the_gateway() -> None:
    probe = ("import sys\nfrom compiler.cli import main\nmain(['check', sys.argv[1]])\n"
             "heavy = [m for m in sys.modules if m.split('.')[0] in "
             "('runtime', 'policies', 'numpy', 'starlette', 'httpx', 'pydantic', 'uvicorn',"
             " 'interegular', 'jsonschema')]\n"
             "print(heavy)\n")
    result = subprocess.run([sys.executable, "-c", probe, str(EXAMPLES / "production.gw")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------ explain-code

def _codes_in_source() -> set[str]:
    found: set[str] = set()
    for folder in ("dsl", "compiler"):
        for path in (ROOT / folder).rglob("*.py"):
            found |= set(re.findall(r'"(GW\d{3})"', path.read_text()))
    return found


def test_every_code_the_compiler_emits_is_explained() -> None:
    emitted = _codes_in_source()
    assert emitted <= set(codes.known())
    for code in emitted:
        entry = codes.lookup(code)
        assert "## Wrong" in entry.body and "## Right" in entry.body, code
        assert entry.level in ("error", "warning")


def test_explain_code() -> None:
    result = gwc("explain-code", "gw101")
    assert result.returncode == 0
    assert result.stdout.startswith("GW101: unknown model or pool (error)\n")
    unknown = gwc("explain-code", "GW999")
    assert unknown.returncode == 2 and "unknown code 'GW999'" in unknown.stderr


# -------------------------------------------------------------------- fmt

def test_fmt_check_diff_and_rewrite(policy) -> None:  # type: ignore[no-untyped-def]
    path = policy("route{otherwise->a}\n")
    assert gwc("fmt", "--check", path).returncode == 1
    diff = gwc("fmt", "--diff", path)
    assert diff.returncode == 0 and "+route {" in diff.stdout
    assert Path(path).read_text() == "route{otherwise->a}\n"
    assert gwc("fmt", path).returncode == 0
    assert Path(path).read_text() == "route {\n  otherwise -> a\n}\n"
    assert gwc("fmt", "--check", path).returncode == 0


def test_fmt_check_says_so_when_all_is_well(policy) -> None:  # type: ignore[no-untyped-def]
    files = sorted(str(p) for p in EXAMPLES.glob("*.gw"))
    clean = gwc("fmt", "--check", *files)
    assert clean.returncode == 0 and clean.stdout == ""
    assert clean.stderr == f"{len(files)} files already formatted\n"
    one = gwc("fmt", "--check", files[0])
    assert one.returncode == 0 and one.stderr == "1 file already formatted\n"
    messy = policy("route{otherwise->a}\n")
    mixed = gwc("fmt", "--check", messy, *files)
    assert mixed.returncode == 1 and mixed.stdout == f"would reformat {messy}\n"
    assert mixed.stderr == f"1 file would be reformatted, {len(files)} files already formatted\n"


def test_fmt_leaves_a_file_that_does_not_parse_alone(policy) -> None:  # type: ignore[no-untyped-def]
    path = policy("route { otherwise -> }\n")
    result = gwc("fmt", path)
    assert result.returncode == 1 and "error[GW001]" in result.stderr
    assert Path(path).read_text() == "route { otherwise -> }\n"


# ----------------------------------------------------------- compile/schema

def test_compile_writes_a_graph_that_satisfies_the_schema(tmp_path: Path) -> None:
    out = tmp_path / "graph.json"
    result = gwc("compile", str(EXAMPLES / "production.gw"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    schema = json.loads(gwc("schema").stdout)
    graph = json.loads(out.read_text())
    jsonschema.validate(graph, schema)
    assert graph["format"] == "gwc-graph/1" and re.fullmatch(r"[0-9a-f]{12}", graph["version"])


def test_compile_refuses_a_broken_policy(policy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "graph.json"
    result = gwc("compile", policy(BROKEN), "-o", str(out))
    assert result.returncode == 1 and "GW101" in result.stderr
    assert not out.exists()


def test_a_tampered_graph_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "graph.json"
    gwc("compile", str(EXAMPLES / "quickstart.gw"), "-o", str(out))
    graph = json.loads(out.read_text())
    graph["root"] = len(graph["nodes"]) + 5
    out.write_text(json.dumps(graph))
    result = gwc("explain", str(out), "--request", "{}")
    assert result.returncode == 1 and "the root is not a node" in result.stderr
    out.write_text('{"format": "gwc-graph/1"}')
    result = gwc("explain", str(out), "--request", "{}")
    assert result.returncode == 1 and "not a gwc graph" in result.stderr


# ---------------------------------------------------------------- explain

REQUEST = json.dumps({"model": "smart", "team": "research", "key": "ci", "temperature": 0.2})


def test_explain_json_has_the_documented_shape() -> None:
    result = gwc("explain", str(EXAMPLES / "production.gw"), "--format", "json",
                 "--request", REQUEST)
    assert result.returncode == 0
    plan = json.loads(result.stdout)
    assert set(plan) == {"route", "deny", "rule", "quotas", "budgets", "guards", "cache",
                         "path"}
    assert plan["route"] == ["claude-sonnet", "gpt-4o", "gpt-4o-mini"]
    assert plan["deny"] is None
    assert plan["rule"] == {"file": str(EXAMPLES / "production.gw"), "line": 17}
    assert [q["subject"] for q in plan["quotas"]] == ["per key", "per team"]
    assert [b["subject"] for b in plan["budgets"]] == ['team "research"']
    assert plan["cache"]["mode"] == "semantic"
    assert [g["name"] for g in plan["guards"]] == ["pii", "secrets"]  # not legal's own
    assert plan["guards"][0] == {
        "name": "pii", "on": "both", "detect": ["email", "phone", "credit_card", "iban"],
        "deny": [], "action": "redact", "webhook": None, "timeout": None, "on_error": None,
        "mode": "enforce", "source": plan["guards"][0]["source"]}
    assert plan["path"] and all({"node", "test"} == set(step) for step in plan["path"])


def test_explain_names_each_test_on_the_path_once() -> None:
    result = gwc("explain", str(EXAMPLES / "production.gw"), "--format", "json",
                 "--request", REQUEST)
    tests = [step["test"] for step in json.loads(result.stdout)["path"]]
    assert "team is 'research'" in tests and "model is 'smart'" in tests
    assert len(tests) == len(set(tests)), tests
    text = gwc("explain", str(EXAMPLES / "production.gw"), "--request", REQUEST).stdout
    (path,) = [line for line in text.splitlines() if line.startswith("path:")]
    assert path.count("team is 'research'") == 1 and path.count("model is 'smart'") == 1


def test_explain_resolves_requested_and_keeps_pools() -> None:
    def route(request: dict[str, object]) -> list[str]:
        out = gwc("explain", str(EXAMPLES / "production.gw"), "--format", "json",
                  "--request", json.dumps(request))
        return json.loads(out.stdout)["route"]  # type: ignore[no-any-return]
    assert route({"model": "gemini-pro", "team": "x"}) == ["gemini-pro", "gpt-4o-mini"]
    assert route({"model": "nothing-declared"}) == ["chat-cheap"]


def test_explain_from_the_compiled_graph_matches_the_policy(tmp_path: Path) -> None:
    out = tmp_path / "graph.json"
    gwc("compile", str(EXAMPLES / "production.gw"), "-o", str(out))
    from_policy = gwc("explain", str(EXAMPLES / "production.gw"), "--request", REQUEST)
    from_graph = gwc("explain", str(out), "--request", REQUEST)
    assert from_policy.stdout == from_graph.stdout != ""


@pytest.mark.parametrize(("request_text", "message"), [
    ("{not json", "--request is not JSON"),
    ('{"modle": "x"}', "unknown request field 'modle'"),
    ('{"tokens": "many"}', "request field 'tokens' must be a number"),
])
def test_explain_rejects_a_bad_request(request_text: str, message: str) -> None:
    result = gwc("explain", str(EXAMPLES / "quickstart.gw"), "--request", request_text)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------- test

def test_the_test_command_reports_each_test_and_a_summary(policy) -> None:  # type: ignore[no-untyped-def]
    path = policy('provider p { type = mock }\nmodel a { provider = p }\nmodel b { provider = p }\n'
                  'route {\n  when team == "x" -> a\n  otherwise -> b\n}\n'
                  'test "x goes to a" { given { team = "x" } expect { route = [a] } }\n'
                  'test "y goes to a" { given { team = "y" } expect { route = [a] } }\n')
    result = gwc("test", path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"PASS {path}:8: x goes to a"
    assert lines[1] == f"FAIL {path}:9: y goes to a: expected route [a], got [b]"
    assert lines[-1] == "1 passed, 1 failed"


def test_the_examples_tests_pass() -> None:
    result = gwc("test", *(str(p) for p in sorted(EXAMPLES.glob("*.gw"))))
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "9 passed, 0 failed"
