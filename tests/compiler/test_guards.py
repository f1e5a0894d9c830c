"""Guard blocks: what they check, what they lower to, the plans they join, their lints.

Every diagnostic is asserted with its code, position, message and underlined text.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.codes import lookup
from compiler.explain import explain, shown_webhook
from compiler.graph.document import from_json, to_json
from compiler.interpreter import interpret
from compiler.policy import EnvValue
from compiler.request import Request
from tests.conftest import MOCK, assert_diagnostic, codes, only

ROUTE = "route { otherwise -> a }\n"
BASE = MOCK + ROUTE  # lines 1-5: a blank line, a provider, two models, the route


def guard_lines(ctx) -> list[str]:  # type: ignore[no-untyped-def]
    return [f"{d.code} {d.span.line}:{d.span.column}" for d in ctx.diagnostics]


# ------------------------------------------------------------------- lowering

def test_a_guard_lowers_with_its_defaults_in_policy_order(compile_text) -> None:
    ctx = compile_text(BASE + """\
guard pii when team == "x" { detect = [email, credit_card, email] }
guard words {
  on       = both
  deny     = ["(?i)project \\\\w+", "^secret"]
  action   = flag
  webhook  = env("GUARD_URL")
  timeout  = 250ms
  on_error = allow
  mode     = shadow
}
""", env={"GUARD_URL": "https://check.internal"})
    assert ctx.diagnostics == []
    pii, words = ctx.policy.guards
    assert (pii.index, pii.name, pii.on, pii.detect, pii.deny, pii.action, pii.webhook,
            pii.timeout, pii.on_error, pii.mode) == (
        0, "pii", "input", ("email", "credit_card"), (), "deny", None, 2.0, "deny", "enforce")
    assert (pii.source.line, pii.source.column) == (6, 1)
    assert (words.index, words.on, words.deny, words.action, words.webhook, words.timeout,
            words.on_error, words.mode) == (
        1, "both", ("(?i)project \\w+", "^secret"), "flag", EnvValue("GUARD_URL"), 0.25,
        "allow", "shadow")
    assert words.inputs and words.outputs and pii.inputs and not pii.outputs


def test_a_guard_takes_a_when_like_every_block(compile_text) -> None:
    ctx = compile_text(BASE + 'guard g when teem == "x" { deny = ["x"] }\n')
    assert_diagnostic(ctx, "GW105", 6, 14, "unknown attribute 'teem' (did you mean 'team'?)",
                      underlined="teem")
    assert ctx.policy.guards == []
    ctx = compile_text(BASE + 'guard g when tokens == "many" { deny = ["x"] }\n')
    assert codes(ctx) == ["GW205"]


def test_the_plan_holds_every_guard_whose_when_holds(compile_text) -> None:
    ctx = compile_text(BASE + """\
guard everyone { detect = [email] }
guard streams when stream { deny = ["x"] }
guard research when team == "research" and not stream { detect = [secret] }
""")
    graph = ctx.graph
    assert graph is not None
    for request, expected in ((Request(), (0,)), (Request(stream=True), (0, 1)),
                              (Request(team="research"), (0, 2)),
                              (Request(team="research", stream=True), (0, 1))):
        assert graph.plan(request).guards == expected
        assert interpret(ctx.policy, request).guards == expected


def test_the_graph_file_carries_guards_and_reads_them_back(compile_text) -> None:
    ctx = compile_text(BASE + """\
guard pii { detect = [email]; action = redact; on = both }
guard hook when stream { webhook = env("HOOK"); on_error = deny; timeout = 1s }
""", env={"HOOK": "x"})
    assert ctx.graph is not None
    data = json.loads(json.dumps(to_json(ctx.graph)))
    assert [g["name"] for g in data["policy"]["guards"]] == ["pii", "hook"]
    loaded = from_json(data)
    assert loaded.policy.guards == ctx.policy.guards
    assert isinstance(loaded.policy.guards[1].webhook, EnvValue)
    assert loaded.plan(Request(stream=True)).guards == (0, 1)


# ------------------------------------------------------------- names, values

def test_guard_names_are_unique(compile_text) -> None:
    ctx = compile_text(BASE + 'guard g { deny = ["x"] }\nguard g { deny = ["y"] }\n')
    d = assert_diagnostic(ctx, "GW103", 7, 7, "guard 'g' is declared twice", underlined="g")
    assert (d.related[0].span.line, d.related[0].span.column) == (6, 7)
    assert [g.deny for g in ctx.policy.guards] == [("x",)]


def test_a_guard_may_share_a_name_with_a_model(compile_text) -> None:
    assert compile_text(BASE + 'guard a { deny = ["x"] }\n').diagnostics == []


@pytest.mark.parametrize("body", ["", "detect = []", "deny = []; on = both",
                                  "on_error = allow"])
def test_a_guard_must_check_something(compile_text, body: str) -> None:
    ctx = compile_text(BASE + f"guard quiet {{ {body} }}\n")
    assert_diagnostic(ctx, "GW108", 6, 1,
                      "guard 'quiet' checks nothing: it needs 'detect', 'deny' or 'webhook'",
                      underlined="guard quiet")


def test_a_check_that_failed_to_check_is_not_also_missing(compile_text) -> None:
    ctx = compile_text(BASE + "guard g { detect = [emial] }\n")
    assert codes(ctx) == ["GW206"]


def test_an_unknown_detector_suggests_the_closest(compile_text) -> None:
    ctx = compile_text(BASE + 'guard g { detect = [email, credit-card, "ssn"] }\n')
    assert_diagnostic(ctx, "GW206", 6, 28, "unknown detector 'credit-card' (did you mean "
                      "'credit_card'?)", underlined="credit-card")
    assert_diagnostic(ctx, "GW201", 6, 41, "expected a detector's name, found a string "
                      "(did you mean 'ssn'?)", underlined='"ssn"')


def test_the_compiler_knows_the_detectors_the_gateway_runs() -> None:
    from compiler.values import DETECTORS
    from policies.detectors import NAMES

    assert DETECTORS == NAMES


@pytest.mark.parametrize(("pattern", "reason"), [
    ('"(a"', "missing ): (a"),
    ('"(\\\\w)\\\\1"', "invalid escape sequence: \\1"),  # a backreference
    ('"x(?=y)"', "invalid perl operator: (?="),          # lookahead
    ('"(?<!a)b"', "invalid perl operator: (?<!"),        # lookbehind
])
def test_a_deny_pattern_must_run_on_re2(compile_text, pattern: str, reason: str) -> None:
    ctx = compile_text(BASE + f'guard g {{ deny = ["ok", {pattern}] }}\n')
    d = assert_diagnostic(ctx, "GW204", 6, 25, f"invalid regular expression: {reason}",
                          underlined=pattern)
    assert "no backreferences or lookaround" in d.help


def test_matches_and_deny_say_the_same_of_a_pattern(compile_text) -> None:
    ctx = compile_text(MOCK + 'route {\n  when model matches "x(?=y)" -> a\n  otherwise -> a\n}\n'
                       'guard g { deny = ["x(?=y)"] }\n')
    assert [d.message for d in ctx.diagnostics] == ["invalid regular expression: invalid perl "
                                                    "operator: (?="] * 2


@pytest.mark.parametrize(("name", "value", "message"), [
    ("on", "inbound", "unknown value 'inbound'"),
    ("action", "block", "unknown value 'block'"),
    ("on_error", "fail", "unknown value 'fail'"),
    ("mode", "enforced", "unknown value 'enforced' (did you mean 'enforce'?)"),
])
def test_choices_are_checked(compile_text, name: str, value: str, message: str) -> None:
    line = f'guard g {{ deny = ["x"]; {name} = {value} }}'
    ctx = compile_text(BASE + line + "\n")
    assert_diagnostic(ctx, "GW206", 6, line.index(value) + 1, message, underlined=value)


def test_timeout_is_a_duration_and_webhook_a_url(compile_text) -> None:
    ctx = compile_text(BASE + 'guard g { webhook = "check.internal/v1"; timeout = 2; '
                              'on_error = deny }\n')
    assert [(d.code, d.span.column, d.message) for d in ctx.diagnostics] == [
        ("GW201", 21, "expected an http:// or https:// URL, found 'check.internal/v1'"),
        ("GW201", 52, "expected a duration, found a plain number (did you mean '2s'?)")]
    ctx = compile_text(BASE + 'guard g { webhook = 5 }\n')
    assert_diagnostic(ctx, "GW201", 6, 21, "expected a URL or env(...), found a plain number")


def test_expect_guards_names_declared_guards(compile_text) -> None:
    ctx = compile_text(BASE + 'guard pii { detect = [email] }\n'
                       'test "t" { given { team = "x" } expect { guards = [pii, ppi] } }\n')
    d = assert_diagnostic(ctx, "GW112", 7, 57, "unknown guard 'ppi' (did you mean 'pii'?)",
                          underlined="ppi")
    assert d.help == "declared: pii"


def test_a_guard_a_syntax_error_took_is_not_reported_unknown(compile_text) -> None:
    ctx = compile_text(BASE + 'guard pii when team == {\n  detect = [email]\n}\n'
                       'test "t" { given { team = "x" } expect { guards = [pii] } }\n')
    assert codes(ctx) == ["GW001"]


# ---------------------------------------------------------------------- lints

def test_a_guard_webhook_over_plain_http_is_an_error_said_once(compile_text) -> None:
    ctx = compile_text(BASE + 'guard g { webhook = "http://10.0.0.7/check"; on_error = deny }\n'
                       'notify ops { webhook = "http://10.0.0.8/hook" }\n')
    assert_diagnostic(ctx, "GW312", 6, 21, "'http://10.0.0.7/check' is plain http to "
                      "'10.0.0.7': the text this guard checks would cross the network "
                      "unencrypted", underlined='"http://10.0.0.7/check"')
    assert only(ctx, "GW312").is_error
    d = assert_diagnostic(ctx, "GW308", 7, 24)  # a notify's webhook is still only warned of
    assert not d.is_error


def test_a_guard_webhook_on_this_machine_may_be_plain_http(compile_text) -> None:
    ctx = compile_text(BASE + 'guard g { webhook = "http://127.0.0.1:9000/x"; on_error = deny }'
                              '\nguard h { webhook = "http://localhost/x"; on_error = allow }\n')
    assert ctx.diagnostics == []


def test_a_webhook_guard_should_say_what_its_failure_does(compile_text) -> None:
    ctx = compile_text(BASE + 'guard g { webhook = "https://check.internal/v1" }\n')
    d = assert_diagnostic(ctx, "GW313", 6, 11, "guard 'g' has a webhook but no 'on_error': by "
                          "default (deny) a request is refused when the webhook fails or is "
                          "slow", underlined='webhook = "https://check.internal/v1"')
    assert not d.is_error and "`on_error = allow`" in d.help


def test_webhook_settings_do_nothing_without_a_webhook(compile_text) -> None:
    ctx = compile_text(BASE + "guard g {\n  detect   = [ssn]\n  timeout  = 1s\n"
                              "  on_error = allow\n}\n")
    assert [(d.code, d.span.line, d.span.column, d.message) for d in ctx.diagnostics] == [
        ("GW314", 8, 3, "'timeout' does nothing on a guard without a webhook"),
        ("GW314", 9, 3, "'on_error' does nothing on a guard without a webhook")]


def test_a_deny_pattern_found_in_every_text_is_warned_of(compile_text) -> None:
    ctx = compile_text(BASE + 'guard g { deny = ["password|", "[0-9]*", "sk-[a-z]*", "^"] }\n')
    assert [(d.code, d.span.column, d.is_error) for d in ctx.diagnostics] == [
        ("GW316", 19, False), ("GW316", 32, False), ("GW316", 55, False)]
    assert ctx.diagnostics[0].message == (
        "the pattern 'password|' matches an empty text, so it is found in every text: "
        "the guard refuses every request it checks")


def test_a_guard_whose_when_contradicts_itself_never_applies(compile_text) -> None:
    ctx = compile_text(BASE + 'guard g when tokens > 10k and tokens < 1k { deny = ["x"] }\n')
    assert_diagnostic(ctx, "GW315", 6, 14, "guard 'g' never applies: no request satisfies "
                      "its condition", underlined="tokens > 10k and tokens < 1k")


SHADOWING = BASE + """\
guard pii { detect = [email, phone]; deny = ["x", "y"]; on = both }
"""


@pytest.mark.parametrize("later", [
    'guard later when team == "t" { detect = [email]; action = redact }',
    'guard later { detect = [phone]; deny = ["y"]; on = output; mode = shadow }',
    'guard later when stream or tools { deny = ["x", "y"]; on = both }',
])
def test_a_guard_an_earlier_one_refuses_for_is_shadowed(compile_text, later: str) -> None:
    ctx = compile_text(SHADOWING + later + "\n")
    d = assert_diagnostic(ctx, "GW315", 7, 1, "guard 'later' never acts: the guard 'pii' at 6:1 "
                          "refuses everything it checks for, on every request it applies to",
                          underlined="guard later")
    assert [(r.span.line, r.span.column, r.message) for r in d.related] == [
        (6, 1, "refuses first")]


@pytest.mark.parametrize("later", [
    'guard later { detect = [email, ssn] }',                    # a detector pii lacks
    'guard later { deny = ["z"] }',                             # a pattern pii lacks
    'guard later { deny = ["X"] }',                             # patterns compare as written
    'guard later { webhook = "https://h.test/c"; on_error = deny }',  # a webhook pii lacks
])
def test_a_guard_that_checks_more_is_not_shadowed(compile_text, later: str) -> None:
    assert "GW315" not in codes(compile_text(SHADOWING + later + "\n"))


@pytest.mark.parametrize("earlier", [
    'guard pii { detect = [email]; action = redact }',          # redacts, refuses nothing
    'guard pii { detect = [email]; mode = shadow }',            # only reports
    'guard pii { detect = [email]; on = output }',              # another direction
    'guard pii when team == "t" and stream { detect = [email] }',  # fewer requests
    'guard pii when model matches "^m" { detect = [email] }',   # unknown requests
])
def test_a_guard_that_refuses_less_shadows_nothing(compile_text, earlier: str) -> None:
    ctx = compile_text(BASE + earlier + "\nguard later when team == \"t\" { detect = [email] }\n")
    assert "GW315" not in codes(ctx)


def test_a_regex_hides_a_shadowed_guard_rather_than_invent_one(compile_text) -> None:
    ctx = compile_text(BASE + 'guard a when model matches "^m" { deny = ["x"] }\n'
                              'guard b when model matches "^m" { deny = ["x"] }\n')
    assert "GW315" in codes(ctx)  # the same regex on both: exact
    ctx = compile_text(BASE + 'guard a when model matches "^m" { deny = ["x"] }\n'
                              'guard b when model matches "^mo" { deny = ["x"] }\n')
    assert "GW315" not in codes(ctx)  # "^mo" implies "^m", which the graph cannot see


@pytest.mark.parametrize(("hooks", "shadowed"), [
    (('on_error = deny; timeout = 1s', 'on_error = allow; timeout = 1s'), True),
    (('on_error = deny; timeout = 1s', 'on_error = deny; timeout = 3s'), True),
    (('on_error = allow; timeout = 1s', 'on_error = deny; timeout = 1s'), False),
    (('on_error = deny; timeout = 3s', 'on_error = deny; timeout = 1s'), False),
])
def test_a_shared_webhook_shadows_only_when_the_earlier_fails_closed_sooner(
        compile_text, hooks: tuple[str, str], shadowed: bool) -> None:
    url = 'webhook = "https://h.test/c"'
    ctx = compile_text(BASE + f"guard a {{ {url}; {hooks[0]} }}\n"
                              f"guard b when stream {{ {url}; {hooks[1]} }}\n")
    assert ("GW315" in codes(ctx)) == shadowed


def test_a_guard_with_a_bad_attribute_is_left_out_of_shadowing(compile_text) -> None:
    ctx = compile_text(BASE + 'guard a { deny = ["x"]; on = bogus }\n'
                              'guard b { deny = ["x"]; deyn = ["y"] }\n'
                              'guard c { deny = ["x"] }\n')
    assert sorted(codes(ctx)) == ["GW104", "GW206"]


# ---------------------------------------------------------- explain and test

def test_explain_lists_the_guards_a_request_meets(compile_text) -> None:
    ctx = compile_text(BASE + """\
guard pii { detect = [email, phone]; action = redact }
guard hook when stream { on = both; webhook = "https://u:p@check.internal:8443/v1?k=s"; \
on_error = allow; timeout = 500ms }
guard env-hook when tools { webhook = env("HOOK", "https://secret.test/token"); \
on_error = deny; deny = ["x"]; mode = shadow }
""", env={"HOOK": "x"})
    assert ctx.graph is not None
    result = explain(ctx.graph, Request(stream=True, tools=True))
    file = ctx.policy.guards[0].source.file
    assert result["guards"] == [
        {"name": "pii", "on": "input", "detect": ["email", "phone"], "deny": [],
         "action": "redact", "webhook": None, "timeout": None, "on_error": None,
         "mode": "enforce", "source": {"file": file, "line": 6}},
        {"name": "hook", "on": "both", "detect": [], "deny": [], "action": "deny",
         "webhook": "https://check.internal:8443/...", "timeout": "500ms",
         "on_error": "allow", "mode": "enforce", "source": {"file": file, "line": 7}},
        {"name": "env-hook", "on": "input", "detect": [], "deny": ["x"], "action": "deny",
         "webhook": 'env("HOOK")', "timeout": "2s", "on_error": "deny", "mode": "shadow",
         "source": {"file": file, "line": 8}}]
    assert [g["name"] for g in explain(ctx.graph, Request())["guards"]] == ["pii"]


@pytest.mark.parametrize(("webhook", "shown"), [
    ("https://check.internal", "https://check.internal"),
    ("https://check.internal/", "https://check.internal"),
    ("http://[::1]:9000/x", "http://[::1]:9000/..."),
    ("https://hooks.example/services/T0/B0/XXXX", "https://hooks.example/..."),
    ("https://check.internal#frag", "https://check.internal/..."),
    (EnvValue("HOOK", "https://a.test/secret"), 'env("HOOK")'),
    ("http://[nope/x?key=k", "..."),
    ("secret-token", "..."),
    (None, None),
])
def test_a_webhook_is_shown_without_what_may_be_secret(webhook: str | EnvValue | None,
                                                     shown: str | None) -> None:
    assert shown_webhook(webhook) == shown


def gwc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], capture_output=True,
                          text=True, env={"PATH": os.environ.get("PATH", ""), "NO_COLOR": "1"})


GUARDED = BASE + """\
guard pii { detect = [email, credit_card]; action = redact }
guard moderation when stream { webhook = env("MODERATION_URL", "https://m.test/v1?key=k"); \
on_error = deny }
"""


def test_explain_shows_guards_in_text_and_json(tmp_path: Path) -> None:
    path = tmp_path / "p.gw"
    path.write_text(GUARDED)
    text = gwc("explain", str(path), "--request", '{"stream": true}')
    assert text.returncode == 0, text.stderr
    guard_lines = [line for line in text.stdout.splitlines() if line.startswith("guard:")]
    assert guard_lines == [
        f"guard:   pii on input: detect email, credit_card -> redact (enforce) at {path}:6",
        f'guard:   moderation on input: webhook env("MODERATION_URL") (timeout 2s, on_error '
        f"deny) (enforce) at {path}:7"]
    assert "m.test" not in text.stdout and "key=k" not in text.stdout
    plan = json.loads(gwc("explain", str(path), "--format", "json", "--request",
                          '{"stream": true}').stdout)
    assert [g["name"] for g in plan["guards"]] == ["pii", "moderation"]


def test_the_test_command_compares_guards_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "p.gw"
    path.write_text(GUARDED + """\
test "streams meet both" { given { stream = true } expect { guards = [moderation, pii] } }
test "others meet pii" { given { stream = false } expect { guards = [pii] } }
test "wrong" { given { stream = true } expect { guards = [pii]; route = [a] } }
test "none" { given { stream = true } expect { guards = [] } }
""")
    result = gwc("test", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"PASS {path}:8: streams meet both",
        f"PASS {path}:9: others meet pii",
        f"FAIL {path}:10: wrong: expected guards [pii], got [pii, moderation]",
        f"FAIL {path}:11: none: expected guards [], got [pii, moderation]",
        "2 passed, 2 failed"]


# --------------------------------------------------------------- explanations

GUARD_CODES = ["GW112", "GW204", "GW312", "GW313", "GW314", "GW315", "GW316"]
EXAMPLE = re.compile(r"## (Wrong|Right)\n\n```gw\n(.*?)```", re.S)


@pytest.mark.parametrize("code", GUARD_CODES)
def test_each_guard_codes_examples_show_it(compile_text, code: str) -> None:
    """The wrong example gives the code and the right one does not."""
    examples = dict(EXAMPLE.findall(lookup(code).body))
    preamble = MOCK if "route" in examples["Wrong"] else BASE
    wrong = compile_text(preamble + examples["Wrong"], env={"GUARD_URL": "x"})
    right = compile_text(preamble + examples["Right"], env={"GUARD_URL": "x"})
    assert code in codes(wrong), guard_lines(wrong)
    assert code not in codes(right), guard_lines(right)

