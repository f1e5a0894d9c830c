"""Which attributes each block takes, and of what type: the language's table."""

from __future__ import annotations

from compiler.values import Field

PROVIDER_TYPES = ("openai", "openai_compatible", "azure", "anthropic", "gemini", "mock")
STRATEGIES = ("weighted", "round_robin", "least_latency", "least_cost", "least_busy")
DIMENSIONS = ("team", "user", "key", "model")
KEYED_DIMENSIONS = ("meta", "header")  # `per meta["feature"]`: one counter per value
MAX_VALUES = 1000  # distinct values a keyed subject may count per period, unless set
STORE_ERRORS = ("refuse", "local")

RETRY = {
    "attempts": Field("int", low=1, high=20),
    "backoff": Field("duration_range"),
    "on": Field("status_list"),
    "resume": Field("bool"),
}
HEALTH = {
    "interval": Field("duration", low=1.0),
    "timeout": Field("duration", low=0.001),
}
TIMEOUTS = {
    "timeout": Field("duration", low=0.001),
    "connect_timeout": Field("duration", low=0.001),
    "first_byte_timeout": Field("duration", low=0.001),
    "idle_timeout": Field("duration", low=0.001),
}
BREAKER = {
    "failures": Field("int", low=1),
    "window": Field("duration", low=0.001),
    "cooldown": Field("duration", low=0.001),
    "probes": Field("int", low=1),
    "error_rate": Field("percent"),
    "min_requests": Field("int", low=1),
}
GIVEN = {
    "model": Field("string"), "user": Field("string"), "team": Field("string"),
    "key": Field("string"), "endpoint": Field("string"), "stream": Field("bool"),
    "tools": Field("bool"), "tokens": Field("count"), "max_tokens": Field("count"),
    "temperature": Field("number"), "headers": Field("string_map"), "meta": Field("string_map"),
    "budget": Field("percent_map"),
}
EXPECT = {"route": Field("names"), "deny": Field("string"), "cache": Field("bool"),
          "guards": Field("names")}

# block kind -> (attributes, nested blocks allowed inside it)
BLOCKS: dict[str, tuple[dict[str, Field], dict[str, dict[str, Field]]]] = {
    "provider": ({
        "type": Field("name", required=True, choices=PROVIDER_TYPES),
        "base_url": Field("secret"),
        "api_key": Field("secret"),
        **TIMEOUTS,
        "headers": Field("string_map"),
        "max_concurrency": Field("count", low=1),
        "api_version": Field("string"),
        "latency": Field("duration"),
        "fail_rate": Field("fraction"),
        "fail_status": Field("int", low=100, high=599),
    }, {"retry": RETRY, "breaker": BREAKER, "health": HEALTH}),
    "model": ({
        "provider": Field("name", required=True),
        "name": Field("string"),
        "input": Field("price"),
        "output": Field("price"),
        "cached_input": Field("price"),  # prompt tokens read from the provider's cache
        "cache_write": Field("price"),  # prompt tokens written to it (Anthropic bills these)
        "context": Field("count", low=1),
        "max_output": Field("count", low=1),
        **TIMEOUTS,
        "prefill": Field("bool"),
    }, {}),
    "pool": ({
        "strategy": Field("name", choices=STRATEGIES),
        "members": Field("members", required=True),
    }, {}),
    "notify": ({
        "webhook": Field("secret", required=True),
        "format": Field("name", choices=("slack", "json")),
    }, {}),
    "retry": (RETRY, {}),
    "breaker": (BREAKER, {}),
    "auth": ({
        "mode": Field("name", choices=("keys", "headers", "none")),
        "user_header": Field("string"),
        "team_header": Field("string"),
    }, {}),
    "cache": ({
        "mode": Field("name", choices=("exact", "semantic")),
        "threshold": Field("fraction"),
        "ttl": Field("duration", low=0.001),
        "scope": Field("name", choices=("global", "team", "user", "key")),
        "embedder": Field("embedder"),
        "max_entries": Field("count", low=1),
    }, {}),
    "budget": ({
        "limit": Field("money_rate", required=True),
        "alert": Field("percent_list"),
        "notify": Field("name"),
        "over": Field("over"),
        "max_values": Field("count", low=1),
        "on_store_error": Field("name", choices=STORE_ERRORS),
    }, {}),
    "quota": ({
        "requests": Field("count_rate"),
        "tokens": Field("count_rate"),
        "burst": Field("count", low=1),
        "concurrency": Field("count", low=1),
        "mode": Field("name", choices=("enforce", "shadow")),
        "max_values": Field("count", low=1),
        "on_store_error": Field("name", choices=STORE_ERRORS),
    }, {}),
    "guard": ({
        "on": Field("name", choices=("input", "output", "both")),
        "detect": Field("detectors"),
        "deny": Field("patterns"),
        "action": Field("name", choices=("deny", "redact", "flag")),
        "webhook": Field("url"),
        "timeout": Field("duration", low=0.001),
        "on_error": Field("name", choices=("deny", "allow")),
        "mode": Field("name", choices=("enforce", "shadow")),
    }, {}),
    "test": ({}, {"given": GIVEN, "expect": EXPECT}),
}
