"""Reloads as the serving loop feels them: its collector stays on, nothing piles up."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from runtime.access_log import AccessLog
from runtime.gateway import Gateway

POLICY = """
provider local { type = mock }
model a { provider = local }
model b { provider = local }
route {
%s
  otherwise -> a
}
auth { mode = none }
"""


def write(path: Path, rules: int) -> None:
    path.write_text(POLICY % "\n".join(f'  when team == "t{i}" -> b, a' for i in range(rules)))


def test_a_reload_never_pauses_the_loops_collector_nor_collects_on_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy.gw"
    write(policy, 2000)  # a compile long enough to be watched
    collections: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(1) or 0)
    log = (tmp_path / "log").open("wb")
    gateway = Gateway(str(policy), {}, log=AccessLog(log))
    paused: list[bool] = []

    async def watch(done: asyncio.Event) -> None:
        while not done.is_set():
            paused.append(not gc.isenabled())
            await asyncio.sleep(0.001)

    async def main() -> tuple[str, str]:
        await gateway.start()
        first = gateway.version
        write(policy, 2001)
        done = asyncio.Event()
        watcher = asyncio.create_task(watch(done))
        outcome = await gateway.reload()
        done.set()
        await watcher
        await gateway.close()
        return first, outcome["outcome"]

    first, outcome = asyncio.run(main())
    assert outcome == "loaded" and gateway.version != first
    assert len(paused) > 10 and not any(paused)
    assert collections == []
    gateway.log.close()
    log.close()


def test_reloads_free_the_policies_they_replace(tmp_path: Path) -> None:
    policy = tmp_path / "policy.gw"
    log = (tmp_path / "log").open("wb")
    gateway = Gateway(str(policy), {}, log=AccessLog(log))

    async def main() -> list[int]:
        write(policy, 300)
        await gateway.start()
        frozen = []
        for i in range(6):
            write(policy, 300 + i)
            assert (await gateway.reload())["outcome"] == "loaded"
            frozen.append(gc.get_freeze_count())
        await gateway.close()
        return frozen

    frozen = asyncio.run(main())
    gc.unfreeze()
    # each reload freezes its own policy; the one it replaced is freed, not kept
    assert max(frozen[2:]) - min(frozen[2:]) < frozen[1] * 0.05, frozen
    gateway.log.close()
    log.close()


def test_a_gateway_given_its_policy_compiled_starts_without_compiling_again(
        tmp_path: Path) -> None:
    from compiler.compiled import load

    policy = tmp_path / "policy.gw"
    write(policy, 3)
    compiled = load(str(policy), {})
    log = (tmp_path / "log").open("wb")
    gateway = Gateway(str(policy), {}, log=AccessLog(log))

    async def main() -> None:
        await gateway.start(compiled)
        assert gateway.current is not None and gateway.current.policy is compiled
        assert gateway.compiler is None  # no compiling process was started
        await gateway.close()

    asyncio.run(main())
    gateway.log.close()
    log.close()
