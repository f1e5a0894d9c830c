"""`gwc simulate`'s report as text (rich tables), JSON, or one self-contained HTML page.

The page draws its charts as inline SVG and carries a Content-Security-Policy
of `default-src 'none'`: it loads nothing, runs no script, and reads the same
offline as on the machine that wrote it (tests/runtime/test_simulate_html.py
opens it in headless Chromium and checks both).
"""

from __future__ import annotations

import html
import io
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from runtime.simulate import REFUSALS

COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")
TOP = 8  # teams drawn and models shown by name; the rest are summed as "others"


def render(report: dict[str, Any], form: str, policy: str, against: str | None) -> str:
    if form == "json":
        return json.dumps(report, indent=2) + "\n"
    runs = [(policy, report["new"]), (against or "", report["old"])] if against else \
        [(policy, report)]
    return _html(runs) if form == "html" else _text(runs)


# ---------------------------------------------------------------- text


def _text(runs: list[tuple[str, dict[str, Any]]]) -> str:
    out = io.StringIO()
    console = Console(file=out, width=110, color_system=None)
    names = [name for name, _ in runs]
    summary = Table(title="gwc simulate", show_edge=False)
    summary.add_column("")
    for name in names:
        summary.add_column(name, justify="right")
    if len(runs) == 2:
        summary.add_column("change", justify="right")
    rows: list[tuple[str, list[float], str]] = [
        ("requests", [r["requests"] for _, r in runs], "{:.0f}"),
        ("served", [r["served"] for _, r in runs], "{:.0f}"),
        *((f"refused: {why}", [r["refused"][why] for _, r in runs], "{:.0f}")
          for why in REFUSALS),
        ("spend (USD)", [r["usd"] for _, r in runs], "{:.4f}"),
        ("budgets run out", [len(r["budgets_exhausted"]) for _, r in runs], "{:.0f}"),
        ("alerts", [len(r["alerts"]) for _, r in runs], "{:.0f}")]
    for label, values, shape in rows:
        cells = [shape.format(v) for v in values]
        if len(values) == 2:
            cells.append(("+" if values[0] >= values[1] else "") +
                         shape.format(values[0] - values[1]))
        summary.add_row(label, *cells)
    console.print(summary)
    for name, result in runs:
        title = f" ({name})" if len(runs) == 2 else ""
        for dimension in ("team", "user", "model"):
            rows_of = result["by"][dimension]
            if not rows_of:
                continue
            table = Table(title=f"by {dimension}{title}", show_edge=False)
            for column in (dimension, "served", *REFUSALS, "USD", "first refused"):
                table.add_column(column, justify="left" if column == dimension else "right")
            for row in rows_of:
                table.add_row(row["subject"] or "-", str(row["served"]),
                              *(str(row["refused"][why]) for why in REFUSALS),
                              f"{row['usd']:.4f}", row["first_refused"] or "")
            console.print(table)
        routes = Table(title=f"route mix{title}", show_edge=False)
        for column in ("answered by", "requests", "share"):
            routes.add_column(column, justify="left" if column == "answered by" else "right")
        for route in result["routes"]:
            routes.add_row(route["model"], str(route["requests"]), f"{route['share']:.1%}")
        console.print(routes)
        for key, label in (("budgets_exhausted", "budgets run out"), ("alerts", "alerts")):
            events = result[key]
            if events:
                table = Table(title=f"{label}{title}", show_edge=False)
                for column in ("at", "subject", "budget", "threshold"):
                    table.add_column(column)
                for event in events:
                    threshold = event.get("threshold")
                    table.add_row(event["at"], event["subject"], event["budget"],
                                  f"{threshold:.0%}" if threshold is not None else "")
                console.print(table)
    return out.getvalue()


# ---------------------------------------------------------------- html


def _html(runs: list[tuple[str, dict[str, Any]]]) -> str:
    columns = "".join(_column(name, result) for name, result in runs)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>gwc simulate</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; color: #222; }}
main {{ display: flex; gap: 32px; flex-wrap: wrap; }}
section {{ flex: 1; min-width: 480px; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
td, th {{ padding: 2px 10px; text-align: right; border-bottom: 1px solid #ddd; }}
td:first-child, th:first-child {{ text-align: left; }}
.legend span {{ display: inline-block; margin-right: 12px; }}
.swatch {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
</style></head>
<body><h1>gwc simulate</h1><main>{columns}</main></body></html>
"""


def _column(name: str, result: dict[str, Any]) -> str:
    e = html.escape
    refused = result["refused"]
    summary = "".join(f"<tr><td>{e(label)}</td><td>{value}</td></tr>" for label, value in (
        ("requests", result["requests"]), ("served", result["served"]),
        *((f"refused: {why}", refused[why]) for why in REFUSALS),
        ("spend (USD)", f"{result['usd']:.4f}"),
        ("budgets run out", len(result["budgets_exhausted"])),
        ("alerts", len(result["alerts"]))))
    teams = "".join(
        f"<tr><td>{e(row['subject'] or '-')}</td><td>{row['served']}</td>"
        f"<td>{sum(row['refused'].values())}</td><td>{row['usd']:.4f}</td>"
        f"<td>{e(row['first_refused'] or '')}</td></tr>" for row in result["by"]["team"])
    events = "".join(
        f"<tr><td>{e(event['at'])}</td><td>{e(event['subject'])}</td>"
        f"<td>{e(event['budget'])}</td><td>{e(kind)}</td></tr>"
        for kind, key in (("run out", "budgets_exhausted"), ("alert", "alerts"))
        for event in result[key])
    return (f"<section><h2>{e(name)}</h2><table>{summary}</table>"
            f"<h3>spend per day, by team</h3>{_spend_chart(result['spend_by_day'])}"
            f"<h3>route mix</h3>{_route_chart(result['routes'])}"
            "<h3>by team</h3><table><tr><th>team</th><th>served</th><th>refused</th>"
            f"<th>USD</th><th>first refused</th></tr>{teams}</table>"
            "<h3>budgets and alerts</h3><table><tr><th>at</th><th>subject</th><th>budget</th>"
            f"<th></th></tr>{events}</table></section>")


def _spend_chart(days: list[dict[str, Any]]) -> str:
    """Stacked bars: a day's spend, a colour per team (the TOP biggest; the rest summed)."""
    width, height, left, bottom = 520, 220, 56, 24
    totals: dict[str, float] = {}
    for day in days:
        for team, usd in day["teams"].items():
            totals[team] = totals.get(team, 0.0) + usd
    named = [team for team, _ in sorted(totals.items(), key=lambda p: -p[1])[:TOP]]
    highest = max((day["usd"] for day in days), default=0.0) or 1.0
    step = (width - left) / max(1, len(days))
    bars = []
    for i, day in enumerate(days):
        y = height - bottom
        parts = [(team, day["teams"].get(team, 0.0)) for team in named]
        parts.append(("others", sum(usd for team, usd in day["teams"].items()
                                    if team not in named)))
        for j, (team, usd) in enumerate(parts):
            tall = usd / highest * (height - bottom - 10)
            if tall <= 0:
                continue
            y -= tall
            colour = COLOURS[j % len(COLOURS)] if team != "others" else "#999"
            bars.append(f'<rect class="bar" x="{left + i * step + step * 0.1:.1f}" '
                        f'y="{y:.1f}" width="{max(1.0, step * 0.8):.1f}" height="{tall:.1f}" '
                        f'fill="{colour}"><title>{html.escape(day["day"])} '
                        f'{html.escape(team or "-")}: ${usd:.4f}</title></rect>')
    labels = "".join(
        f'<text x="{left + i * step + step / 2:.1f}" y="{height - 6}" font-size="10" '
        f'text-anchor="middle">{html.escape(day["day"][5:])}</text>'
        for i, day in enumerate(days) if len(days) <= 16 or i % (len(days) // 8 + 1) == 0)
    axis = (f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
            f'stroke="#444"/><text x="{left - 4}" y="16" font-size="10" text-anchor="end">'
            f'${highest:.2f}</text><text x="{left - 4}" y="{height - bottom}" font-size="10" '
            'text-anchor="end">$0</text>')
    legend = "".join(f'<span><i class="swatch" style="background:{COLOURS[j % len(COLOURS)]}">'
                     f'</i>{html.escape(team or "-")}</span>' for j, team in enumerate(named))
    return (f'<svg class="chart spend" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="spend per day by team">'
            f'{axis}{"".join(bars)}{labels}</svg><div class="legend">{legend}</div>')


def _route_chart(routes: list[dict[str, Any]]) -> str:
    """One bar per answering model, its length its share of the requests served."""
    width, row, left = 520, 22, 150
    shown = routes[:TOP]
    rest = sum(route["share"] for route in routes[TOP:])
    items = [(route["model"], route["share"], route["requests"]) for route in shown]
    if rest:
        items.append(("others", rest, sum(route["requests"] for route in routes[TOP:])))
    height = max(row, row * len(items)) + 4
    bars = "".join(
        f'<text x="{left - 6}" y="{i * row + 15}" font-size="12" text-anchor="end">'
        f'{html.escape(model)}</text>'
        f'<rect class="bar" x="{left}" y="{i * row + 3}" height="{row - 6}" '
        f'width="{max(1.0, share * (width - left - 60)):.1f}" '
        f'fill="{COLOURS[i % len(COLOURS)]}"><title>{count} requests</title></rect>'
        f'<text x="{left + max(1.0, share * (width - left - 60)) + 4:.1f}" y="{i * row + 15}" '
        f'font-size="11">{share:.1%}</text>'
        for i, (model, share, count) in enumerate(items))
    return (f'<svg class="chart routes" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="route mix">{bars}</svg>')
