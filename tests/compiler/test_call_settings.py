"""The settings a call runs under: timeouts, health checks, resume and prefill.

What the language takes, what the policy lowers them to, the deployment the
runtime sees (a model's own value, else its provider's, else the default),
and the two lints that guard resume.
"""

from __future__ import annotations

from pathlib import Path

from compiler.compiled import CompiledPolicy, Timeouts, load
from tests.conftest import assert_diagnostic, codes

TIMED = """
provider up {
  type               = openai_compatible
  base_url           = "https://up.example/v1"
  timeout            = 20s
  connect_timeout    = 2s
  first_byte_timeout = 5s
  health {
    interval = 10s
    timeout  = 1s
  }
  retry { resume = true }
}
model quick { provider = up; idle_timeout = 3s; prefill = true }
model plain { provider = up; timeout = 90s }
route { otherwise -> plain, quick }
auth { mode = none }
"""


def test_timeouts_fold_model_over_provider_over_default(tmp_path: Path) -> None:
    (tmp_path / "p.gw").write_text(TIMED)
    policy: CompiledPolicy = load(str(tmp_path / "p.gw"), {})
    assert policy.deployments["quick"].timeouts == Timeouts(
        connect=2.0, first_byte=5.0, idle=3.0, total=20.0)
    assert policy.deployments["plain"].timeouts == Timeouts(
        connect=2.0, first_byte=5.0, idle=Timeouts().idle, total=90.0)
    provider = policy.providers["up"]
    assert provider.health is not None and provider.health.interval == 10.0
    assert provider.retry.resume and policy.deployments["quick"].model.prefill


def test_a_resumable_chain_checks_clean(compile_text) -> None:
    assert compile_text(TIMED).diagnostics == []


def test_resume_with_no_prefill_model_after_is_a_warning(compile_text) -> None:
    ctx = compile_text(TIMED.replace("; prefill = true", ""))
    assert_diagnostic(ctx, "GW309", 12, 11, underlined="resume = true")


def test_a_top_level_resume_is_checked_for_every_provider_that_inherits_it(compile_text) -> None:
    ctx = compile_text("""
        retry { resume = true }
        provider up { type = openai_compatible; base_url = "https://up.example/v1" }
        model a { provider = up }
        model b { provider = up }
        route { otherwise -> a, b }
        auth { mode = none }
    """)
    assert_diagnostic(ctx, "GW309", 2, 9, underlined="resume = true")


def test_prefill_on_openais_own_api_is_a_warning(compile_text) -> None:
    ctx = compile_text("""
        provider openai { type = openai }
        model gpt { provider = openai; prefill = true }
        route { otherwise -> gpt }
        auth { mode = none }
    """)
    assert codes(ctx) == ["GW310"]
    assert_diagnostic(ctx, "GW310", 3, 32, underlined="prefill = true")


def test_timeouts_are_durations(compile_text) -> None:
    ctx = compile_text(TIMED.replace("first_byte_timeout = 5s", "first_byte_timeout = 5M"))
    assert_diagnostic(ctx, "GW201", 7, 24,
                      "expected a duration, found a count (did you mean '5m'?)", "5M")
