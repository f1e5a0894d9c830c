"""Helpers shared by the tests: compile a policy from text, assert on a diagnostic."""

from __future__ import annotations

import gc
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from compiler.context import Context
from compiler.driver import check
from dsl.diagnostics import Diagnostic

pytest_plugins = ["tests.services"]  # the real Redis and PostgreSQL fixtures

ROOT = Path(__file__).resolve().parent.parent
SHARED_EXAMPLES = ROOT.parent / "shared" / "spec" / "examples"

MOCK = """
provider local { type = mock }
model a { provider = local; input = $1/1M; output = $2/1M }
model b { provider = local; input = $1/1M; output = $2/1M }
"""


@pytest.fixture(scope="module", autouse=True)
def collect_leaked_sockets() -> Iterator[None]:
    """Collect, after each test module, the sockets of the SDK clients it left open.

    An `openai.OpenAI` or `anthropic.Anthropic` a test does not close keeps a
    pooled socket until the garbage collector frees it, whenever that runs: it may
    be during another module's test, which then fails on the socket's
    ResourceWarning (`filterwarnings = error`) for a leak not its own (CI saw it
    once, in the guards' hypothesis test). Collected here, that warning alone is
    ignored; any other ResourceWarning, and any unclosed transport or file, still
    fails. After each module, not each test: a full collection after every test
    adds a minute to the suite.
    """
    yield
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed <socket", ResourceWarning)
        gc.collect()


@pytest.fixture
def compile_text(tmp_path: Path) -> Callable[..., Context]:
    """Check a policy given as text (dedented), written to a file called policy.gw."""
    def run(text: str, *, files: dict[str, str] | None = None, env: dict[str, str] | None = None,
            name: str = "policy.gw") -> Context:
        for other, body in (files or {}).items():
            (tmp_path / other).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / other).write_text(textwrap.dedent(body))
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return check(str(path), env=env or {})
    return run


def only(ctx: Context, code: str) -> Diagnostic:
    """The one diagnostic with this code; fails listing all of them otherwise."""
    found = [d for d in ctx.diagnostics if d.code == code]
    assert len(found) == 1, f"expected one {code}, got: " + "; ".join(
        f"{d.code} {d.span} {d.message}" for d in ctx.diagnostics)
    return found[0]


def assert_diagnostic(ctx: Context, code: str, line: int, column: int, message: str | None = None,
                      underlined: str | None = None) -> Diagnostic:
    """Code, position, message and the exact text under the carets, together."""
    d = only(ctx, code)
    assert (d.span.line, d.span.column) == (line, column), f"{code} at {d.span}: {d.message}"
    if message is not None:
        assert d.message == message
    if underlined is not None:
        text = ctx.sources[d.span.file].split("\n")[d.span.line - 1]
        assert text[d.span.column - 1: d.span.end_column - 1] == underlined
    return d


def codes(ctx: Context) -> list[str]:
    return [d.code for d in ctx.diagnostics]
