"""rustc-style text: location and message, the source line, carets, help and notes.

Text that comes from a policy reaches a terminal here, so every character
that is not printable (an escape sequence, a carriage return, a bidi
override) is shown escaped, as `\x1b` or `\u202e`, and the caret is placed
by the width of what is shown: still under the column it points at.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from compiler.output import Report
from dsl.diagnostics import Diagnostic
from dsl.span import Span

Paint = Callable[[str, str], str]  # (style, text) -> text, coloured or not

_RESET = "\033[0m"
_STYLE = {"error": "\033[1;31m", "warning": "\033[1;33m", "help": "\033[1;36m",
          "note": "\033[1;34m", "bold": "\033[1m"}


def render(report: Report) -> str:
    paint = _painter(report.color)
    blocks = [_diagnostic(d, report.sources, paint) for d in report.diagnostics]
    if report.diagnostics:
        blocks.append(_plural(report.errors, "error") + ", " + _plural(report.warnings, "warning"))
    return "\n".join(blocks) + ("\n" if blocks else "")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _painter(color: bool) -> Paint:
    def paint(style: str, text: str) -> str:
        return f"{_STYLE[style]}{text}{_RESET}" if color else text
    return paint


def _diagnostic(d: Diagnostic, sources: dict[str, str], paint: Paint) -> str:
    span = d.span
    label = paint(d.severity.value, f"{d.severity.value}[{d.code}]")
    head = f"{shown(span.file)}:{span.line}:{span.column}: {label}: " \
           f"{paint('bold', shown(d.message))}"
    lines = [head, *_excerpt(span, sources, paint, d.severity.value)]
    gutter = " " * len(str(span.line))
    if d.help:
        lines.append(f"{gutter} = {paint('help', 'help')}: {shown(d.help)}")
    for related in d.related:
        where = related.span
        lines.append(f"{gutter} = {paint('note', 'note')}: {shown(related.message)} at "
                     f"{shown(where.file)}:{where.line}:{where.column}")
    return "\n".join(lines) + "\n"


def shown(text: str) -> str:
    """`text` with every character a terminal would act on, rather than print, escaped.

    Tabs are kept: they are how the source lines up.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == "\t" else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _width(text: str) -> int:
    """Terminal columns `text` takes once shown: escapes count their length,
    East Asian wide characters two, combining marks none."""
    if text.isascii() and text.isprintable():
        return len(text)
    width = 0
    for ch in shown(text):
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
    return width


def _excerpt(span: Span, sources: dict[str, str], paint: Paint, style: str) -> list[str]:
    text = sources.get(span.file)
    if text is None:
        return []
    source_lines = text.split("\n")
    if not 1 <= span.line <= len(source_lines):
        return []
    line = source_lines[span.line - 1].removesuffix("\r")
    start = min(span.column - 1, len(line))
    end = min(span.end_column - 1, len(line)) if span.end_line == span.line else len(line)
    width = max(1, _width(line[start:end]))
    pad = "".join("\t" if ch == "\t" else " " * _width(ch) for ch in line[:start])
    number = str(span.line)
    gutter = " " * len(number)
    return [f"{gutter} |", f"{number} | {shown(line)}",
            f"{gutter} | {pad}{paint(style, '^' * width)}"]
