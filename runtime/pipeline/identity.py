"""Identity: who is calling, by the policy's `auth`.

`keys` (the default) takes a virtual key from `Authorization: Bearer` or
`x-api-key`, looked up in memory (runtime/state.py keeps the index fresh);
an unknown, revoked or expired key is a 401 that names the key by its id at
most, never by its secret. `headers` trusts the user and team headers it
names (a gateway behind an authenticating proxy); `none` knows nobody.
"""

from __future__ import annotations

from runtime.errors import GatewayError
from runtime.pipeline.exchange import Exchange


def enter(exchange: Exchange) -> None:
    auth = exchange.loaded.policy.auth
    headers = exchange.headers
    if auth.mode == "headers":
        exchange.user = headers.get(auth.user_header.lower())
        exchange.team = headers.get(auth.team_header.lower())
    elif auth.mode == "keys":
        secret = headers.get("authorization", "")
        secret = secret[7:].strip() if secret[:7].lower() == "bearer " else \
            headers.get("x-api-key", "").strip()
        keyring = exchange.gateway.state.keyring
        if not secret:
            raise GatewayError(401, "no API key: send Authorization: Bearer <virtual key>",
                               "invalid_api_key")
        if keyring is None:
            raise GatewayError(401, "this gateway has no key database to check keys against",
                               "invalid_api_key")
        found = keyring.lookup(secret, exchange.gateway.limiter.clock())
        if not found.ok or found.record is None:
            raise GatewayError(401, found.message, "invalid_api_key")
        record = found.record
        exchange.key_id, exchange.team, exchange.user = record.id, record.team, record.user
        exchange.key = record.name or record.id
        exchange.allowed_models = record.models
