"""A checked policy: every block of every file, typed and resolved.

This is what the passes lower the syntax tree to, what the reference
interpreter reads and what the graph builder compiles. The compiled graph
file carries these same types (pydantic reads them as JSON Schema), so the
runtime needs nothing of the syntax tree. Durations are seconds, money is US
dollars, prices are dollars per token, shares are fractions of 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.conditions import TRUE, Cond


@dataclass(frozen=True, slots=True)
class Source:
    """Where a declaration was written, for `explain` and diagnostics."""

    file: str
    line: int
    column: int = 1
    end_line: int = 0
    end_column: int = 0


@dataclass(frozen=True, slots=True)
class EnvValue:
    """`env("NAME", "default")`: read when the gateway starts, never stored."""

    env: str
    default: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int = 2
    backoff_min: float = 0.2
    backoff_max: float = 5.0
    on: tuple[str, ...] = ("429", "5xx", "timeout", "connect")
    resume: bool = False  # a stream cut after text reached the client goes on elsewhere


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The bounds on one upstream call, in seconds.

    - `connect`: opening the connection (both kinds of call);
    - `first_byte`: a stream's response headers and its first event;
    - `idle`: the longest gap between two events of a stream;
    - `total`: a whole non-streamed call. Its first byte is the whole answer
      (an upstream sends nothing until it is done), so it has no other bound;
      a stream has no total, so a long generation is never cut while it flows.
    """

    connect: float = 10.0
    first_byte: float = 30.0
    idle: float = 30.0
    total: float = 60.0


@dataclass(frozen=True, slots=True)
class Health:
    """An active health check: a cheap call to the provider every `interval`."""

    interval: float = 30.0
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class Breaker:
    failures: int = 5
    window: float = 30.0
    cooldown: float = 60.0
    probes: int = 1
    error_rate: float | None = None
    min_requests: int = 10


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    type: str
    base_url: str | EnvValue | None = None
    api_key: str | EnvValue | None = None
    timeout: float | None = None
    headers: dict[str, str | EnvValue] = field(default_factory=dict)
    max_concurrency: int | None = None
    api_version: str | None = None
    latency: float = 0.0
    fail_rate: float = 0.0
    fail_status: int = 500
    connect_timeout: float | None = None
    first_byte_timeout: float | None = None
    idle_timeout: float | None = None
    health: Health | None = None
    retry: Retry = field(default_factory=Retry)
    breaker: Breaker = field(default_factory=Breaker)


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    provider: str
    upstream: str
    input_price: float | None = None
    output_price: float | None = None
    cached_input_price: float | None = None  # None: as fresh input
    cache_write_price: float | None = None  # None: as fresh input
    context: int | None = None
    max_output: int | None = None
    timeout: float | None = None
    connect_timeout: float | None = None
    first_byte_timeout: float | None = None
    idle_timeout: float | None = None
    prefill: bool = False  # takes a final assistant message as the start of its answer

    @property
    def priced(self) -> bool:
        return self.input_price is not None or self.output_price is not None


@dataclass(frozen=True, slots=True)
class Member:
    model: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    strategy: str
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Target:
    """One step of a fallback chain: a model, a pool, or `requested`."""

    kind: str  # "model", "pool" or "requested"
    name: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    targets: tuple[Target, ...]
    deny: str | None
    source: Source
    cond: Cond = TRUE


@dataclass(frozen=True, slots=True)
class Subject:
    """Whose counter a quota or budget keeps: `per team`, `global`, `team "x"`."""

    kind: str  # "per", "global", "one"
    dimension: str = ""  # team, user, key, model; or meta:NAME, header:NAME (keyed)
    value: str = ""

    @property
    def keyed(self) -> bool:
        """One counter per value of a `meta` or `header` key, as a client sends it."""
        return ":" in self.dimension

    def __str__(self) -> str:
        if self.kind == "global":
            return "global"
        if self.kind == "per":
            prefix, _, key = self.dimension.partition(":")
            return f'per {prefix}["{key}"]' if key else f"per {self.dimension}"
        return f'{self.dimension} "{self.value}"'


@dataclass(frozen=True, slots=True)
class Rate:
    amount: float
    period: str  # second, minute, hour, day, week, month


@dataclass(frozen=True, slots=True)
class Quota:
    index: int
    subject: Subject
    source: Source
    requests: Rate | None = None
    tokens: Rate | None = None
    burst: int | None = None
    concurrency: int | None = None
    mode: str = "enforce"
    max_values: int | None = None  # keyed subjects: distinct values counted per period
    on_store_error: str = "refuse"  # the shared store unreachable: refuse (503) or local
    cond: Cond = TRUE


@dataclass(frozen=True, slots=True)
class Budget:
    index: int
    subject: Subject
    source: Source
    limit: Rate | None = None
    alerts: tuple[float, ...] = ()
    notify: str | None = None
    over: str = "reject"  # reject, allow, downgrade
    downgrade: str | None = None
    max_values: int | None = None  # keyed subjects: distinct values counted per period
    on_store_error: str = "refuse"  # the shared store unreachable: refuse (503) or local
    cond: Cond = TRUE


@dataclass(frozen=True, slots=True)
class Cache:
    index: int
    source: Source
    mode: str = "exact"
    threshold: float | None = None  # None: the embedder's own default (runtime)
    ttl: float = 3600.0
    scope: str | None = None  # None: the caller's team, else its key; never global unwritten
    embedder: str = "hash"  # hash, minilm, or model (then embedder_model names it)
    embedder_model: str | None = None
    max_entries: int = 10_000
    cond: Cond = TRUE


@dataclass(frozen=True, slots=True)
class Guard:
    """Checks on the text going in (`input`), coming out (`output`) or `both`.

    `detect` names built-in detectors (policies/detectors.py) and `action` says
    what their hits do; every `deny` pattern (RE2) refuses; `webhook` asks an
    outside check, and `on_error` decides when it fails or is slow. In `shadow`
    mode a guard only reports what it would have done.
    """

    index: int
    name: str
    source: Source
    on: str = "input"  # input, output, both
    detect: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    action: str = "deny"  # deny, redact, flag: what a detector's hit does
    webhook: str | EnvValue | None = None
    timeout: float = 2.0
    on_error: str = "deny"  # the webhook failed or was slow: deny (fail closed) or allow
    mode: str = "enforce"  # enforce, shadow
    cond: Cond = TRUE

    @property
    def inputs(self) -> bool:
        return self.on != "output"

    @property
    def outputs(self) -> bool:
        return self.on != "input"


@dataclass(frozen=True, slots=True)
class Notify:
    name: str
    webhook: str | EnvValue
    format: str = "json"


@dataclass(frozen=True, slots=True)
class Auth:
    mode: str = "keys"
    user_header: str = "x-gw-user"
    team_header: str = "x-gw-team"


@dataclass(frozen=True, slots=True)
class TestCase:
    name: str
    source: Source
    given: dict[str, object]
    expect: dict[str, object]


@dataclass(slots=True)
class Policy:
    providers: dict[str, Provider] = field(default_factory=dict)
    models: dict[str, Model] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    quotas: list[Quota] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)
    caches: list[Cache] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)
    notifies: dict[str, Notify] = field(default_factory=dict)
    auth: Auth = field(default_factory=Auth)
    retry: Retry = field(default_factory=Retry)
    breaker: Breaker = field(default_factory=Breaker)
    tests: list[TestCase] = field(default_factory=list)

    @property
    def declared(self) -> set[str]:
        """The names a route target may use: models and pools."""
        return self.models.keys() | self.pools.keys()
