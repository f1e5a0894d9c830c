"""`/admin/keys` and `/admin/spend`: the records' commands over HTTP, for the admin key.

`POST /admin/keys` takes `{"team", "user", "name", "expires_in" (seconds),
"models"}` and answers the new key with its secret, once; `GET` lists the keys
(never a secret); `DELETE /admin/keys/{id}` revokes one, on every replica
within a second. `GET /admin/spend?by=team&since=RFC3339` is `gwc spend`.
The database is called in a thread, off the serving loop.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from policies.keys import Keys
from policies.ledger import By, Ledger
from policies.records import Records
from runtime.errors import GatewayError
from runtime.gateway import Gateway
from runtime.records_commands import key_json

MAX_LIFETIME = 100 * 365 * 86400.0  # seconds; NaN and infinities fail the comparison too


def _records(gateway: Gateway) -> Records:
    records = gateway.state.records
    if records is None:
        raise GatewayError(503, "this gateway has no database (GW_DB_URL)", "no_database")
    return records


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise GatewayError(400, "the body is not JSON", "invalid_json") from exc
    if not isinstance(body, dict):
        raise GatewayError(400, "the body must be a JSON object", "invalid_type")
    return body


def text_field(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise GatewayError(400, f"'{name}' must be a non-empty string", "invalid_type",
                           param=name)
    return value


def routes(gateway: Gateway) -> dict[str, Any]:
    async def create_key(request: Request) -> Response:
        body = await json_body(request)
        team = text_field(body, "team", required=True)
        assert team is not None
        expires = body.get("expires_in")
        if expires is not None and (type(expires) not in (int, float) or
                                    not 0 < expires <= MAX_LIFETIME):
            raise GatewayError(400, "'expires_in' must be a number of seconds, > 0 and at "
                               "most a hundred years", "invalid_value", param="expires_in")
        models = body.get("models")
        if models is not None and (not isinstance(models, list) or not models or
                                   not all(isinstance(m, str) for m in models)):
            raise GatewayError(400, "'models' must be a list of model names", "invalid_type",
                               param="models")
        keys = Keys(_records(gateway))
        record, secret = await asyncio.to_thread(
            keys.create_key, team, text_field(body, "user"), text_field(body, "name"),
            time.time() + expires if expires is not None else None, models)
        return JSONResponse({**key_json(record), "key": secret}, 201)

    async def list_keys(request: Request) -> Response:
        found = await asyncio.to_thread(Keys(_records(gateway)).list_keys)
        return JSONResponse([key_json(record) for record in found])

    async def revoke_key(request: Request) -> Response:
        key_id = request.path_params["key_id"]
        if not await asyncio.to_thread(Keys(_records(gateway)).revoke, key_id):
            raise GatewayError(404, f"no key {key_id}", "key_not_found")
        return JSONResponse({"id": key_id, "revoked": True})

    async def spend(request: Request) -> Response:
        by = request.query_params.get("by", "team")
        if by not in ("team", "user", "key", "model"):
            raise GatewayError(400, "'by' must be team, user, key or model", "invalid_value",
                               param="by")
        since_text = request.query_params.get("since")
        try:
            since = datetime.fromisoformat(since_text).timestamp() if since_text else None
        except ValueError as exc:
            raise GatewayError(400, "'since' must be a date or an RFC 3339 time",
                               "invalid_value", param="since") from exc
        report = await asyncio.to_thread(Ledger(_records(gateway)).spend_report,
                                         cast(By, by), since)
        return JSONResponse(report)

    return {"create_key": create_key, "list_keys": list_keys, "revoke_key": revoke_key,
            "spend": spend}
