"""SARIF 2.1.0, the format GitHub code scanning uploads.

One run, one tool (`gwc`), its rules the diagnostic codes that occur, each
with the title and text of `gwc explain-code`.
"""

from __future__ import annotations

import json
from typing import Any

from compiler import codes
from compiler.output import Report
from dsl.span import Span

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _location(span: Span) -> dict[str, Any]:
    return {"physicalLocation": {
        "artifactLocation": {"uri": span.file.replace("\\", "/")},
        "region": {"startLine": span.line, "startColumn": span.column,
                   "endLine": span.end_line, "endColumn": span.end_column},
    }}


def render(report: Report) -> str:
    used = sorted({d.code for d in report.diagnostics})
    rules = []
    for code in used:
        entry = codes.lookup(code)
        rules.append({
            "id": code,
            "name": entry.name,
            "shortDescription": {"text": entry.title},
            "fullDescription": {"text": entry.summary},
            "help": {"text": entry.body, "markdown": entry.body},
            "defaultConfiguration": {"level": entry.level},
        })
    results = []
    for d in report.diagnostics:
        message = d.message + (f"\nhelp: {d.help}" if d.help else "")
        result: dict[str, Any] = {
            "ruleId": d.code,
            "ruleIndex": used.index(d.code),
            "level": d.severity.value,
            "message": {"text": message},
            "locations": [_location(d.span)],
        }
        if d.related:
            result["relatedLocations"] = [
                {"id": i, **_location(r.span), "message": {"text": r.message}}
                for i, r in enumerate(d.related, start=1)]
        results.append(result)
    document = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "gwc", "informationUri": "https://github.com/gwc/gwc",
                                "version": codes.VERSION, "rules": rules}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }
    return json.dumps(document, indent=2) + "\n"
