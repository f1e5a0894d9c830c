"""Diagnostics rendered for people (text), programs (json), code scanning
(sarif) and GitHub Actions (github). Each module has `render(report) -> str`."""

from __future__ import annotations

from dsl.diagnostics import Diagnostic
from dsl.record import Record

FORMATS = ("text", "json", "sarif", "github")


class Report(Record):
    diagnostics: list[Diagnostic]
    sources: dict[str, str]  # file -> text, to show the lines diagnostics point at
    color: bool = False

    @property
    def errors(self) -> int:
        return sum(d.is_error for d in self.diagnostics)

    @property
    def warnings(self) -> int:
        return len(self.diagnostics) - self.errors


def render(report: Report, fmt: str) -> str:
    from importlib import import_module

    module = import_module(f"compiler.output.{fmt}_format")
    text: str = module.render(report)
    return text
