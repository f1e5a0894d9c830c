"""Where a piece of source came from: every AST node and diagnostic carries one."""

from __future__ import annotations

from typing import NamedTuple


class Span(NamedTuple):
    """A range in one file; lines and columns start at 1, the end is exclusive.

    A named tuple: made for every node of every parse, it is built, hashed and
    ordered (by file, then position) in C.
    """

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"

    @classmethod
    def point(cls, file: str, line: int, column: int) -> Span:
        return cls(file, line, column, line, column + 1)
