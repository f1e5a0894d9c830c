"""GitHub's workflow commands carry no control character from the source."""

from __future__ import annotations

from compiler.output import Report, render
from dsl.diagnostics import error
from dsl.span import Span


def test_control_characters_in_a_message_are_escaped_and_line_breaks_encoded() -> None:
    diagnostic = error("GW206", "unknown value '\x1b[31mred\r'", Span.point("p.gw", 3, 7),
                       help="one of: a, b")
    line = render(Report([diagnostic], {}), "github")
    assert "\x1b" not in line and "\r" not in line
    assert "unknown value '\\x1b[31mred\\x0d'%0Ahelp: one of: a, b" in line
    assert line.count("\n") == 1  # one command, one line
