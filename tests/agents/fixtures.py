"""The agents' fixtures, for tests here and, through `pytest_plugins`, anywhere.

`agents` installs the pinned agents once per worker; where npm can't, the test
skips with the reason, except under CI, where it fails (as `tests/services.py`
does for Redis and PostgreSQL): a CI that skipped the real clients would pass
without having tried them. `recorder` is a fresh loopback recorder per test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agents import harness
from tests.agents.recorder import Recording, recording
from tests.services import unavailable


@pytest.fixture(scope="session")
def agents() -> harness.Installed:
    try:
        return harness.install()
    except harness.AgentsUnavailable as exc:
        unavailable("npm, for the coding agents,", exc)
        raise  # unreachable: unavailable() skips or fails


@pytest.fixture
def recorder() -> Iterator[tuple[str, Recording]]:
    """A recorder's base URL (no /v1) and what it records."""
    with recording() as served:
        yield served
