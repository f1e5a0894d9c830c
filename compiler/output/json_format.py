"""The JSON shape `interface.md` promises, plus each diagnostic's related spans."""

from __future__ import annotations

import json

from compiler.output import Report


def render(report: Report) -> str:
    items = []
    for d in report.diagnostics:
        s = d.span
        items.append({
            "file": s.file, "line": s.line, "column": s.column,
            "end_line": s.end_line, "end_column": s.end_column,
            "severity": d.severity.value, "code": d.code, "message": d.message, "help": d.help,
            "related": [{"file": r.span.file, "line": r.span.line, "column": r.span.column,
                         "message": r.message} for r in d.related],
        })
    document = {"diagnostics": items, "errors": report.errors, "warnings": report.warnings}
    return json.dumps(document, indent=2) + "\n"
