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
from collections.abc import Awaitable
from typing import Any

import pytest

from iii import III
from iii.loop_bridge import CANCEL_WAIT_S
from iii.trigger_host import TriggerTypeHost
from iii.triggers import TriggerConfig, TriggerHandler
from tests.polling import until

from .conftest import MakeWorker, RealEngineThread

# how the shutdown's ERROR line for the unbinds it gives up on starts (after the count)
_OWED = "unbind(s) owed (of released trigger types, or under way at the shutdown) still running"


class NotedHooks(TriggerHandler[Any]):
    """Hooks that note, under ``lock``, each trigger whose work was cancelled (``cancelled``) or ended.

    Example (a subclass's unbind)::

        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            await self.noted(asyncio.sleep(0.05), config.id, self.unbound)
    """

    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.lock = threading.Lock()

    async def noted(self, work: Awaitable[object] | None, trigger_id: str, done: list[str]) -> None:
        """Await ``work`` (nothing when ``None``), then note ``trigger_id`` in ``done``, or in ``cancelled`` when
        it was cancelled there (the cancel raised on)."""
        try:
            if work is not None:
                await work
        except asyncio.CancelledError:
            with self.lock:
                self.cancelled.append(trigger_id)
            raise
        with self.lock:
            done.append(trigger_id)


class _Hooks(NotedHooks):
    """Each bind works ``bind_s`` seconds; each unbind ``unbind_s`` seconds (for ever when ``None``) before it is
    done."""

    def __init__(self, unbind_s: float | None = 0.05, bind_s: float = 0.0) -> None:
        super().__init__()
        self.unbind_s = unbind_s
        self.bind_s = bind_s
        self.binding: list[str] = []
        self.bound: list[str] = []
        self.started: list[str] = []
        self.unbound: list[str] = []

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.lock:
            self.binding.append(config.id)
        # (the hook's own work: setting the trigger up)
        await self.noted(asyncio.sleep(self.bind_s) if self.bind_s else None, config.id, self.bound)

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.lock:
            self.started.append(config.id)
        # (the hook's own work: tearing down what the bind set up)
        await self.noted(asyncio.Event().wait() if self.unbind_s is None else asyncio.sleep(self.unbind_s),
                         config.id, self.unbound)


def _owner(real: RealEngineThread, make_real_worker: MakeWorker, triggers: int, unbind_s: float | None = 0.05,
           **options: Any) -> tuple[III, _Hooks, _Hooks]:
    """A worker (``options``) owning types ``gone`` (to be released; its unbinds take ``unbind_s``) and ``kept``,
    each bound ``triggers`` triggers (another worker's); their handlers."""
    owner, _, gone, kept = _owner_and_user(real, make_real_worker, triggers, unbind_s, **options)
    return owner, gone, kept


def _owner_and_user(real: RealEngineThread, make_real_worker: MakeWorker, triggers: int,
                    unbind_s: float | None = 0.05, gone: _Hooks | None = None,
                    **options: Any) -> tuple[III, III, _Hooks, _Hooks]:
    """:func:`_owner`, with the worker whose triggers it binds (``gone``: the released type's handler, when not
    one of ``unbind_s``)."""
    owner, user = make_real_worker("owner", **options), make_real_worker("user")
    gone, kept = gone or _Hooks(unbind_s), _Hooks()
    owner.register_trigger_type({"id": "gone", "description": "d"}, gone)
    owner.register_trigger_type({"id": "kept", "description": "d"}, kept)
    real.wait_for(lambda: {"gone", "kept"} <= real.worker_trigger_types())
    for i in range(triggers):
        user.register_trigger({"type": "gone", "function_id": "u::f", "config": {"i": i}})
        user.register_trigger({"type": "kept", "function_id": "u::f", "config": {"i": i}})
    real.run(until(lambda: len(gone.bound) == len(kept.bound) == triggers))
    return owner, user, gone, kept


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
    assert lines[0].startswith(f"3 {_OWED} (0 more not started) "
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


def _released_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "released trigger types" in r.getMessage()]


@pytest.mark.parametrize("how", ["engine_unbind", "released_again", "bind_running", "bind_ended"])
def test_a_hook_under_way_as_its_type_is_let_go_is_waited_for_at_shutdown(
        real: RealEngineThread, make_real_worker: MakeWorker, caplog: pytest.LogCaptureFixture, how: str) -> None:
    """A hook of the type running as it is let go is no longer waited for by its caller (it runs on in the
    background): an unbind (the engine's, or a release's run before), or a bind whose binding its handler then
    unbinds. Each is an unbind the release owes, and the shutdown waits for it as for the release's own."""
    owner, user, gone, _ = _owner_and_user(real, make_real_worker, 1 if how in ("engine_unbind", "released_again")
                                           else 0, unbind_s=1.0, invocation_timeout_ms=30_000)
    if how == "engine_unbind":  # the engine's unregistertrigger of X runs (2 s) as the type is let go
        trigger = user.register_trigger({"type": "gone", "function_id": "u::f", "config": {"i": "x"}})
        real.run(until(lambda: len(gone.bound) == 2))
        gone.unbind_s = 2.0
        trigger.unregister()
        real.run(until(lambda: len(gone.started) == 1))
        gone.unbind_s = 0.2  # (the release's own, waited for before as well, ends first)
        owner.unregister_trigger_type({"id": "gone"})
        real.run(until(lambda: len(gone.started) == 2))  # (and the release's unbind of the other)
    elif how == "released_again":  # the release's unbind runs (1 s) as the type, owned again, is let go again
        owner.unregister_trigger_type({"id": "gone"})
        real.run(until(lambda: len(gone.started) == 1))
        owner.register_trigger_type({"id": "gone", "description": "d"}, gone)
        owner.unregister_trigger_type({"id": "gone"})
    else:  # a bind (0.5 s) runs as the type is let go; it binds after all, and its handler unbinds it (1 s)
        gone.bind_s = 0.5
        user.register_trigger({"type": "gone", "function_id": "u::f", "config": {"i": "x"}})
        real.run(until(lambda: len(gone.binding) == 1))
        owner.unregister_trigger_type({"id": "gone"})
        if how == "bind_ended":
            real.run(until(lambda: len(gone.started) == 1))
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="iii.trigger_host"):
        owner.shutdown()
    took = time.monotonic() - started
    # before: cancelled at once (0.00 s), nothing said: the handler kept the binding
    assert (gone.cancelled, len(gone.unbound)) == ([], len(gone.bound)), (gone.cancelled, gone.started, took)
    assert sorted(gone.unbound) == sorted(gone.bound) != []
    assert _released_lines(caplog) == []
    assert took < CANCEL_WAIT_S, took


def test_an_unbind_under_way_as_its_type_is_let_go_is_named_when_it_outlasts_the_wait(
        real: RealEngineThread, make_real_worker: MakeWorker, caplog: pytest.LogCaptureFixture) -> None:
    owner, gone, _ = _owner(real, make_real_worker, 1, unbind_s=None, invocation_timeout_ms=0)
    owner.unregister_trigger_type({"id": "gone"})
    real.run(until(lambda: len(gone.started) == 1))
    owner.unregister_trigger_type({"id": "gone"})  # let go again: its run no longer waits for the unbind
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="iii.trigger_host"):
        owner.shutdown()
    took = time.monotonic() - started
    assert CANCEL_WAIT_S - 0.5 < took < CANCEL_WAIT_S + 3, took  # before: 0.00 s
    assert gone.cancelled == gone.bound
    lines = _released_lines(caplog)
    # before: none (cancelled without a word)
    assert len(lines) == 1 and lines[0].startswith(f"1 {_OWED}"), lines
    assert lines[0].endswith(f": gone/{gone.bound[0]}"), lines


def test_an_unbind_hook_shutting_its_client_down_is_neither_waited_for_nor_cancelled(
        real: RealEngineThread, make_real_worker: MakeWorker, caplog: pytest.LogCaptureFixture) -> None:
    outcome: list[tuple[str, float]] = []
    ended = threading.Event()
    client: list[III] = []

    class ShutsItsClientDown(_Hooks):
        async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
            started = time.monotonic()
            try:
                await client[0].shutdown_async()
            except BaseException as exc:
                outcome.append((type(exc).__name__, time.monotonic() - started))
                raise
            else:
                outcome.append(("returned", time.monotonic() - started))
            finally:
                ended.set()

    owner, *_ = _owner_and_user(real, make_real_worker, 1, gone=ShutsItsClientDown(),
                                invocation_timeout_ms=30_000)
    client.append(owner)
    with caplog.at_level(logging.ERROR, logger="iii.trigger_host"):
        owner.unregister_trigger_type({"id": "gone"})
        assert ended.wait(15)
    # before: the shutdown waited for the release's unbind, which waited for the shutdown: 3 s (its bound), then an
    # ERROR naming the hook itself, and CancelledError raised in it
    assert outcome[0][0] == "returned" and outcome[0][1] < CANCEL_WAIT_S - 1, outcome
    assert _released_lines(caplog) == []
    assert owner.get_connection_state() == "disconnected"
    owner._bridge.thread.join(5)  # (the loop ends once the hook has: the client is done)
    assert not owner._bridge.alive


def test_a_type_let_go_after_the_shutdown_says_its_triggers_are_not_unbound(
        real: RealEngineThread, make_real_worker: MakeWorker, caplog: pytest.LogCaptureFixture) -> None:
    owner, _, kept = _owner(real, make_real_worker, 3)
    owner.shutdown()
    with caplog.at_level(logging.WARNING, logger="iii.trigger_host"):
        owner.unregister_trigger_type({"id": "kept"})
    lines = [r.getMessage() for r in caplog.records if "after the client's shutdown" in r.getMessage()]
    # before: nothing said (the release's run was closed, never run)
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("Trigger type kept let go after the client's shutdown ran the releases' unbinds: "
                               "its 3 trigger(s) are not unbound"), lines
    assert all(trigger_id in lines[0] for trigger_id in kept.bound), lines
    assert kept.started == []
