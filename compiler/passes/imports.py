"""LoadImports: parse the policy's file and every file it imports.

Paths are relative to the importing file. A file imported twice (a diamond)
is read once; a file that imports itself, directly or not, is an error at the
import that closes the cycle. Declarations keep file order, an imported
file's standing where its `import` does.

Only regular files are read, up to `dsl.source.MAX_BYTES`; anything else (a
FIFO, a device, a directory, a huge file) is GW110 like a missing file. A
file with syntax errors contributes the declarations they left whole.
"""

from __future__ import annotations

import os

from compiler.context import Context
from dsl import ast
from dsl.diagnostics import error
from dsl.parser import decode, parse_partial
from dsl.source import MAX_BYTES, SourceError, read_source
from dsl.span import Span


def run(ctx: Context) -> None:
    _load(ctx, ctx.root, [], None)


def _load(ctx: Context, path: str, stack: list[str], via: ast.Import | None) -> None:
    if path in stack:
        cycle = " -> ".join([*stack[stack.index(path):], path])
        assert via is not None
        ctx.report(error("GW111", f"import cycle: {cycle}", via.path.span,
                         help="move what both files need into a third file they both import"))
        return
    if path in ctx.sources:
        return
    try:
        data = read_source(path)
    except SourceError as exc:
        where = via.path.span if via else Span.point(path, 1, 1)
        if exc.missing:
            advice = "import paths are relative to the importing file"
        else:
            advice = f"a policy is a regular file of at most {MAX_BYTES // (1 << 20)} MiB"
        ctx.report(error("GW110", f"cannot read '{path}': {exc}", where, help=advice))
        ctx.syntax_ok = False
        ctx.unread = True
        return
    text, diagnostics = decode(data, path)
    if text is None:
        for diagnostic in diagnostics:
            ctx.report(diagnostic)
        ctx.syntax_ok = False
        ctx.unread = True
        return
    ctx.sources[path] = text
    parsed = parse_partial(text, path)
    for diagnostic in parsed.diagnostics:
        ctx.report(diagnostic)
    if parsed.diagnostics:
        ctx.syntax_ok = False
    ctx.dropped.extend(parsed.dropped)
    for decl in parsed.module.decls:
        if isinstance(decl, ast.Import):
            target = os.path.normpath(os.path.join(os.path.dirname(path), decl.path.value))
            _load(ctx, target, [*stack, path], decl)
        else:
            ctx.decls.append(decl)
