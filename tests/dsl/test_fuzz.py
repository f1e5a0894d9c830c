"""Whatever the input, the answer is diagnostics: never an exception."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.driver import check
from dsl.parser import parse, parse_bytes
from tests.conftest import ROOT

SEED = (ROOT / "examples" / "production.gw").read_text()
ALPHABET = st.sampled_from(list('{}[]()=;:,."#$%->< \n\tabcdefghijklmnopqrstuvwxyz0123456789_'))


@st.composite
def mutations(draw: st.DrawFn) -> str:
    """The production example with a few characters deleted, inserted or replaced."""
    text = SEED
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["delete", "insert", "replace"]))
        piece = draw(st.text(ALPHABET, min_size=1, max_size=4))
        if action == "delete":
            text = text[:at] + text[at + len(piece):]
        elif action == "insert":
            text = text[:at] + piece + text[at:]
        else:
            text = text[:at] + piece + text[at + len(piece):]
    return text


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutations())
def test_mutated_policies_only_ever_give_diagnostics(tmp_path: Path, text: str) -> None:
    (tmp_path / "common.gw").write_text((ROOT / "examples" / "common.gw").read_text())
    path = tmp_path / "p.gw"
    path.write_text(text)
    ctx = check(str(path), env={})
    assert all(d.code.startswith("GW") and d.help for d in ctx.diagnostics)
    if not ctx.syntax_ok:  # the rest is checked, but nothing is built from part of a policy
        assert ctx.graph is None and any(d.code < "GW100" or d.code == "GW110"
                                         for d in ctx.diagnostics)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_random_text_only_ever_gives_diagnostics(text: str) -> None:
    module, diagnostics = parse(text, "r.gw")
    assert module is not None or diagnostics
    assert all(d.help for d in diagnostics)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_only_ever_give_diagnostics(data: bytes) -> None:
    module, diagnostics = parse_bytes(data, "r.gw")
    assert module is not None or diagnostics
