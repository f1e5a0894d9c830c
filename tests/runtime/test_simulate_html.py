"""`gwc simulate --format html` looked at as a person would: in headless Chromium.

The report of a small replay (two policies side by side) is opened with every
host name resolving to nothing and Chromium's own background traffic off;
its screenshot must show both charts of both policies drawn (bands of chart
colour, spend per day as tall stacked bars, the route mix as short rows) and
Chromium's network log must hold no request the page made (the browser's own,
its update and sign-in checks, have no initiator and fail to resolve). A page that does
load something from the network is caught the same way (the test's control).
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from compiler.traffic import timestamp
from runtime.simulate_command import run as simulate
from runtime.simulate_render import COLOURS

chromium = shutil.which("chromium")
pytestmark = pytest.mark.skipif(chromium is None, reason="Debian's chromium is not installed "
                                "(.ci/run installs it)")
POLICY = """
provider oa {{ type = openai; base_url = "http://127.0.0.1:9/v1"; api_key = "x" }}
model ok    {{ provider = oa; name = "ok"; input = $100/1M; output = $200/1M }}
model cheap {{ provider = oa; name = "ok"; input = $10/1M; output = $20/1M }}
route {{
  when team == "b" -> cheap
  otherwise -> requested
}}
budget per team {{ limit = ${limit} per day; alert = [50%] }}
auth {{ mode = headers; team_header = "x-team" }}
"""
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1200,900", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-default-apps",
         "--disable-features=SpellCheck,Translate,OptimizationHints,MediaRouter")


def test_the_html_report_draws_its_charts_and_loads_nothing(tmp_path: Path) -> None:
    new, old = tmp_path / "new.gw", tmp_path / "old.gw"
    new.write_text(POLICY.format(limit=20))
    old.write_text(POLICY.format(limit=2))
    log = tmp_path / "traffic.jsonl"
    start = 1_780_000_000.0
    log.write_text("".join(json.dumps({
        "ts": timestamp(start + i * 600), "team": "abc"[i % 3], "user": f"u{i % 7}",
        "model": "ok", "tokens_in": 1000, "tokens_out": 500, "status": 200}) + "\n"
        for i in range(600)))
    page = tmp_path / "report.html"
    assert simulate(argparse.Namespace(file=str(new), traffic=str(log), against=str(old),
                                       format="html", output=str(page), trace=None)) == 0
    shot, requests = look(page, tmp_path)
    assert requests == []
    width, rows = shot
    bands = coloured_bands(rows, width)
    # the two spend charts side by side (tall stacked bars), then the route mixes' rows
    # (a bar per model, 16 px high), both in the old policy's column too
    spend, *rest = bands
    assert spend[1] - spend[0] >= 100 and spend[2] > width // 2, bands
    routes = [band for band in rest if band[1] - band[0] >= 12]
    assert len(routes) >= 2 and max(band[2] for band in routes) > width // 2, bands

    leaky = tmp_path / "leaky.html"
    leaky.write_text(page.read_text().replace("default-src 'none'; ", "").replace(
        "<h1>", '<img src="http://example.com/logo.png"><h1>'))
    assert look(leaky, tmp_path)[1] == ["http://example.com/logo.png"]


def look(page: Path, folder: Path) -> tuple[tuple[int, list[bytes]], list[str]]:
    """A screenshot of the page (width, RGB rows) and the URLs it asked the network for."""
    assert chromium is not None
    shot, net = folder / "shot.png", folder / "net.json"
    subprocess.run([chromium, *FLAGS, f"--screenshot={shot}", f"--log-net-log={net}",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    events = json.loads(net.read_text())["events"]
    # a request's start names its initiator; Chromium's own (updates, sign-in) have none
    urls = sorted({params["url"] for event in events if "initiator" in (
        params := event.get("params", {})) and params["initiator"] != "not an origin"
        and not params["url"].startswith(("file:", "data:"))})
    return png_rows(shot.read_bytes()), urls


def coloured_bands(rows: list[bytes], width: int) -> list[tuple[int, int, int]]:
    """Runs of screenshot rows holding chart colour: (first row, last row, rightmost x)."""
    colours = {bytes.fromhex(c[1:]) for c in COLOURS[:3]}
    bands: list[tuple[int, int, int]] = []
    for y, row in enumerate(rows):
        xs = [x for x in range(0, width, 2) if row[3 * x:3 * x + 3] in colours]
        if len(xs) < 20:  # a legend's swatch is not a chart
            continue
        if bands and bands[-1][1] >= y - 3:
            first, _, right = bands[-1]
            bands[-1] = (first, y, max(right, xs[-1]))
        else:
            bands.append((y, y, xs[-1]))
    return bands


def png_rows(data: bytes) -> tuple[int, list[bytes]]:
    """A PNG's pixels as RGB rows (8-bit RGB or RGBA, as Chromium writes screenshots)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    size = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(chunks), width * size
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) *
                                                         (stride + 1)])
        for i in range(stride):
            left = line[i - size] if i >= size else 0
            up, corner = previous[i], previous[i - size] if i >= size else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else
                                      up if pb <= pc else corner)) & 255
        previous = line
        rows.append(bytes(line) if size == 3 else
                    b"".join(bytes(line[x:x + 3]) for x in range(0, stride, 4)))
    return width, rows
