"""Generated policies for the benchmarks: realistic rules, at any size.

Rules route by team and model (the common case), with a share testing token
counts, headers, streaming and budget shares, and a few regexes; quotas and
budgets per team and per key, a cache, and an `otherwise`.
"""

from __future__ import annotations

import random

HEADER = """\
provider openai { type = openai; api_key = env("OPENAI_API_KEY", "sk-bench") }
provider local { type = mock }
"""


def policy(rules: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    teams = [f"team-{i}" for i in range(max(4, rules // 20))]
    models = [f"m{i}" for i in range(20)]
    lines = [HEADER]
    lines += [f'model {m} {{ provider = {"openai" if i % 2 else "local"}; input = $1/1M; '
              f'output = $2/1M; context = 128k }}' for i, m in enumerate(models)]
    lines.append("pool cheap { strategy = weighted; members = [m0: 3, m1: 1] }")
    lines.append("route {")
    for _ in range(rules - 1):
        parts = [f'team == "{rng.choice(teams)}"']
        roll = rng.random()
        if roll < 0.6:
            parts.append(f'model == "{rng.choice(models)}"')
        elif roll < 0.75:
            parts.append(f"tokens > {rng.choice(['8k', '32k', '100k'])}")
        elif roll < 0.85:
            parts.append(f'header["x-feature"] == "f{rng.randrange(8)}"')
        elif roll < 0.9:
            parts.append("stream")
        elif roll < 0.95:
            parts.append(f"budget.team > {rng.choice(['50%', '80%', '90%'])}")
        else:
            parts.append(f'model matches "^m{rng.randrange(10)}"')
        targets = ", ".join(rng.sample(models, rng.randint(1, 3)))
        lines.append(f"  when {' and '.join(parts)} -> {targets}")
    lines.append("  otherwise -> cheap")
    lines.append("}")
    lines.append("quota per key { requests = 600 per minute; tokens = 2M per day }")
    lines.append('quota per team when model == "m3" { requests = 100 per minute }')
    lines.append("budget per team { limit = $500 per month; over = downgrade(m0) }")
    lines.append(f'budget team "{teams[0]}" {{ limit = $2000 per month }}')
    lines.append('cache when endpoint == "chat" and temperature <= 0.3 { mode = exact }')
    return "\n".join(lines) + "\n"


def requests(count: int, rules: int, seed: int = 11) -> list[dict[str, object]]:
    rng = random.Random(seed)
    teams = max(4, rules // 20)
    out: list[dict[str, object]] = []
    for _ in range(count):
        request: dict[str, object] = {
            "model": rng.choice([f"m{rng.randrange(22)}", None]),
            "team": f"team-{rng.randrange(teams + 2)}", "key": f"k{rng.randrange(50)}",
            "tokens": rng.choice([200, 5000, 20000, 150000]), "stream": rng.random() < 0.3,
            "temperature": rng.choice([None, 0.2, 0.8]),
            "headers": {"x-feature": f"f{rng.randrange(10)}"} if rng.random() < 0.2 else {},
            "budget": {"team": rng.choice([0.1, 0.6, 0.85, 0.95])},
        }
        out.append(request)
    return out
