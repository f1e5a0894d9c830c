"""Provider adapters by the policy's `type`: one module each."""

from __future__ import annotations

import aiohttp

from compiler.compiled import Provider
from runtime.providers.anthropic import Anthropic
from runtime.providers.base import Adapter
from runtime.providers.gemini import Gemini
from runtime.providers.mock import Mock
from runtime.providers.openai import Azure, OpenAI

ADAPTERS: dict[str, type[Adapter]] = {
    "openai": OpenAI, "openai_compatible": OpenAI, "azure": Azure,
    "anthropic": Anthropic, "gemini": Gemini, "mock": Mock,
}


def adapter(provider: Provider, session: aiohttp.ClientSession,
            env: dict[str, str]) -> Adapter:
    return ADAPTERS[provider.type](provider, session, env)


__all__ = ["ADAPTERS", "Adapter", "adapter"]
