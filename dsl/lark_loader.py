"""Loading lark, and the parser it builds for the grammar, as fast as they load.

Two things cost every `gwc` run that parses, before a line is read:

- **interegular.** lark imports it whenever it is installed, to look for
  terminals that collide when it builds a grammar in strict mode (10 ms). gwc
  builds its grammar with the checks off and holds it to strict mode in a
  test instead (`tests/dsl/test_parser.py`); so lark is imported here with
  interegular out of its sight, before any other module imports lark.
- **Building the parse table** (a few hundred ms). lark can keep what it
  built in a cache file and check, on loading, that it was built from this
  grammar with these options. lark's own default is a file in the system's
  temporary folder, which on a shared machine another user could have put
  there, and unpickling it runs what it says. The cache goes where the
  package's own bytecode goes (`dsl/__pycache__`) when that is writable or
  already holds it, else under the user's cache folder
  (`$XDG_CACHE_HOME/gwc`, `~/.cache/gwc`); when neither is writable, say
  from a read-only install run by a user without a home, nothing is cached
  and the grammar is built on each run.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _import_lark_without_interegular() -> None:
    if "lark" in sys.modules or "interegular" in sys.modules:
        return
    sys.modules["interegular"] = None  # type: ignore[assignment]  # `import` raises ImportError
    try:
        import lark.lexer  # noqa: F401
    finally:
        del sys.modules["interegular"]


_import_lark_without_interegular()

from lark import Lark  # noqa: E402


def cache_file(name: str) -> str | bool:
    """Where lark keeps the parser called `name`, or False for nowhere."""
    file = f"{name}.lark-cache"
    package = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    if os.path.isfile(os.path.join(package, file)) or _writable(package):
        return os.path.join(package, file)
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    user = os.path.join(home, "gwc")
    if _writable(user):
        return os.path.join(user, file)
    return False


def _writable(folder: str) -> bool:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def load(grammar: str, name: str, **options: Any) -> Lark:
    """lark's LALR parser for `grammar`, from its cache file when that is current."""
    return Lark(grammar, parser="lalr", cache=cache_file(name), **options)
