"""rustc-style text: location and message, the source line, carets, help and notes."""

from __future__ import annotations

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
    head = f"{span.file}:{span.line}:{span.column}: {label}: {paint('bold', d.message)}"
    lines = [head, *_excerpt(span, sources, paint, d.severity.value)]
    gutter = " " * len(str(span.line))
    if d.help:
        lines.append(f"{gutter} = {paint('help', 'help')}: {d.help}")
    for related in d.related:
        where = related.span
        lines.append(f"{gutter} = {paint('note', 'note')}: {related.message} at "
                     f"{where.file}:{where.line}:{where.column}")
    return "\n".join(lines) + "\n"


def _excerpt(span: Span, sources: dict[str, str], paint: Paint, style: str) -> list[str]:
    text = sources.get(span.file)
    if text is None:
        return []
    source_lines = text.split("\n")
    if not 1 <= span.line <= len(source_lines):
        return []
    line = source_lines[span.line - 1].rstrip("\r")
    start = min(span.column - 1, len(line))
    end = span.end_column - 1 if span.end_line == span.line else len(line)
    width = max(1, end - start)
    pad = "".join("\t" if ch == "\t" else " " for ch in line[:start])
    number = str(span.line)
    gutter = " " * len(number)
    return [f"{gutter} |", f"{number} | {line}", f"{gutter} | {pad}{paint(style, '^' * width)}"]
