"""Virtual keys end to end: rotation, expiry, revocation, model lists, and no secret shown.

The in-process gateway of tests/runtime/test_limits.py moves its clock for
grace periods and expiry; the last test runs a real `gwc serve` and reads
its standard error and /metrics for any secret.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from policies.keys import Keys
from policies.records import open_records
from tests.fakes import API_KEY, free_port, gwc_serve
from tests.runtime import test_limits as harness
from tests.runtime.test_limits import HEAD, ROUTE, C, Upstreams, error_of

run, upstreams = harness.run, harness.upstreams  # the harness's fixtures, used here too
BUDGET = ROUTE + "budget per key { limit = $1 per day }\n"


def refused_without_secret(reply: httpx.Response, secret: str) -> dict[str, Any]:
    assert reply.status_code == 401
    assert secret not in reply.text
    assert all(secret not in value for value in reply.headers.values())
    return error_of(reply)


def test_a_rotated_key_keeps_both_secrets_in_grace_and_its_spend_after(run: Any) -> None:
    with run(BUDGET) as gw:
        key_id, old = gw.new_key()
        assert gw.chat(old).status_code == 200
        new = gw.keys.rotate(key_id, grace_seconds=60)
        gw.refresh()
        gw.clock.advance(59)
        assert [gw.chat(old).status_code, gw.chat(new).status_code] == [200, 200]
        gw.clock.advance(2)
        error = refused_without_secret(gw.chat(old), old)
        assert error["code"] == "invalid_api_key" and key_id in error["message"]
        assert gw.chat(new).status_code == 200
        rows = gw.spend()
        assert {r["key"] for r in rows} == {key_id} and len(rows) == 4
        [counter] = gw.charged()
        assert gw.spent_on(counter, 1.0) == pytest.approx(4 * C)


def test_an_expired_key_is_a_401_that_does_not_show_it(run: Any) -> None:
    with run(ROUTE) as gw:
        key_id, secret = gw.new_key(expires_at=gw.clock() + 10)
        assert gw.chat(secret).status_code == 200
        gw.clock.advance(10)
        error = refused_without_secret(gw.chat(secret), secret)
        assert error == {"message": f"API key {key_id} has expired", "type": error["type"],
                         "code": "invalid_api_key", "param": None}


def test_a_revoked_key_is_a_401(run: Any) -> None:
    with run(ROUTE) as gw:
        key_id, secret = gw.new_key()
        assert gw.chat(secret).status_code == 200
        assert gw.keys.revoke(key_id)
        gw.refresh()
        error = refused_without_secret(gw.chat(secret), secret)
        assert error["message"] == f"API key {key_id} has been revoked"
        refused_without_secret(gw.chat(headers={"x-api-key": secret}), secret)


def test_a_key_with_models_may_call_only_those(run: Any) -> None:
    with run(ROUTE) as gw:
        _, secret = gw.new_key(models=["ok"])
        assert gw.chat(secret, model="ok").status_code == 200
        refused = gw.chat(secret, model="other")
        assert refused.status_code == 403
        assert error_of(refused)["code"] == "model_not_allowed"
        assert error_of(refused)["param"] == "model"


def test_an_unknown_key_is_a_401_in_openais_shape(run: Any) -> None:
    with run(ROUTE) as gw:
        for headers in ({"authorization": "Bearer gw-not-a-key"}, {"x-api-key": "gw-not-a-key"},
                        {}):
            reply = gw.chat(headers=headers)
            error = refused_without_secret(reply, "gw-not-a-key")
            assert error["code"] == "invalid_api_key" and error["param"] is None
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=gw.url + "/v1", api_key="gw-nope", max_retries=0) \
                .chat.completions.create(model="ok", messages=[{"role": "user", "content": "x"}])


def test_no_secret_reaches_gwc_serves_log_or_metrics(tmp_path: Path, upstreams: Upstreams
                                                      ) -> None:
    database = f"sqlite:///{tmp_path / 'gw.db'}"
    records = open_records(database)
    keys = Keys(records)
    good_record, good = keys.create_key("t", user="u", name="laptop")
    revoked_record, revoked = keys.create_key("t")
    keys.revoke(revoked_record.id)
    _, expired = keys.create_key("t", expires_at=time.time() - 1)
    rotated_old = keys.create_key("t")
    rotated_new = keys.rotate(rotated_old[0].id, grace_seconds=0)
    records.close()
    secrets = [good, revoked, expired, rotated_old[1], rotated_new]
    policy = tmp_path / "policy.gw"
    policy.write_text(HEAD.format(openai=upstreams.openai, anthropic=upstreams.anthropic,
                                  key=API_KEY) + "auth { mode = keys }\n" + BUDGET +
                      "quota per key { requests = 100 per minute }\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.log").open("w") as log:
        process = gwc_serve(str(policy), port, log, env={"GW_DB_URL": database})
        try:
            client = openai.OpenAI(base_url=url + "/v1", api_key=good, max_retries=0)
            messages: Any = [{"role": "user", "content": "hello"}]
            assert client.chat.completions.create(model="ok", messages=messages).choices
            assert list(client.chat.completions.create(model="ok", messages=messages,
                                                       stream=True))
            assert client.embeddings.create(model="emb", input="words").data
            assert openai.OpenAI(base_url=url + "/v1", api_key=rotated_new, max_retries=0) \
                .chat.completions.create(model="ok", messages=messages).choices
            for secret in [revoked, expired, rotated_old[1], "gw-unknown"]:
                for headers in ({"authorization": f"Bearer {secret}"}, {"x-api-key": secret}):
                    reply = httpx.post(url + "/v1/chat/completions", headers=headers,
                                       json={"model": "ok", "messages": messages})
                    refused_without_secret(reply, secret)
            metrics = httpx.get(url + "/metrics").text
        finally:
            process.terminate()
            assert process.wait(30) == 0
    text = (tmp_path / "serve.log").read_text()
    assert good_record.id in text  # the log names keys, by their ids
    assert text.count('"request_id"') >= 4 + 2 * 4
    for secret in secrets:
        assert secret not in text and secret not in metrics
        assert secret.removeprefix("gw-")[:12] not in text + metrics  # nor a piece of one
