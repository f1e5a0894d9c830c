"""A fast static upstream for the benchmarks: nginx answering a fixed chat completion.

nginx is the upstream design.md's figures were measured against; it answers
every POST with the same OpenAI-shaped JSON, so what is measured is the
gateway and its HTTP client, not the upstream.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

COMPLETION = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "bench-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}

CONFIG = """
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log error;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {folder};
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 100000;
    location / {{
      default_type application/json;
      return 200 '{body}';
    }}
  }}
}}
"""


@contextlib.contextmanager
def nginx(port: int) -> Iterator[str]:
    """Run nginx on 127.0.0.1:port for the duration; yields its base URL."""
    if shutil.which("nginx") is None:
        raise SystemExit("the benchmark needs nginx: apt-get install nginx-light wrk")
    with tempfile.TemporaryDirectory() as folder:
        config = os.path.join(folder, "nginx.conf")
        with open(config, "w") as handle:
            handle.write(CONFIG.format(folder=folder, port=port, body=json.dumps(COMPLETION)))
        process = subprocess.Popen(["nginx", "-c", config, "-p", folder])
        try:
            time.sleep(0.3)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait()
