"""Request ids: every answer's `x-gw-request-id`, from the HTTP layer's refusals to the pipeline's.

Unique, not secret: they name a request in logs and in a user's bug report, so
they come from a fast pseudo-random source rather than the system's.
"""

from __future__ import annotations

import random


def new_request_id() -> str:
    return f"{random.getrandbits(128):032x}"
