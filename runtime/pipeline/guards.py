"""Guards: the request's texts checked before anything is spent, the answer's before
the client reads them.

The plan names the guards a request meets (`guard NAME [when COND]`). The input
stage, after the plan and before limits and the cache, reads the texts the
client sent (`Endpoint.prompt`): a refusal is a 400 `guardrail_violation` that
spends no quota and calls no provider; a redaction rewrites the body, so the
upstream, the cache key and a stored response all hold `[EMAIL]`, never the
address. The output stage checks a whole answer on its way out, and a stream
as it goes (`stream`): each piece of text is held back a window
(policies/guarding.py) so that a hit split across chunks is still one hit, and
redacted in the stream itself; a refusal mid-stream ends it with the API's
error event, never a clean end.

Detectors and patterns run first; a guard's webhook then gets the text as it
would go on (already redacted), and every webhook of one request's input runs
at once. A webhook that fails, answers junk or is slower than its `timeout`
decides by `on_error`. A stream that meets an output webhook is held whole
until the webhook has read it. Nothing is cached across texts: each request's
text is asked about afresh.

What acted is kept on the exchange: the HTTP layer names it in `x-gw-guards`,
and the observe stage logs and meters it. A `shadow` guard does all of it but
refuse or change anything.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import aiohttp
import orjson

from compiler.compiled import Guard, needles, regex
from policies.guarding import Check, Finding, Holdback, Refused, judge
from runtime.by_identity import ByIdentity
from runtime.errors import GatewayError
from runtime.formats.base import Slot, closed
from runtime.pipeline.exchange import Body, Exchange
from runtime.providers.base import resolve

logger = logging.getLogger("gwc")
WEBHOOK = "webhook"  # the kind a webhook's verdict is reported under
STRONGEST = ("deny", "redact", "flag", "allow")  # a guard's outcomes, the one named first wins
Texts = Callable[[Body], Iterator[Slot]]  # where a body's texts are (a `Format` says)
SEPARATOR = "\x00"  # between a request's texts judged as one: no detector's hit spans it


@dataclass(frozen=True, slots=True)
class Acted:
    """One thing one guard did (or, in shadow mode, would have done)."""

    guard: str
    direction: str  # input, output
    action: str  # deny, redact, flag; allow for a webhook that failed open
    kind: str  # a detector's name, `pattern`, or `webhook`
    shadow: bool = False

    @property
    def outcome(self) -> str:
        return f"would-{self.action}" if self.shadow else self.action


@dataclass(slots=True)
class Guarding:
    """A request's guards at work: what acted, and a guarded stream's own chunks."""

    acted: list[Acted] = field(default_factory=list)
    upstream: AsyncIterator[Body] | None = None

    def header(self) -> str:
        """`x-gw-guards`: each guard that acted, once, with the strongest thing it did."""
        named: dict[str, Acted] = {}
        for act in self.acted:
            kept = named.get(act.guard)
            if kept is None or _rank(act) < _rank(kept):
                named[act.guard] = act
        return ", ".join(f"{name}={act.outcome}" for name, act in named.items())


def _rank(act: Acted) -> tuple[bool, int]:
    return act.shadow, STRONGEST.index(act.action)


@dataclass(frozen=True, slots=True)
class Sorted:
    """A decision's guards as each stage runs them, sorted once per decision."""

    input_checks: list[Check]  # detectors and patterns, in policy order
    input_hooks: list[Guard]
    outputs: list[Guard]
    output_checks: list[Check]
    output_hooks: list[Guard]


SORTED_KEPT = 4096  # decisions' guards kept sorted; a policy has far fewer


def _sort(guards: tuple[Guard, ...]) -> Sorted:
    inputs = [g for g in guards if g.inputs]
    outputs = [g for g in guards if g.outputs]
    return Sorted(_checks(inputs), [g for g in inputs if g.webhook is not None], outputs,
                  _checks(outputs), [g for g in outputs if g.webhook is not None])


# The guards sorted for the stages, by the identity of the decision's tuple (each
# decision is made once per policy and kept): a request hashes no guard.
sorted_guards = ByIdentity(_sort, SORTED_KEPT)


@functools.lru_cache(maxsize=1024)
def check_of(guard: Guard) -> Check:
    """A guard as the mechanism reads it, its patterns compiled once per policy: as one
    alternation, each in a group of its own so that its flags stay its own."""
    deny = regex("|".join(f"(?:{p})" for p in guard.deny)) if guard.deny else None
    return Check(guard.name, guard.detect, deny, guard.action, guard.mode == "shadow",
                 needles(guard.deny) if guard.deny else None)


def _checks(guards: Iterable[Guard]) -> list[Check]:
    return [check_of(g) for g in guards if g.detect or g.deny]


def _refusal(guard: str, kind: str, direction: str) -> GatewayError:
    what = "the request" if direction == "input" else "the answer"
    found = {"pattern": "it matches one of the guard's deny patterns",
             WEBHOOK: "the guard's webhook refused it"}.get(kind, f"{kind} found")
    return GatewayError(400, f"guard '{guard}' refused {what}: {found}", "guardrail_violation")


def _record(guarding: Guarding, found: Sequence[Finding], direction: str) -> None:
    if found:
        guarding.acted += [Acted(f.guard, direction, f.action, f.kind, f.shadow) for f in found]


# ------------------------------------------------------------------ input

async def enter(exchange: Exchange) -> None:
    assert exchange.decision is not None
    guards = exchange.decision.guards
    if not guards:
        return
    guarding = exchange.guarding = Guarding()
    sort = sorted_guards(guards)
    if sort.outputs and exchange.request is not None and exchange.request.stream \
            and exchange.body.get("n", 1) not in (1, None):
        raise GatewayError(400, "output guards read one choice of a stream: send 'n' = 1, "
                           "or don't stream", "invalid_request", param="n")
    if not sort.input_checks and not sort.input_hooks:
        return
    slots = list(exchange.endpoint.prompt(exchange.body))
    if sort.input_checks:
        texts = [holder[key] for holder, key in slots]
        for (holder, key), text in zip(
                slots, judge_together(guarding, texts, sort.input_checks), strict=True):
            holder[key] = text
    if sort.input_hooks:
        text = "\n\n".join(holder[key] for holder, key in slots)
        await _asked(exchange, sort.input_hooks, "input", text)


def judge_together(guarding: Guarding, texts: list[str], checks: list[Check]) -> list[str]:
    """The request's texts as they go on, judged as one: joined by a character no
    detector reads across, so a long conversation costs one pass, not one a message."""
    joined = SEPARATOR.join(texts)
    if len(texts) != 1 and joined.count(SEPARATOR) != len(texts) - 1:
        verdicts = [judge(text, checks) for text in texts]  # a text holds one: one by one
    else:
        verdicts = [judge(joined, checks)]
    for verdict in verdicts:
        _record(guarding, verdict.found, "input")
        if verdict.refused is not None:
            raise _refusal(verdict.refused.guard, verdict.refused.kind, "input")
    if len(verdicts) == 1 and len(texts) != 1:
        return verdicts[0].text.split(SEPARATOR)
    return [verdict.text for verdict in verdicts]


# ------------------------------------------------------------------ webhooks

async def _asked(exchange: Exchange, guards: Sequence[Guard], direction: str, text: str
                 ) -> None:
    """Every webhook at once; the first (in policy order) that refuses, refuses."""
    assert exchange.guarding is not None
    verdicts = await asyncio.gather(*(_ask(exchange, g, direction, text) for g in guards))
    for guard, verdict in zip(guards, verdicts, strict=True):
        if verdict is None:
            continue
        exchange.guarding.acted.append(verdict)
        if verdict.action == "deny" and not verdict.shadow:
            raise _refusal(guard.name, WEBHOOK, direction)


async def _ask(exchange: Exchange, guard: Guard, direction: str, text: str) -> Acted | None:
    """What the guard's webhook says of `text`: None to let it go, else what acted."""
    gateway = exchange.gateway
    url = resolve(guard.webhook, gateway.env)
    started = gateway.clock()
    outcome = "error"
    try:
        if not url or gateway.session is None:
            raise ValueError("no webhook URL" if not url else "the gateway is not started")
        payload = {"guard": guard.name, "direction": direction, "text": text}
        async with gateway.session.post(
                url, data=orjson.dumps(payload), headers={"content-type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=guard.timeout)) as reply:
            reply.raise_for_status()
            answer = orjson.loads(await reply.read())
        allowed = answer.get("allow") if isinstance(answer, dict) else None
        if not isinstance(allowed, bool):
            raise ValueError("the answer has no boolean 'allow'")
        outcome = "allow" if allowed else "deny"
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as failure:
        logger.warning("gwc: guard %s's webhook failed (%s): on_error = %s", guard.name,
                       type(failure).__name__ if str(failure) == "" else failure,
                       guard.on_error)
    finally:
        gateway.metrics.guard_webhooks.observe((guard.name, outcome),
                                               gateway.clock() - started)
    if outcome == "allow":
        return None
    if outcome == "deny":
        return Acted(guard.name, direction, "deny", WEBHOOK, guard.mode == "shadow")
    return Acted(guard.name, direction, guard.on_error, WEBHOOK, guard.mode == "shadow")


# ------------------------------------------------------------------ output

async def leave(exchange: Exchange) -> None:
    """A whole answer checked (a refused one is taken back: its cost stands); a guarded
    stream's upstream let go, whether the stream was ever read or not."""
    guarding = exchange.guarding
    if guarding is None:
        return
    if guarding.upstream is not None:
        await closed(guarding.upstream)
        return
    answer = exchange.answer
    assert exchange.decision is not None
    sort = sorted_guards(exchange.decision.guards)
    if answer is None or exchange.error is not None or not sort.outputs:
        return
    try:
        exchange.answer = await _judged(exchange, answer, sort)
    except GatewayError as refusal:
        exchange.error, exchange.status, exchange.answer = refusal, refusal.status, None


async def _judged(exchange: Exchange, answer: Body, sort: Sorted) -> Body:
    assert exchange.guarding is not None
    form = exchange.endpoint.format
    texts: list[str] = []
    for holder, key in form.said(answer):
        verdict = judge(holder[key], sort.output_checks)
        _record(exchange.guarding, verdict.found, "output")
        if verdict.refused is not None:
            raise _refusal(verdict.refused.guard, verdict.refused.kind, "output")
        texts.append(verdict.text)
    if sort.output_hooks:
        await _asked(exchange, sort.output_hooks, "output", "\n\n".join(texts))
    return _rewritten(answer, form.said, texts)


def _rewritten(body: Body, slots: Texts, texts: list[str]) -> Body:
    """`body` with its texts replaced by `texts`: a copy, and only if one changed (a kept
    answer's parts are shared with the cache's entry)."""
    if all(holder[key] == text for (holder, key), text in zip(slots(body), texts, strict=True)):
        return body
    copy: Body = orjson.loads(orjson.dumps(body))
    for (holder, key), text in zip(slots(copy), texts, strict=True):
        holder[key] = text
    return copy


def stream(exchange: Exchange, chunks: AsyncIterator[Body]) -> AsyncIterator[Body]:
    """The stream with its text checked as it goes, when the plan has output guards."""
    guarding = exchange.guarding
    if guarding is None:
        return chunks
    assert exchange.decision is not None
    sort = sorted_guards(exchange.decision.guards)
    if not sort.outputs:
        return chunks
    guarding.upstream = chunks
    return _guarded(exchange, chunks, sort)


async def _guarded(exchange: Exchange, chunks: AsyncIterator[Body], sort: Sorted
                   ) -> AsyncIterator[Body]:
    """Each piece of text held back (policies/guarding.Holdback) and put back as it is
    released; the last piece's chunk waits, so that what is still held goes with it
    when the text ends. A refusal is raised as the `GatewayError` the HTTP layer ends
    the stream with."""
    assert exchange.guarding is not None
    guarding, form = exchange.guarding, exchange.endpoint.format
    checks, hooked = sort.output_checks, sort.output_hooks
    window = 1 << 62 if hooked else None  # a webhook reads the whole text: hold it all
    holdback = _holdback(checks, window)
    held: Slot | None = None
    last: Body | None = None  # the chunk of the last piece of text, not sent yet
    try:
        async for chunk in chunks:
            slot = form.delta(chunk)
            if slot is not None:
                holder, key = slot
                holder[key] = holdback.feed(holder[key])
                if last is not None:
                    yield last
                last, held = chunk, slot
            if not form.closes(chunk):
                continue
            if last is not None and held is not None:
                await _released(exchange, holdback, held, hooked)
                holdback = _holdback(checks, window)
                yield last
                last = held = None
            if slot is None:
                yield _whole(chunk, form.whole, checks)
        if last is not None and held is not None:  # the stream ended without a closing chunk
            await _released(exchange, holdback, held, hooked)
            yield last
    except Refused as refusal:
        guarding.acted.append(Acted(refusal.finding.guard, "output", "deny",
                                    refusal.finding.kind))
        raise _refusal(refusal.finding.guard, refusal.finding.kind, "output") from None
    finally:
        await closed(chunks)


async def _released(exchange: Exchange, holdback: Holdback, held: Slot,
                    hooked: list[Guard]) -> None:
    """What is still held of a text, put after its last piece once the text's webhooks
    have read it whole; a refusal is raised (`Refused`, or the webhook's)."""
    assert exchange.guarding is not None
    if hooked:
        await _asked(exchange, hooked, "output", holdback.pending)
    holder, key = held
    holder[key] += holdback.close()
    _record(exchange.guarding, holdback.found, "output")


def _holdback(checks: list[Check], window: int | None) -> Holdback:
    return Holdback(checks) if window is None else Holdback(checks, window)


def _whole(chunk: Body, slots: Texts, checks: list[Check]) -> Body:
    """A chunk that repeats whole texts (a Responses `.done` event) with them redacted
    as their pieces were; its findings were the pieces'."""
    texts = [judge(holder[key], checks).text for holder, key in slots(chunk)]
    return _rewritten(chunk, slots, texts) if texts else chunk
