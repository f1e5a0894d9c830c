"""The catalogue of diagnostic codes, one markdown file each under `explanations/`.

A file starts `# GWnnn: title`, then `severity: error|warning`, then the
explanation with a wrong and a right example. `gwc explain-code` prints it;
SARIF output names its rules from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata, resources
from importlib.resources.abc import Traversable

try:
    VERSION = metadata.version("gwc")
except metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0.0.0"

_CODE = re.compile(r"GW\d{3}")


@dataclass(frozen=True)
class Entry:
    code: str
    title: str
    level: str
    summary: str
    body: str

    @property
    def name(self) -> str:
        return "".join(w.capitalize() for w in re.findall(r"[a-z]+", self.title.lower()))


def _folder() -> Traversable:
    return resources.files("compiler").joinpath("explanations")


def known() -> list[str]:
    return sorted(p.name[:-3] for p in _folder().iterdir() if _CODE.fullmatch(p.name[:-3]))


def lookup(code: str) -> Entry:
    """The catalogue entry for a code; KeyError if there is none."""
    code = code.upper()
    if not _CODE.fullmatch(code):
        raise KeyError(code)
    path = _folder().joinpath(f"{code}.md")
    if not path.is_file():
        raise KeyError(code)
    text = path.read_text(encoding="utf-8")
    head, level_line, rest = text.split("\n", 2)
    title = head.split(":", 1)[1].strip()
    level = level_line.removeprefix("severity:").strip()
    body = rest.strip()
    summary = body.split("\n\n", 1)[0].replace("\n", " ")
    return Entry(code, title, level, summary, body)
