"""The trigger host's wait, at the client's shutdown, for the unbinds its released types owe
(``TriggerTypeHost.finish_releases``): a type let go while it waits is unbound too; past it nothing owed starts any
more; its ERROR line lists whole trigger names, then how many more; and a release's batch of unbinds
(``_each_at_most``) logs every error past the first it raises.

Before: a release during the wait was never run and never named (0 of 3 unbinds, its entries left); a run of the
release past the wait started more hooks as the client ended (named "not started" in the line); the line was cut at
500 characters mid-name (11 of 464 names, the last cut, no count of the rest); every error after the first was
dropped without a word.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

from iii.trigger_host import _SWEEP_CONCURRENCY, TriggerTypeHost, _each_at_most
from iii.triggers import TriggerConfig, TriggerHandler
from tests.polling import until


class _Gated(TriggerHandler[Any]):
    """Binds at once; each unbind waits for ``gate``, then runs ``then`` (if any)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[str] = []
        self.unbound: list[str] = []
        self.then: Any = None

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        pass

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        self.started.append(config.id)
        await self.gate.wait()
        if self.then is not None:
            await self.then()
        self.unbound.append(config.id)


async def _bound(host: TriggerTypeHost, type_id: str, handler: TriggerHandler[Any], ids: list[str]) -> None:
    host.add(type_id, handler)
    for trigger_id in ids:
        assert await host.register(type_id, trigger_id, "f", {}, generation=1) is None


async def test_a_type_let_go_while_the_shutdown_waits_for_the_releases_is_unbound_too() -> None:
    host = TriggerTypeHost()
    gone, late = _Gated(), _Gated()
    late.gate.set()
    await _bound(host, "gone", gone, ["g1"])
    await _bound(host, "late", late, ["l1", "l2", "l3"])

    async def let_late_go() -> None:  # (from another thread, as the user's unregister_trigger_type is)
        released = await asyncio.to_thread(host.release, "late")
        assert released is not None
        released.close()  # (the client, shut down, closes it: the shutdown's wait runs it)

    gone.then = let_late_go
    gone.gate.set()
    release = host.release("gone")
    assert release is not None
    release.close()  # (its task cancelled by the shutdown before its first step, say)
    await asyncio.wait_for(host.finish_releases(3.0), 5)
    assert gone.unbound == ["g1"]
    # before: 0 of 3 (the wait read its releases once, before this one came)
    assert sorted(late.unbound) == ["l1", "l2", "l3"]
    assert not host._release_runs and not host._releasing


async def test_nothing_owed_starts_once_the_wait_is_over(caplog: pytest.LogCaptureFixture) -> None:
    host = TriggerTypeHost()
    gone = _Gated()
    ids = [f"t{i:03}" for i in range(_SWEEP_CONCURRENCY + 1)]  # every place held, one waits for one
    await _bound(host, "gone", gone, ids)
    release = host.release("gone")
    assert release is not None
    release.close()
    with caplog.at_level(logging.ERROR, logger="iii.trigger_host"):
        await host.finish_releases(0.2)
    lines = [r.getMessage() for r in caplog.records if "released trigger types" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(
        f"{_SWEEP_CONCURRENCY} unbind(s) owed (of released trigger types, or under way at the shutdown) still "
        "running (1 more not started)"), lines
    gone.gate.set()  # the hooks end (say, as the wait gives up): a place is free for the one not started
    await until(lambda: not host._release_runs)  # (the release's run has ended)
    # before: its hook started past the wait (as the client ended), though named as not started
    assert len(gone.started) == _SWEEP_CONCURRENCY, len(gone.started)
    assert len(gone.unbound) == _SWEEP_CONCURRENCY


async def test_the_line_lists_whole_names_then_how_many_more(caplog: pytest.LogCaptureFixture) -> None:
    host = TriggerTypeHost()
    gone = _Gated()
    ids = [f"{i:04}-" + "x" * 36 for i in range(100)]  # (41 characters each, as a uuid's 36 and more)
    await _bound(host, "gone", gone, ids)
    release = host.release("gone")
    assert release is not None
    release.close()
    with caplog.at_level(logging.ERROR, logger="iii.trigger_host"):
        await host.finish_releases(0.1)
    host.cancel_hooks()
    line = next(r.getMessage() for r in caplog.records if "released trigger types" in r.getMessage())
    listed = line.split("cancelled with the client: ", 1)[1]
    match = re.fullmatch(r"(.*), and (\d+) more", listed)
    # before: cut at 500 characters in the middle of a name, the rest not counted
    assert match is not None, listed[-80:]
    names = match.group(1).split(", ")
    assert all(re.fullmatch(r"gone/\d{4}-x{36}", name) for name in names), names[-1]
    assert len(names) + int(match.group(2)) == 100
    assert 5 < len(names) and len(match.group(1)) <= 500


async def test_each_at_most_logs_every_error_past_the_first(caplog: pytest.LogCaptureFixture) -> None:
    async def run(item: int) -> None:
        await asyncio.sleep(0.01 * item)
        if item % 2:
            raise RuntimeError(f"run {item} failed")

    with caplog.at_level(logging.ERROR, logger="iii.trigger_host"), \
            pytest.raises(RuntimeError, match="run 1 failed"):
        await _each_at_most(2, range(6), run, 1.0)
    logged = [r.getMessage() for r in caplog.records]
    # before: none (runs 3 and 5 raised without a word)
    assert len(logged) == 2, logged
    assert "RuntimeError: run 3 failed" in logged[0] and "RuntimeError: run 5 failed" in logged[1], logged
    assert all(r.exc_info is not None for r in caplog.records)
