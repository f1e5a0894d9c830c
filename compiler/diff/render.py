"""`gwc diff`'s changes for people (text, markdown), programs (json), code scanning
(sarif) and GitHub Actions (github): `render(found, fmt) -> str`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from compiler import codes
from compiler.diff import Found
from compiler.diff.kinds import KINDS, Change
from compiler.output.github_format import _data, _property
from compiler.output.sarif_format import SCHEMA
from compiler.policy import Source

FORMATS = ("text", "json", "sarif", "github", "markdown")
NOTHING = "no request changes plan"


def render(found: Sequence[Found], fmt: str) -> str:
    return {"text": _text, "json": _json, "sarif": _sarif, "github": _github,
            "markdown": _markdown}[fmt](found)


def _where(source: Source | None) -> dict[str, Any] | None:
    return {"file": source.file, "line": source.line} if source is not None else None


def _at(source: Source | None) -> str:
    return f"{source.file}:{source.line}" if source is not None else "(none)"


def _route(route: tuple[str, ...], deny: str | None) -> str:
    if deny is not None:
        return f'deny "{deny}"'
    return " -> ".join(route) if route else "no route (404)"


def request_json(fields: dict[str, Any]) -> str:
    return json.dumps(fields, separators=(",", ":"))


def _is_route(change: Change) -> bool:
    return change.kind in KINDS[:5]


def _moves(item: Found) -> str:
    """The traffic's part in a change, in words."""
    if item.share is None:
        return ""
    said = f"{item.share * 100:.1f}% of the logged requests"
    c = item.change
    if c.kind == "route-changed" and c.old_route and c.new_route:
        said += f" move from {c.old_route[0]} to {c.new_route[0]}"
    else:
        said += " fall in this class"
    if item.usd_week is not None:
        sign = "+" if item.usd_week >= 0 else "-"
        amount = abs(item.usd_week)
        said += f"; est. {sign}${amount:,.0f}/week" if amount >= 100 else \
            f"; est. {sign}${amount:,.2f}/week"
    return said


def _text(found: Sequence[Found]) -> str:
    if not found:
        return NOTHING + "\n"
    blocks = []
    for item in found:
        c = item.change
        lines = [f"{c.kind}{'' if item.exact else ' (may change: depends on matches)'}",
                 f"  class:   {item.text}",
                 f"  witness: --request '{request_json(item.witness)}'",
                 f"  rule:    {_at(c.old)} -> {_at(c.new)}"]
        if _is_route(c):
            lines.append(f"  route:   {_route(c.old_route, c.old_deny)} => "
                         f"{_route(c.new_route, c.new_deny)}")
        else:
            lines.append(f"  change:  {c.summary}")
        if item.share is not None:
            lines.append(f"  traffic: {_moves(item)}")
        blocks.append("\n".join(lines) + "\n")
    kinds = sorted({i.change.kind for i in found}, key=KINDS.index)
    summary = f"{len(found)} change{'s' if len(found) != 1 else ''} ({', '.join(kinds)})\n"
    return "\n".join(blocks) + "\n" + summary


def as_json(item: Found) -> dict[str, Any]:
    c = item.change
    return {
        "kind": c.kind, "class": item.text, "where": item.where, "exact": item.exact,
        "witness": item.witness,
        "old": {"rule": _where(c.old), "route": list(c.old_route), "deny": c.old_deny},
        "new": {"rule": _where(c.new), "route": list(c.new_route), "deny": c.new_deny},
        "summary": c.summary, "share": item.share, "usd_week": item.usd_week,
    }


def _json(found: Sequence[Found]) -> str:
    return json.dumps({"changes": [as_json(i) for i in found]}, indent=2) + "\n"


def _message(item: Found) -> str:
    c = item.change
    what = f"{_route(c.old_route, c.old_deny)} => {_route(c.new_route, c.new_deny)}" \
        if _is_route(c) else c.summary
    exact = "" if item.exact else " (may change: depends on matches)"
    traffic = f"; {_moves(item)}" if item.share is not None else ""
    return (f"{c.kind}{exact}: {item.text}: {what} (was {_at(c.old)}; witness "
            f"--request '{request_json(item.witness)}'){traffic}")


def _anchor(change: Change) -> Source | None:
    """Where a change is shown: the new policy's deciding block, else the old one's."""
    return change.new if change.new is not None else change.old


def _sarif(found: Sequence[Found]) -> str:
    used = sorted({i.change.kind for i in found}, key=KINDS.index)
    rules = [{"id": kind, "name": kind, "shortDescription": {"text": f"plan change: {kind}"},
              "defaultConfiguration": {"level": "warning"}} for kind in used]
    results = []
    for item in found:
        at = _anchor(item.change)
        result: dict[str, Any] = {"ruleId": item.change.kind,
                                  "ruleIndex": used.index(item.change.kind),
                                  "level": "warning", "message": {"text": _message(item)}}
        if at is not None:
            result["locations"] = [{"physicalLocation": {
                "artifactLocation": {"uri": at.file.replace("\\", "/")},
                "region": {"startLine": at.line, "startColumn": at.column}}}]
        results.append(result)
    document = {"$schema": SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "gwc diff", "informationUri": "https://github.com/gwc/gwc",
                            "version": codes.VERSION, "rules": rules}},
        "columnKind": "unicodeCodePoints", "results": results}]}
    return json.dumps(document, indent=2) + "\n"


def _github(found: Sequence[Found]) -> str:
    lines = []
    for item in found:
        at = _anchor(item.change)
        place = f"file={_property(at.file)},line={at.line}," if at is not None else ""
        lines.append(f"::warning {place}title={_property(item.change.kind)}"
                     f"::{_data(_message(item))}")
    return "".join(line + "\n" for line in lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(found: Sequence[Found]) -> str:
    if not found:
        return f"**gwc diff**: {NOTHING}\n"
    traffic = any(i.share is not None for i in found)
    head = "| kind | class | witness | change | old | new |" + (" traffic |" if traffic else "")
    rule = "| --- | --- | --- | --- | --- | --- |" + (" --- |" if traffic else "")
    rows = [f"**gwc diff**: {len(found)} change{'s' if len(found) != 1 else ''}", "", head, rule]
    for item in found:
        c = item.change
        what = f"{_route(c.old_route, c.old_deny)} => {_route(c.new_route, c.new_deny)}" \
            if _is_route(c) else c.summary
        kind = c.kind + ("" if item.exact else " (may change)")
        row = (f"| {kind} | {_cell(item.text)} | `{_cell(request_json(item.witness))}` | "
               f"{_cell(what)} | {_at(c.old)} | {_at(c.new)} |")
        if traffic:
            row += f" {_cell(_moves(item))} |"
        rows.append(row)
    return "\n".join(rows) + "\n"
