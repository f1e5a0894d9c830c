"""What the pipeline needs to know of a client's wire format, and nothing more.

An answer and a stream's chunks stay in the client's format from the chain
on, so that an answer passed through from an upstream that speaks the same
format reaches the client untouched (Anthropic's thinking blocks, its
`cache_control` echoes). The few stages that read an answer read it through
its `Format`: the usage stage for tokens, the cache stage to keep and replay
it, the HTTP layer to frame its chunks and errors.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from runtime.errors import GatewayError

if TYPE_CHECKING:
    from runtime.pipeline.exchange import Exchange

Body = dict[str, Any]
Slot = tuple[Any, Any]  # where a text is, `holder[key]`: to read it and to put it back


class Format(abc.ABC):
    name: str
    media_type = "text/event-stream"
    done = b""  # what ends a stream that completed, after its last chunk

    @abc.abstractmethod
    def usage(self, raw: Body) -> Body:
        """The tokens an answer or a stream's `raw` usage counts, in chat's terms
        (`prompt_tokens`, `completion_tokens`, their details), which pricing reads."""

    def answer_usage(self, answer: Body) -> Body:
        """A whole answer's raw usage."""
        found = answer.get("usage")
        return found if isinstance(found, dict) else {}

    @abc.abstractmethod
    def chunk_usage(self, chunk: Body) -> Body | None:
        """The raw usage a stream chunk carries, if any: later counts update earlier ones."""

    @abc.abstractmethod
    def chunk_text(self, chunk: Body) -> int:
        """Characters of answer text a chunk delivers (a cut stream is charged for them)."""

    def shown(self, exchange: Exchange, chunk: Body) -> Body | None:
        """The chunk as the client gets it once its usage is read; None holds it back."""
        return chunk

    @abc.abstractmethod
    def frame(self, chunk: Body) -> bytes:
        """One chunk as server-sent-event bytes."""

    def error(self, error: GatewayError) -> Body:
        """A refusal's body in this API's error shape: OpenAI's, but on Anthropic's routes."""
        return error.body()

    @abc.abstractmethod
    def broken(self, error: GatewayError) -> bytes:
        """The event that ends a stream that broke after it began, so that no client
        takes it for complete."""

    @abc.abstractmethod
    def fresh(self, answer: Body) -> Body:
        """A kept answer served again: its own id (and time), the model that answered."""

    @abc.abstractmethod
    def replay(self, answer: Body, include_usage: bool) -> AsyncIterator[Body]:
        """A kept answer as the chunks of a stream, as this API sends them."""

    @abc.abstractmethod
    def assembled(self, chunks: list[Body], usage: Body) -> Body | None:
        """The answer a completed stream delivered, to keep; None for what a replay
        could not give back as it came."""

    # what output guards read and rewrite (runtime/pipeline/guards.py)

    @abc.abstractmethod
    def said(self, answer: Body) -> Iterator[Slot]:
        """The texts a whole answer says: what its output guards check."""

    @abc.abstractmethod
    def delta(self, chunk: Body) -> Slot | None:
        """Where a stream chunk's piece of answer text is, if it carries one."""

    @abc.abstractmethod
    def closes(self, chunk: Body) -> bool:
        """Whether the text being streamed is over with this chunk: whatever of it is
        held back must go before the chunk does (or with it, if it is the last piece)."""

    def whole(self, chunk: Body) -> Iterator[Slot]:
        """Texts a stream chunk repeats whole (a Responses `.done` event's), which must
        read as the pieces did once they were redacted."""
        return iter(())


_CHAT_MESSAGE = re.compile(r"messages\[(\d+)\](\.content.*)?")


def texts_of(holder: Any, key: Any) -> Iterator[Slot]:
    """The texts of a content field: the field itself when it is a string, else each
    of its parts' `text` (a part without one, an image or a tool call, holds none)."""
    content = holder.get(key) if isinstance(holder, dict) else None
    if isinstance(content, str):
        yield holder, key
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part, "text"


def renamed(refusal: GatewayError, origins: Sequence[str]) -> GatewayError:
    """A refusal by the provider's own translation of the chat request made from the
    client's, naming the field the client sent rather than the chat one: `origins[i]`
    is where chat message i came from (`input[2]`, `messages[0]`, `system`), and the
    content index is chat's (the client's too, unless tool results or thinking blocks
    were taken out of that turn)."""
    found = _CHAT_MESSAGE.fullmatch(refusal.param or "")
    if found is None or int(found[1]) >= len(origins):
        return refusal
    origin = origins[int(found[1])]
    param = origin + (found[2] or "") if origin.endswith("]") else origin
    return GatewayError(refusal.status, refusal.message.replace(f"'{refusal.param}'",
                                                                f"'{param}'"),
                        refusal.code, param=param, headers=refusal.headers)


async def closed(chunks: AsyncIterator[Body]) -> None:
    """Let a stream's upstream go now, not when the collector gets to it."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


def first_choices(chunk: Body) -> Iterator[Body]:
    """A chat chunk's choices of index 0, each an object: another API answers with one
    message, so only the first choice translates (junk in a chunk is skipped)."""
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            yield choice


async def translated(chunks: AsyncIterator[Body], opening: Callable[[Body], list[Body]],
                     each: Callable[[Body], list[Body]], closing: Callable[[], list[Body]],
                     origins: Sequence[str]) -> AsyncIterator[Body]:
    """A chat stream as another API's events: those its first chunk opens with, each
    chunk's, and those its end closes with. A refusal of the chat request (raised at the
    first step) names the client's field (`renamed`); the upstream goes at once."""
    try:
        first = True
        async for chunk in chunks:
            if first:
                for event in opening(chunk):
                    yield event
                first = False
            for event in each(chunk):
                yield event
        for event in closing():
            yield event
    except GatewayError as refusal:
        raise renamed(refusal, origins) from None
    finally:
        await closed(chunks)
