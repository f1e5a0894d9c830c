"""Conversation: a Responses follow-up made whole, and a response kept for the next.

A request with `previous_response_id` continues a chain of stored responses
(policies/responses_store.py). The entry half, after identity and before the
plan, loads the chain's history for the stages after it: the plan counts its
tokens, and the call sends it, ahead of the request's own input, to any
provider (a chat one through translation, which names a stored item it cannot
carry as `previous_response_id`; OpenAI itself inline). The cache keys the
request as it came, whose `previous_response_id` names the whole chain. It
also notes the deployment that made the response continued, which the chain
stage tries first when the plan still routes there. A follow-up that cannot be honoured
(an id unknown, expired, another tenant's, a chain past its bound, or no
database) fails closed, as a 400 naming `previous_response_id` (a 503 without
a database), never answered without part of what was said.

The exit half keeps a completed answer, unless the request said
`store: false` (as Codex does): the request's own input items and the
answer's output items, under the answer's id, owned by the caller's key and
team, so a follow-up from anyone else finds nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from policies.records import RecordsError
from policies.responses_store import ChainError, Owner
from runtime.errors import GatewayError
from runtime.formats import responses
from runtime.pipeline.exchange import Body, Exchange

logger = logging.getLogger("gwc")


@dataclass(slots=True)
class Conversation:
    """The chain a Responses request continues: its history and tokens (for the call
    and the plan) and the deployment that made it (for the chain stage)."""

    previous: str | None = None
    continues: str | None = None  # the deployment that made the previous response
    history: tuple[Body, ...] = ()  # the chain's items, oldest first
    tokens: int = 0  # the history's, estimated as the request's are
    completed: Body | None = field(default=None, repr=False)  # a stream's final Response


def owner_of(exchange: Exchange) -> Owner:
    """Whose a stored response is: the caller's key and team, or, under
    `auth { mode = headers }`, the user the headers name and their team."""
    user = f"user={exchange.user}" if exchange.user is not None else None
    return Owner(exchange.key_id or user, exchange.team)


async def enter(exchange: Exchange) -> None:
    body = exchange.body
    if not exchange.endpoint.stored or not isinstance(body, dict):
        return  # a body that is not an object is the plan's to refuse
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise GatewayError(400, "invalid 'previous_response_id': must be a string",
                           "invalid_type", param="previous_response_id")
    conversation = exchange.conversation = Conversation(previous)
    if previous is None:
        return
    store = exchange.gateway.state.responses
    if store is None:
        raise GatewayError(503, "this gateway keeps no responses to continue: it has no "
                           "database", "responses_unavailable", param="previous_response_id")
    try:
        conversation.continues, history = await asyncio.to_thread(
            store.continued, previous, owner_of(exchange))
    except ChainError as missing:
        raise GatewayError(400, str(missing), "previous_response_not_found",
                           param="previous_response_id") from missing
    conversation.history = tuple(item for item in history if isinstance(item, dict))
    conversation.tokens = exchange.endpoint.tokens({"input": list(conversation.history)})


def chunk(exchange: Exchange, chunk: Body) -> Body | None:
    conversation = exchange.conversation
    if conversation is not None and chunk.get("type") == "response.completed":
        conversation.completed = chunk.get("response")
    return chunk


async def leave(exchange: Exchange) -> None:
    conversation = exchange.conversation
    if conversation is None or exchange.status != 200 or exchange.error is not None \
            or exchange.body.get("store") is False:
        return
    answer: Any = exchange.answer if exchange.answer is not None else conversation.completed
    store = exchange.gateway.state.responses
    if store is None or not isinstance(answer, dict) or answer.get("status") != "completed" \
            or not isinstance(answer.get("id"), str):
        return
    deployment, hit = exchange.answered_by, exchange.hit
    name = deployment.name if deployment is not None else hit.model if hit else ""
    provider = deployment.provider.name if deployment is not None else \
        hit.provider if hit else ""
    # the input as it went on: an input guard may have redacted it since it came
    history = [*responses.items(exchange.body), *(answer.get("output") or [])]
    try:
        await asyncio.to_thread(
            store.save, answer["id"], owner_of(exchange), deployment=name,
            provider=provider, model=str(exchange.body.get("model")),
            previous_response_id=conversation.previous, history=history, response=answer)
    except RecordsError:  # the answer stands; a follow-up to it will fail closed
        logger.warning("gwc: a response could not be stored", exc_info=True)
