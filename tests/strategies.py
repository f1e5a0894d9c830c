"""Hypothesis strategies: random policies written as `.gw` text, and random requests.

Policies draw their constants from small pools so that rules overlap, shadow
and contradict each other often; requests draw from the same pools plus
values no rule names and absent attributes.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

from compiler.driver import check
from compiler.graph import Graph
from compiler.request import Request

TEAMS = ["t0", "t1", "t2"]
MODELS = ["m0", "m1", "m2"]
USERS = ["u0", "u1"]
FEATURES = ["a", "b"]
TOKENS = [0, 1000, 100_000]
TEMPERATURES = [0.3, 0.7]


def _quoted(values: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(values).map(lambda v: f'"{v}"')


def _list(values: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True).map(
        lambda vs: "[" + ", ".join(f'"{v}"' for v in vs) + "]")


atoms = st.one_of(
    st.builds(lambda a, op, v: f"{a} {op} {v}", st.sampled_from(["team"]),
              st.sampled_from(["==", "!="]), _quoted([*TEAMS, "zz"])),
    st.builds(lambda op, v: f"model {op} {v}", st.sampled_from(["==", "!="]), _quoted(MODELS)),
    st.builds(lambda neg, v: f"user {'not in' if neg else 'in'} {v}", st.booleans(), _list(USERS)),
    st.builds(lambda v: f'header["x-feature"] == {v}', _quoted(FEATURES)),
    st.builds(lambda v: f'model matches "{v}"', st.sampled_from(["^m[01]", "2$", "^t"])),
    st.builds(lambda op, v: f"tokens {op} {v}", st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
              st.sampled_from(["1000", "1k", "100k", "0"])),
    st.builds(lambda op, v: f"temperature {op} {v}", st.sampled_from(["<=", ">"]),
              st.sampled_from(["0.3", "0.7"])),
    st.builds(lambda op: f"budget.team {op} 90%", st.sampled_from([">", "<="])),
    st.sampled_from(["stream", "tools", 'endpoint == "embeddings"', "stream == false"]),
)

conditions = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} and {b}", inner, inner),
        st.builds(lambda a, b: f"({a} or {b})", inner, inner),
        st.builds(lambda a: f"not ({a})", inner),
    ),
    max_leaves=4,
)

SUBJECTS = ["per team", "per user", "per key", "global", 'team "t1"', 'user "u0"', "per model"]
# Guard bodies that often cover one another, so that shadowed guards are common.
GUARDS = [
    "detect = [email, phone]; on = both",
    "detect = [email]; action = redact",
    'deny = ["x", "y"]',
    'deny = ["x"]; on = output',
    'detect = [ssn]; deny = ["x"]; mode = shadow',
    'webhook = "https://check.test/v1"; on_error = deny',
    'webhook = "https://check.test/v1"; on_error = allow; timeout = 5s; detect = [email]',
]


@st.composite
def policies(draw: st.DrawFn) -> str:
    lines = ["provider local { type = mock }"]
    lines += [f"model {m} {{ provider = local; input = $1/1M; output = $2/1M }}" for m in MODELS]
    lines.append("pool p { members = [m0, m1] }")
    lines.append("route {")
    for _ in range(draw(st.integers(1, 6))):
        target = draw(st.sampled_from(["m0", "m1, m2", "p", "requested, m0", 'deny "no"']))
        lines.append(f"  when {draw(conditions)} -> {target}")
    if draw(st.booleans()):
        lines.append("  otherwise -> m2")
    lines.append("}")
    for kind, body in (("quota", "requests = 10 per minute"), ("budget", "limit = $5 per day")):
        for _ in range(draw(st.integers(0, 3))):
            when = f" when {draw(conditions)}" if draw(st.booleans()) else ""
            lines.append(f"{kind} {draw(st.sampled_from(SUBJECTS))}{when} {{ {body} }}")
    for _ in range(draw(st.integers(0, 2))):
        when = f" when {draw(conditions)}" if draw(st.booleans()) else ""
        lines.append(f"cache{when} {{ mode = exact }}")
    for i in range(draw(st.integers(0, 3))):
        when = f" when {draw(conditions)}" if draw(st.booleans()) else ""
        lines.append(f"guard g{i}{when} {{ {draw(st.sampled_from(GUARDS))} }}")
    return "\n".join(lines) + "\n"


def _maybe(values: list[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), st.sampled_from([*values, "other"]))


requests = st.builds(
    Request,
    model=_maybe(MODELS),
    user=_maybe(USERS),
    team=_maybe(TEAMS),
    key=_maybe(["k0"]),
    endpoint=st.sampled_from(["chat", "embeddings", "messages"]),
    stream=st.booleans(),
    tools=st.booleans(),
    tokens=st.sampled_from([*TOKENS, 999, 1001, 50]).map(float),
    temperature=st.one_of(st.none(), st.sampled_from([*TEMPERATURES, 0.5, 1.0])),
    headers=st.one_of(st.just({}), st.sampled_from([*FEATURES, "c"]).map(
        lambda v: {"x-feature": v})),
    budget=st.one_of(st.just({}), st.sampled_from([0.5, 0.9, 0.95]).map(lambda v: {"team": v})),
)


@st.composite
def relaid(draw: st.DrawFn) -> tuple[str, str]:
    """A change of layout that changes no plan: a comment line to put before every
    line, and an unrelated block to append (a provider no model uses, a notify)."""
    comment = draw(st.sampled_from(["", "# note", "   # indented note", ";"]))
    extra = draw(st.sampled_from([
        "", "provider spare { type = mock }\n",
        'notify ops { webhook = "https://hooks.test/x" }\n',
        "# trailing comment\n"]))
    return comment, extra


def compiled(folder: Path, text: str, name: str = "random.gw") -> Graph:
    """A generated policy's decision graph: written to `folder`, checked clean."""
    path = folder / name
    path.write_text(text)
    ctx = check(str(path), env={})
    assert not ctx.has_errors, [d.message for d in ctx.diagnostics] + [text]
    assert ctx.graph is not None
    return ctx.graph
