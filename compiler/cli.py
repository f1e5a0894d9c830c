"""`gwc`: parse the command line and dispatch; each command lives in its own module.

Commands are imported only when run, so `gwc check` loads the parser and the
passes and nothing of the gateway. `gwc serve` is the runtime's, which the
compiler must not import: it is found through the `gwc.commands` entry point
group (pyproject.toml), looked up only when that command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import NoReturn

from compiler.output import FORMATS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gwc", description="LLM gateway policies: check, "
                                     "compile, explain, test and serve them.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check", help="parse, resolve, type-check and lint policies",
        epilog="Limits per meta[\"NAME\"] or header[\"NAME\"] keep one counter per value a "
               "client sends, at most `max_values` (default 1000) per block and period; past "
               "that a new value is refused with 429 subject_limit_reached (see `gwc "
               "explain-code GW311`).")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--format", choices=FORMATS, default="text")
    check.add_argument("--strict", action="store_true", help="fail on warnings too")

    code = commands.add_parser("explain-code", help="the long explanation of a diagnostic code")
    code.add_argument("code", metavar="GWnnn")

    fmt = commands.add_parser("fmt", help="rewrite policies in canonical layout")
    fmt.add_argument("files", nargs="+", metavar="FILE")
    mode = fmt.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if any file would change")
    mode.add_argument("--diff", action="store_true", help="print the changes, write nothing")

    comp = commands.add_parser("compile", help="write the compiled decision graph as JSON")
    comp.add_argument("file", metavar="FILE")
    comp.add_argument("-o", "--output", metavar="GRAPH.json", help="default: standard output")

    commands.add_parser("schema", help="print the JSON Schema of the compiled graph")

    explain = commands.add_parser("explain", help="the plan for one request, and why")
    explain.add_argument("file", metavar="FILE", help="a policy, or a graph from `gwc compile`")
    explain.add_argument("--request", required=True, metavar="JSON")
    explain.add_argument("--format", choices=("text", "json"), default="text")

    test = commands.add_parser("test", help="run the policies' test blocks")
    test.add_argument("files", nargs="+", metavar="FILE")

    diff = commands.add_parser("diff", help="the classes of requests whose plan changes")
    diff.add_argument("old", metavar="OLD")
    diff.add_argument("new", metavar="NEW")
    diff.add_argument("--format", choices=("text", "json", "sarif", "github", "markdown"),
                      default="text")
    diff.add_argument("--fail-on", metavar="KIND,...",
                      help="exit 1 if a change of one of these kinds exists")
    diff.add_argument("--traffic", metavar="LOG.jsonl",
                      help="weigh each class by the share of this traffic log in it")

    serve = commands.add_parser("serve", help="run the gateway on a policy")
    serve.add_argument("file", metavar="FILE", help="a policy, or a graph from `gwc compile`")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    serve.add_argument("--watch", action="store_true", help="reload when the policy changes")
    serve.add_argument("--insecure", action="store_true",
                       help="allow auth { mode = none } on a non-loopback address")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="processes serving the one port (N > 1 needs GW_STATE_URL)")
    simulate = commands.add_parser(
        "simulate", help="replay a traffic log through the policy's quotas, budgets and routes")
    simulate.add_argument("file", metavar="POLICY", help="a policy, or a graph from `gwc compile`")
    simulate.add_argument("--traffic", required=True, metavar="LOG.jsonl",
                          help="the traffic format, as `gwc log export` writes it")
    simulate.add_argument("--against", metavar="OLD", help="an older policy, replayed beside it")
    simulate.add_argument("--format", choices=("text", "json", "html"), default="text")
    simulate.add_argument("-o", "--output", metavar="FILE", help="default: standard output")
    simulate.add_argument("--trace", metavar="FILE",
                          help="each request's outcome under POLICY, one JSON line each")
    _records(commands)
    return parser


def _records(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The commands over the gateway's database (GW_DB_URL): keys, spend, the log."""
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", metavar="URL", help="default: $GW_DB_URL, else sqlite:///.gw/gw.db")
    keys = commands.add_parser("keys", help="create, list, revoke and rotate virtual keys")
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", parents=[db], help="a new key; its secret is shown once")
    create.add_argument("--team", required=True)
    create.add_argument("--user")
    create.add_argument("--name")
    create.add_argument("--expires", metavar="DURATION", help="e.g. 30d; default: never")
    create.add_argument("--models", metavar="M,M", help="the models it may call; default: any")
    create.add_argument("--format", choices=("text", "json"), default="text")
    listing = actions.add_parser("list", parents=[db], help="every key, never a secret")
    listing.add_argument("--format", choices=("text", "json"), default="text")
    revoke = actions.add_parser("revoke", parents=[db], help="refuse the key from now on")
    revoke.add_argument("id", metavar="ID")
    rotate = actions.add_parser("rotate", parents=[db], help="a new secret for the same key")
    rotate.add_argument("id", metavar="ID")
    rotate.add_argument("--grace", metavar="DURATION", help="how long the old secret still works")
    rotate.add_argument("--format", choices=("text", "json"), default="text")

    spend = commands.add_parser("spend", parents=[db], help="spend by subject, from the ledger")
    spend.add_argument("--by", choices=("team", "user", "key", "model"), default="team")
    spend.add_argument("--since", metavar="DATE", help="YYYY-MM-DD or RFC 3339")
    spend.add_argument("--format", choices=("text", "json"), default="text")

    log = commands.add_parser("log", help="the gateway's request log")
    log_actions = log.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = log_actions.add_parser("export", parents=[db],
                                    help="as the traffic format (JSON Lines), never a prompt")
    export.add_argument("--since", metavar="TIME")
    export.add_argument("--until", metavar="TIME")
    export.add_argument("-o", "--output", metavar="FILE", help="default: standard output")


# commands the runtime provides, by entry point
PLUGGED = ("serve", "keys", "spend", "log", "simulate")


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    if name not in PLUGGED:
        run: Callable[[argparse.Namespace], int] = import_module(
            f"compiler.commands.{name.replace('-', '_')}").run
        return run
    from importlib.metadata import entry_points

    found = entry_points(group="gwc.commands", name=name)
    if not found:
        raise SystemExit(f"gwc: '{name}' is not installed (no gwc.commands entry point)")
    plugged: Callable[[argparse.Namespace], int] = next(iter(found)).load()
    return plugged


def main(argv: Sequence[str] | None = None, *, leave: bool = False) -> int:
    """Run one command and return its exit code; with `leave`, end the process
    with it as soon as the output is flushed (see `_leave`)."""
    args = _parser().parse_args(argv)
    run = _command(args.command)
    try:
        code: int = run(args)
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return 130
    sys.stdout.flush()
    if leave and args.command not in PLUGGED:
        _leave(code)
    return code


def _leave(code: int) -> NoReturn:
    """End the process without tearing down what it built.

    A short command is done once its output is written, and Python's own exit
    then frees every module and object one by one: 25 ms of a 400 ms `gwc
    check`. Nothing of the compiler's commands runs at exit; the plugged ones
    (`serve`) may, so they exit the usual way. If the output cannot be
    flushed, Python's exit reports that as it always does.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise SystemExit(code) from None
    os._exit(code)


def script() -> int:
    """The installed `gwc`: as `python -m compiler.cli`, it leaves once flushed."""
    return main(leave=True)


if __name__ == "__main__":
    raise SystemExit(main(leave=True))
