"""Identity: who is calling, by the policy's `auth`.

`headers` trusts the user and team headers it names (a gateway behind an
authenticating proxy); `none` knows nobody; `keys`, virtual keys, arrive with
the limits work, and until then such a policy is answered 401 and told so.
"""

from __future__ import annotations

from runtime.errors import GatewayError
from runtime.pipeline.exchange import Exchange


def enter(exchange: Exchange) -> None:
    auth = exchange.loaded.policy.auth
    if auth.mode == "headers":
        exchange.user = exchange.headers.get(auth.user_header.lower())
        exchange.team = exchange.headers.get(auth.team_header.lower())
    elif auth.mode == "keys":
        raise GatewayError(401, "this policy authenticates with virtual keys, which this "
                           "build of gwc does not issue yet; use auth { mode = headers } "
                           "or mode = none", "invalid_api_key")
