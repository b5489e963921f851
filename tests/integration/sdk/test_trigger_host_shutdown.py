"""``unregister_trigger_type`` then ``shutdown()`` at once: the released type's ``unregister_trigger`` hooks run before
the shutdown ends, at most ``CANCEL_WAIT_S`` (3 s) in all and each hook at most its deadline; the triggers of types
still owned are left as they are (no hook is called for them, as the reference SDK: the engine drops the worker's
types as it leaves).

Before: the release's unbinds ran in a task the shutdown cancelled with the handlers' tasks: 0 of 5 hooks ran
(cancelled before their first step, or cut short in the middle), with nothing logged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from iii import III
from iii.loop_bridge import CANCEL_WAIT_S
from iii.trigger_host import TriggerTypeHost
from iii.triggers import TriggerConfig, TriggerHandler
from tests.polling import until

from .conftest import MakeWorker, RealEngineThread, workers_of


@pytest.fixture
def make_real_worker(real: RealEngineThread) -> Iterator[MakeWorker]:
    yield from workers_of(real.url)


class _Hooks(TriggerHandler[Any]):
    """Binds at once; each unbind works ``unbind_s`` seconds (for ever when ``None``) before it is done."""

    def __init__(self, unbind_s: float | None = 0.05) -> None:
        self.unbind_s = unbind_s
        self.bound: list[str] = []
        self.started: list[str] = []
        self.unbound: list[str] = []
        self.cancelled: list[str] = []
        self.lock = threading.Lock()

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.lock:
            self.bound.append(config.id)

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.lock:
            self.started.append(config.id)
        try:
            if self.unbind_s is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(self.unbind_s)  # (the hook's own work: tearing down what the bind set up)
        except asyncio.CancelledError:
            with self.lock:
                self.cancelled.append(config.id)
            raise
        with self.lock:
            self.unbound.append(config.id)


def _owner(real: RealEngineThread, make_real_worker: MakeWorker, triggers: int, unbind_s: float | None = 0.05,
           **options: Any) -> tuple[III, _Hooks, _Hooks]:
    """A worker (``options``) owning types ``gone`` (to be released; its unbinds take ``unbind_s``) and ``kept``,
    each bound ``triggers`` triggers (another worker's); their handlers."""
    owner, user = make_real_worker("owner", **options), make_real_worker("user")
    gone, kept = _Hooks(unbind_s), _Hooks()
    owner.register_trigger_type({"id": "gone", "description": "d"}, gone)
    owner.register_trigger_type({"id": "kept", "description": "d"}, kept)
    real.wait_for(lambda: {"gone", "kept"} <= real.worker_trigger_types())
    for i in range(triggers):
        user.register_trigger({"type": "gone", "function_id": "u::f", "config": {"i": i}})
        user.register_trigger({"type": "kept", "function_id": "u::f", "config": {"i": i}})
    real.run(until(lambda: len(gone.bound) == len(kept.bound) == triggers))
    return owner, gone, kept


@pytest.mark.parametrize("triggers", [5, 100])
@pytest.mark.parametrize("how", ["shutdown", "shutdown_async"])
def test_a_release_just_before_shutdown_runs_every_unbind(
        real: RealEngineThread, make_real_worker: MakeWorker, how: str, triggers: int) -> None:
    owner, gone, kept = _owner(real, make_real_worker, triggers)
    owner.unregister_trigger_type({"id": "gone"})
    started = time.monotonic()
    if how == "shutdown":
        owner.shutdown()
    else:
        asyncio.run(owner.shutdown_async())  # (from a loop other than the client's)
    took = time.monotonic() - started
    # before: 0 of 5 (and of 100) ran: the release's task was cancelled with the handlers'
    assert sorted(gone.unbound) == sorted(gone.bound), (len(gone.started), len(gone.unbound), len(gone.cancelled), took)
    assert gone.cancelled == []
    assert kept.started == []  # a type still owned: nothing is unbound at shutdown
    assert took < CANCEL_WAIT_S, took  # 2 rounds of 64 hooks of 0.05 s, not the bound


def test_unbinds_with_no_deadline_are_waited_for_at_most_the_shutdowns_bound(
        real: RealEngineThread, make_real_worker: MakeWorker, caplog: pytest.LogCaptureFixture) -> None:
    owner, gone, kept = _owner(real, make_real_worker, 3, invocation_timeout_ms=0, unbind_s=None)
    owner.unregister_trigger_type({"id": "gone"})
    real.run(until(lambda: len(gone.started) == 3))
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="iii.trigger_host"):
        owner.shutdown()
    took = time.monotonic() - started
    assert CANCEL_WAIT_S - 0.5 < took < CANCEL_WAIT_S + 3, took  # waited for, to the bound, no longer
    assert sorted(gone.cancelled) == sorted(gone.bound)  # then cancelled with the client, as it ends
    lines = [r.getMessage() for r in caplog.records if "released trigger types" in r.getMessage()]
    # before: none (cancelled at once, nothing said)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"3 unbind(s) of released trigger types still running (0 more not started) "
                               f"{CANCEL_WAIT_S:g} s into the client's shutdown"), lines
    assert all(f"gone/{trigger_id}" in lines[0] for trigger_id in gone.bound), lines
    assert kept.started == []


def test_an_unbind_past_its_deadline_is_not_waited_for_at_shutdown(
        real: RealEngineThread, make_real_worker: MakeWorker, caplog: pytest.LogCaptureFixture) -> None:
    owner, gone, _ = _owner(real, make_real_worker, 3, invocation_timeout_ms=300, unbind_s=None)
    owner.unregister_trigger_type({"id": "gone"})
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="iii.trigger_host"):
        owner.shutdown()
    took = time.monotonic() - started
    # before: 0 of 3 started (cancelled before their first step)
    assert sorted(gone.started) == sorted(gone.bound)
    assert took < CANCEL_WAIT_S, took  # each waited for its deadline (0.3 s, all at once), not the shutdown's bound
    assert sorted(gone.cancelled) == sorted(gone.bound)  # (past it, running on in the background: cancelled)
    assert [r for r in caplog.records if "did not finish within 0.3 s" in r.getMessage()]


def test_unbinds_the_types_new_binds_took_from_the_release_run_to_their_end(
        real: RealEngineThread, make_real_worker: MakeWorker) -> None:
    owner, gone, _ = _owner(real, make_real_worker, 5)
    owner.unregister_trigger_type({"id": "gone"})
    # owned again at once: the engine sends each trigger again, and its bind unbinds the released binding first
    owner.register_trigger_type({"id": "gone", "description": "d"}, gone)
    real.run(until(lambda: len(gone.started) == 5))
    owner.shutdown()
    # before: each unbind under way was cancelled with the bind's task (or the release's)
    assert gone.cancelled == []
    assert sorted(gone.unbound) == sorted(gone.bound[:5])


async def test_a_bind_that_ends_after_its_type_was_let_go_is_unbound_even_when_its_task_is_cancelled() -> None:
    host = TriggerTypeHost()
    unbinds: list[str] = []
    cancelled: list[str] = []
    started = asyncio.Event()

    class LetGoWhileBinding(TriggerHandler[Any]):
        async def register_trigger(self, config: TriggerConfig[Any]) -> None:
            assert host.release("hook") is None  # (nothing bound yet: this bind is the one to undo)

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            started.set()
            try:
                await asyncio.sleep(0.05)  # (the hook's own work)
            except asyncio.CancelledError:
                cancelled.append(config.id)
                raise
            unbinds.append(config.id)

    host.add("hook", LetGoWhileBinding())
    binding = asyncio.ensure_future(host.register("hook", "t1", "f", {}, generation=1))
    await started.wait()
    binding.cancel()  # as the client's shutdown cancels the task of an engine's registertrigger
    with pytest.raises(asyncio.CancelledError):
        await binding
    await asyncio.wait_for(host.finish_releases(CANCEL_WAIT_S), CANCEL_WAIT_S + 2)
    # before: the unbind was cancelled with the bind's task (the handler kept the trigger bound)
    assert (unbinds, cancelled) == (["t1"], [])
