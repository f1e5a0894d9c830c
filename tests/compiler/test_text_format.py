"""The text format: what reaches a terminal from a policy is shown, never obeyed."""

from __future__ import annotations

from compiler.output import Report, render
from dsl.diagnostics import error
from dsl.parser import parse
from dsl.span import Span


def rendered(source: str, span: Span, message: str = "bad") -> list[str]:
    report = Report([error("GW001", message, span, help="fix it")], {span.file: source})
    return render(report, "text").splitlines()


def test_control_characters_from_the_source_are_shown_escaped() -> None:
    source = 'route {\n  when endpoint == "\x1b[2J\rx" -> a\n}\n'
    lines = rendered(source, Span("p.gw", 2, 20, 2, 29), "unknown endpoint '\x1b[2J\rx'")
    text = "\n".join(lines)
    assert "\x1b" not in text and "\r" not in text
    assert lines[0] == "p.gw:2:20: error[GW001]: unknown endpoint '\\x1b[2J\\x0dx'"
    assert lines[2] == '2 |   when endpoint == "\\x1b[2J\\x0dx" -> a'
    # the caret stays under the string, and spans its shown width
    assert lines[3] == "  |                    " + "^" * 15
    assert lines[2].index('"') == lines[3].index("^")


def test_the_caret_stays_under_its_column_after_escapes_and_wide_characters() -> None:
    source = 'model a { name = "\x1b\x07日本" ; x = 1 }\n'
    lines = rendered(source, Span("p.gw", 1, 27, 1, 28))  # the `x`
    assert lines[2] == '1 | model a { name = "\\x1b\\x07日本" ; x = 1 }'
    caret = lines[3].index("^")
    shown_prefix = lines[2][:lines[2].index("; x") + 2]
    assert caret == len(shown_prefix) + 2  # 日本 are two columns each


def test_a_bidi_override_and_a_bad_character_token_are_escaped() -> None:
    _, diagnostics = parse('route { otherwise -> a }\n\x1b[31m\n', "p.gw")
    (d,) = diagnostics
    lines = render(Report([d], {"p.gw": 'route { otherwise -> a }\n\x1b[31m\n'}),
                   "text").splitlines()
    assert "\x1b" not in "\n".join(lines)
    assert lines[0] == "p.gw:2:1: error[GW002]: unexpected character '\\x1b'"
    assert lines[2] == "2 | \\x1b[31m" and lines[3] == "  | ^^^^"
    override = rendered('deny "\u202eevil"\n', Span("p.gw", 1, 6, 1, 12))
    assert override[2] == '1 | deny "\\u202eevil"' and override[3] == "  |      " + "^" * 11
