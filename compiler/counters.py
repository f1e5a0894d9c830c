"""Which counter a quota or budget block counts on: named by what it counts.

A counter's name is its block's kind, subject and `when` (here), then what it
counts and over which period (the runtime adds those), never the block's
place in the file or its limit. A reload that edits a limit, or moves the
block, keeps counting on the same counter, so the new limit applies to what
was counted so far; one that changes the subject, the `when` or the period
starts a new counter. The runtime names its counters so, and `gwc explain` shows the names,
so a reviewer can see which counters an edit keeps.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from compiler.policy import Budget, Quota


def canonical(value: Any) -> str:
    """A condition as text that is the same in every process (a frozenset's repr is
    not: its order follows the string hash, which is salted per process)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.__class__.__name__ + "(" + ",".join(
            canonical(getattr(value, f.name)) for f in dataclasses.fields(value)) + ")"
    if isinstance(value, frozenset | set):
        return "{" + ",".join(sorted(canonical(v) for v in value)) + "}"
    if isinstance(value, tuple | list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    return repr(value)


def block_id(block: Quota | Budget) -> str:
    """The block's part of its counters' names: `q:` or `b:` and a digest of its kind,
    subject and condition."""
    kind = "budget" if isinstance(block, Budget) else "quota"
    text = f"{kind} {block.subject} when {canonical(block.cond)}"
    return f"{kind[0]}:{hashlib.sha256(text.encode()).hexdigest()[:10]}"
