"""GitHub Actions workflow commands: one `::error` or `::warning` line each."""

from __future__ import annotations

from compiler.output import Report
from compiler.output.text_format import shown


def _data(text: str) -> str:
    """A command's value: its own line breaks encoded as the runner decodes them, and
    any other control character from the source escaped, as in text output."""
    lines = [shown(line) for line in text.split("\n")]
    return "%0A".join(line.replace("%", "%25") for line in lines)


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def render(report: Report) -> str:
    lines = []
    for d in report.diagnostics:
        s = d.span
        message = d.message + (f"\nhelp: {d.help}" if d.help else "")
        lines.append(
            f"::{d.severity.value} file={_property(s.file)},line={s.line},col={s.column},"
            f"endLine={s.end_line},endColumn={s.end_column},title={_property(d.code)}"
            f"::{_data(message)}")
    return "".join(line + "\n" for line in lines)
