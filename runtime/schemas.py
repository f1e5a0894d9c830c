"""Request bodies as the API takes them, checked before anything else reads them.

Fields gwc does not know are kept and passed on (providers grow features
faster than gateways), but the ones it routes on must have the right types,
as strictly as OpenAI's API checks them: a `stream` of `"yes"` or `1`, or a
`temperature` of `"0.5"`, is a 400 `invalid_type`, neither coerced nor
forwarded (an integer is a number, as in JSON).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.errors import GatewayError


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    tools: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None


class Turn(BaseModel):
    """A Messages turn; `system` in the middle of a conversation is a beta Claude Code uses."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]]


class CountTokensRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    messages: list[Turn] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    tools: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    metadata: dict[str, str] | None = None


def parse(model: type[BaseModel], data: Any) -> Any:
    """A checked body, or a 400 naming the first field that is wrong."""
    if not isinstance(data, dict):
        raise GatewayError(400, "the request body must be a JSON object", "invalid_body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _path(first["loc"])
        kind = first["type"]
        if kind == "missing":
            code = "missing_field"
        elif kind.endswith("_type"):
            code = "invalid_type"
        else:
            code = "invalid_value"
        raise GatewayError(400, f"invalid '{where}': {first['msg']}", code,
                           param=where) from exc


def _path(loc: tuple[int | str, ...]) -> str:
    """A field's place as a client writes it: `messages[0].content`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out
