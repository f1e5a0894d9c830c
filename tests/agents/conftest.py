"""The agents' fixtures (`agents`, `recorder`) for the tests in this folder."""

from tests.agents.fixtures import agents, recorder

__all__ = ["agents", "recorder"]
