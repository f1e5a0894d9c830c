"""One request on its way through the pipeline: everything the stages share.

The HTTP layer makes it from what the client sent and the policy snapshot
current when the request arrived (whatever reloads come while it runs); each
stage fills in its part, and the exit halves read what the others left.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compiler.compiled import Decision, Deployment, Request
from runtime.errors import GatewayError

if TYPE_CHECKING:
    from policies.cache_store import Entry
    from runtime.caching import Lookup
    from runtime.endpoints import Endpoint
    from runtime.gateway import Gateway, Loaded
    from runtime.limiting import Applied, Held
    from runtime.pipeline.conversation import Conversation
    from runtime.pipeline.guards import Guarding
    from runtime.tracing import Scope

Body = dict[str, Any]


@dataclass(slots=True)
class Attempt:
    """One try of one model, or a model passed over."""

    model: str
    provider: str
    outcome: str  # "ok", a status, "timeout", "connect", "malformed", "skipped: ..."
    seconds: float = 0.0

    @property
    def skipped(self) -> bool:
        return self.outcome.startswith("skipped")


@dataclass(slots=True, eq=False)
class Exchange:
    request_id: str
    endpoint: Endpoint
    gateway: Gateway
    loaded: Loaded  # the policy snapshot this request runs on, with its adapters
    headers: Mapping[str, str]
    body: Body  # as the client sent it
    started: float

    # identity: who is calling (`key` is the virtual key's name, as conditions read it;
    # `key_id` its id, which owns its spend and counters)
    user: str | None = None
    team: str | None = None
    key: str | None = None
    key_id: str | None = None
    allowed_models: tuple[str, ...] | None = None

    # plan: the checked body, the request as the policy sees it, and its plan
    parsed: Any = None
    request: Request | None = None
    decision: Decision | None = None

    # guards: what they did to the texts going in and out, when the plan has any
    guarding: Guarding | None = None

    # limits: the counters met, what the admission holds until it settles, the headers
    applied: list[Applied] = field(default_factory=list)
    held: Held | None = None
    limit_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    # cache: hit, miss or bypass; where the answer is or would be kept, what was found
    cache: str = "bypass"
    lookup: Lookup | None = None
    hit: Entry | None = None
    similarity: float | None = None
    streamed: list[Body] | None = None  # a stream's chunks, to keep once it completes

    # chain: the tries, and the answer: a body, or a stream's chunks
    attempts: list[Attempt] = field(default_factory=list)
    answered_by: Deployment | None = None
    answer: Body | None = None
    chunks: AsyncIterator[Body] | None = None

    # usage: tokens and their cost, from the answer or the stream's chunks
    usage: Body = field(default_factory=dict)
    cost: float | None = None
    delivered: int = 0  # characters of streamed text sent on, for a cut stream's cost

    # conversation: a Responses request's own input, and the chain it continues
    conversation: Conversation | None = None

    # tracing: the request's span and its children's parent (runtime/tracing.py), if traced
    trace: Scope | None = None

    # how it ended
    status: int = 200
    error: GatewayError | None = None

    @property
    def include_usage(self) -> bool:
        """Whether the client asked for a stream's closing usage chunk."""
        options = self.body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    def tried(self) -> int:
        """The models tried, not passed over: on every answer's headers, so a loop."""
        count = 0
        for attempt in self.attempts:
            if not attempt.skipped:
                count += 1
        return count
