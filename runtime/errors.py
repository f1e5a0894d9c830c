"""The gateway's own errors, and the one place they become HTTP answers.

Providers turn their upstream's failures into `UpstreamError`; the pipeline
turns a request it cannot serve into a `GatewayError`; `error_response` answers
either in OpenAI's shape, `{"error": {"message", "type", "code", "param"}}`,
which every OpenAI SDK maps to its own exception classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_quota",
         403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
         408: "invalid_request_error", 413: "invalid_request_error",
         431: "invalid_request_error",
         429: "rate_limit_error", 502: "upstream_error", 503: "service_unavailable",
         504: "timeout_error"}


@dataclass
class GatewayError(Exception):
    status: int
    message: str
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": TYPES.get(self.status, "api_error"),
                          "code": self.code, "param": self.param}}


@dataclass
class UpstreamError(Exception):
    """An upstream call that failed, as the chain decides on it.

    `kind` is one of:
    - "status": the upstream answered an error status (`status`, and its own
      error `code` where it gave one, e.g. "context_length_exceeded");
    - "timeout": no connection, headers, first event or next event in time;
    - "connect": the connection was refused, reset or broken;
    - "malformed": the upstream answered, but not in its wire format (a body
      that is not JSON or not an object, a field missing, a stream with no
      valid event). It counts as a 5xx: the upstream is misbehaving.
    """

    kind: str
    message: str
    status: int | None = None
    retry_after: float | None = None
    code: str | None = None

    @property
    def label(self) -> str:
        """How the policy's `retry { on = [...] }` names this failure."""
        return str(self.status) if self.kind == "status" else self.kind

    def matches(self, retry_on: tuple[str, ...]) -> bool:
        if self.too_long:
            return False  # the same model refuses the same prompt again
        label = self.label
        if self.kind == "malformed":
            return "5xx" in retry_on or "502" in retry_on
        return label in retry_on or (self.kind == "status" and f"{label[0]}xx" in retry_on)

    @property
    def too_long(self) -> bool:
        """The prompt is over this model's context: another model may take it."""
        return self.code == "context_length_exceeded"

    @property
    def worth_falling_back(self) -> bool:
        """429, 5xx, timeouts, broken connections, junk answers and a context
        too long; never another 4xx, which the next model would refuse too (a
        malformed request, a content filter's refusal)."""
        return self.kind != "status" or self.status == 429 or (self.status or 0) >= 500 \
            or self.too_long

    @property
    def counts_against_upstream(self) -> bool:
        """Whether the breaker counts it: the upstream failed, not the request."""
        return self.worth_falling_back and not self.too_long


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), error.status, headers={**error.headers, **(headers or {})})
