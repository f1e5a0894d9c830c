"""A running gateway in front of running fakes, for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from policies.memory_counters import MemoryCounters
from policies.records import open_records
from runtime.access_log import AccessLog
from runtime.app import create_app
from runtime.gateway import Gateway
from runtime.limiting import Limiter
from runtime.state import State
from tests.fakes import API_KEY, Script, anthropic_fake, gemini_fake, openai_fake, serving

ADMIN_KEY = "admin-secret"

POLICY = """
provider fake {{
  type     = openai
  base_url = "{openai}/v1"
  api_key  = "{key}"
  timeout  = 2s
  retry {{
    attempts = 2
    backoff  = 10ms..2s
    on       = [429, 5xx, timeout, connect]
  }}
}}

provider flaky {{
  type     = openai
  base_url = "{openai}/v1"
  api_key  = "{key}"
  retry {{ attempts = 1 }}
  breaker {{
    failures = 2
    window   = 30s
    cooldown = 1s
  }}
}}

provider azure {{
  type        = azure
  base_url    = "{openai}"
  api_key     = "{key}"
  api_version = "2024-10-21"
}}

provider vllm {{
  type     = openai_compatible
  base_url = "{openai_by_name}/v1"
  api_key  = "{key}"
}}

provider claude {{
  type     = anthropic
  base_url = "{anthropic}"
  api_key  = "{key}"
}}

provider google {{
  type     = gemini
  base_url = "{gemini}/v1beta"
  api_key  = "{key}"
}}

model ok          {{ provider = fake; name = "ok"; input = $1/1M; output = $2/1M; context = 100k }}
model broken      {{ provider = fake; name = "error-500" }}
model failing     {{ provider = fake; name = "error-500" }}
model bad-request {{ provider = fake; name = "error-400" }}
model limited     {{ provider = fake; name = "limited" }}
model slow        {{ provider = fake; name = "slow"; timeout = 500ms }}
model cut         {{ provider = fake; name = "cut" }}
model down        {{ provider = flaky; name = "down" }}
model hang        {{ provider = fake; name = "hang" }}
model tiny        {{ provider = fake; name = "ok"; context = 10 }}
model emb         {{ provider = fake; name = "emb" }}
model on-azure    {{ provider = azure; name = "prod-deployment" }}
model on-vllm     {{ provider = vllm; name = "llama" }}
model pooled-a    {{ provider = fake; name = "pool-a" }}
model pooled-b    {{ provider = fake; name = "pool-b" }}
model dead        {{ provider = fake; name = "error-503" }}

pool spread {{
  strategy = round_robin
  members  = [pooled-a, pooled-b]
}}
model claude      {{ provider = claude; name = "ok"; max_output = 1k }}
model claude-cut  {{ provider = claude; name = "cut" }}
model claude-think {{ provider = claude; name = "thinking" }}
model gemini      {{ provider = google; name = "ok" }}
model gemini-cut  {{ provider = google; name = "cut" }}

route {{
  when endpoint == "embeddings"        -> emb
  when model == "falls-back"           -> failing, ok
  when model == "all-broken"           -> broken
  when model == "retried"              -> limited
  when model == "times-out"            -> slow, ok
  when model == "breaker"              -> down, ok
  when model == "refused"              -> bad-request, ok
  when model == "too-long"             -> tiny, ok
  when model == "forbidden"            -> deny "not for you"
  when model == "hang"                 -> hang
  when model == "spread"               -> spread
  when model == "only-slow"            -> slow
  when model == "stream-falls-back"    -> dead, ok
  when model in ["on-azure", "on-vllm"] -> requested
  when model in ["cut", "claude-cut", "gemini-cut"] -> requested
  when model in ["ok", "claude", "gemini", "claude-think"] -> requested
  when model == "claude-sonnet-4-5-20250929" -> claude
  when model == "sticky" and header["x-start"] == "vllm" -> on-vllm, ok
  when model == "sticky"               -> ok, on-vllm
}}

auth {{
  mode        = headers
  team_header = "x-team"
}}
"""


@dataclass
class Stack:
    url: str
    openai: Script
    anthropic: Script
    gemini: Script
    gateway: Gateway
    policy: Path

    def client(self, **options: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0,
                             **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    scripts = Script(), Script(), Script()
    folder = tmp_path_factory.mktemp("gateway")
    with serving(openai_fake.app(scripts[0])) as o, serving(anthropic_fake.app(scripts[1])) as a, \
            serving(gemini_fake.app(scripts[2])) as g:
        policy = folder / "policy.gw"
        # one provider by a host name, as real ones are: cookie jars take no IP's cookies
        by_name = o.replace("127.0.0.1", "localhost")
        policy.write_text(POLICY.format(openai=o, openai_by_name=by_name, anthropic=a,
                                        gemini=g, key=API_KEY))
        log = (folder / "access.log").open("wb")
        # counters in memory, records (the stored responses) in SQLite beside the log
        state = State(Limiter(MemoryCounters()), open_records(f"sqlite:///{folder}/gw.db"))
        gateway = Gateway(str(policy), {}, log=AccessLog(log), state=state)
        app = create_app(gateway, max_body=64 * 1024, admin_key=ADMIN_KEY)
        with serving(app) as url:
            yield Stack(url, *scripts, gateway, policy)
        gateway.log.close()
        log.close()
