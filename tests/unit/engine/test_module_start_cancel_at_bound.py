"""A cancel of ``Engine.start()`` landing in the loop turn a module's start bound runs out is a cancel.

``asyncio.timeout`` lets the CancelledError through when a second cancel came in the same turn as its own, but its
timer says expired: the engine took that for its bound and raised TimeoutError in the cancel's place. With
``allow_degraded`` the module was left out and ``start()`` returned a ready engine to a caller that had cancelled it
(Ctrl-C, ``asyncio.wait_for``). Also: the worker module, which has no configuration entry, is not told to set one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import ModuleStartError
from iii_engine.modules.worker.module import WorkerModule
from tests.polling import until
from tests.unit.engine.test_module_start_stop_bounds import _RECORDER, _STUCK, _modules, _Stuck

pytestmark = pytest.mark.timeout(30)

__all__ = ["_modules"]  # its autouse fixture: the test modules configurable, small bounds


@pytest.mark.parametrize("allow_degraded", [True, False])
async def test_a_cancel_in_the_turn_the_start_bound_runs_out_cancels_the_start(
        monkeypatch: pytest.MonkeyPatch, allow_degraded: bool) -> None:
    _Stuck.hang_start = True
    bounds: list[asyncio.Timeout] = []
    real = asyncio.timeout

    def spied(delay: float | None) -> asyncio.Timeout:
        timer = real(delay)
        if delay == 0.3:  # the stuck module's start bound (its entry's start_timeout_ms)
            bounds.append(timer)
        return timer

    monkeypatch.setattr(asyncio, "timeout", spied)
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, allow_degraded=allow_degraded, modules=[
        ModuleSpec(_RECORDER), ModuleSpec.parse({"class": _STUCK, "start_timeout_ms": 300})]))
    starting = asyncio.ensure_future(engine.start())
    await until(lambda: bool(bounds), 5)
    when = bounds[0].when()
    assert when is not None
    asyncio.get_running_loop().call_at(when, starting.cancel)  # the same loop turn as the bound's own cancel
    try:
        async with real(2):
            # before: allow_degraded returned a ready engine; without it, ModuleStartError (did not end within 0.3 s)
            with pytest.raises(asyncio.CancelledError):
                await starting
        assert not engine.ready.is_set() and engine.modules == {}
        assert _STUCK not in engine.unavailable_modules
    finally:
        await engine.stop()


async def test_the_worker_module_s_start_timeout_names_no_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    async def hung(self: Any) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(WorkerModule, "start", hung)
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[]))
    async with asyncio.timeout(2):
        with pytest.raises(ModuleStartError) as failure:
            await engine.start()
    message = str(failure.value)
    assert "did not end within 0.2 s" in message
    assert "start_timeout_ms" not in message and "no entry" in message  # before: "start_timeout_ms in its entry"
