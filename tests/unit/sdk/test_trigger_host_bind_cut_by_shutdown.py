"""The client's shutdown cancels the handlers' tasks: a bind or unbind of a custom trigger type under way then.

A ``register_trigger`` hook running as its bind's task is cancelled runs on in the background, and is taken as it
ends: returned (it ended just as the cancel came, or ends later), it bound: noted as bound while its type is owned
as it was (left bound at the end, as every binding of a type still owned is), unbound once should its type be let
go before the shutdown's wait for the releases ends (the wait waits for the bind, then its unbind); cancelled with
the client (the ``CancelledError`` raised out of it) or failed, nothing was bound and no unbind is called.

An ``unregister_trigger`` hook under way (the engine's unbind of an unregistered trigger, say) runs to its end
within the same wait: its binding was taken from the table already, so nothing else would unbind it.

Before: a bind ending as its task was cancelled was never noted as bound (a type let go during the shutdown kept it
for good: 11 bindings never unbound in 5 of 20 storm runs), a bind running then was cancelled at once, and an unbind
under way was cut short (the binding of a trigger the engine no longer has left for good).

The cancel comes at the exact moment through the hook itself (it cancels the task waiting for it as it returns), or
through futures the test sets: no sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from iii.trigger_host import TriggerTypeHost
from iii.triggers import TriggerConfig, TriggerHandler
from tests.polling import until


class _Hooks(TriggerHandler[Any]):
    """A bind waits for ``gate``; cancelled, it does as ``on_cancel`` says: ``"raise"`` (the cancel goes through)
    or ``"finish"`` (it catches it and finishes its bind). ``cut_caller``: the task waiting for the hook is
    cancelled as the hook returns (the shutdown's cancel at the exact moment it ends)."""

    def __init__(self, on_cancel: str = "raise") -> None:
        self.on_cancel = on_cancel
        self.gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.cut_caller: asyncio.Task[Any] | None = None
        self.started: list[str] = []
        self.bound: list[str] = []
        self.cancelled: list[str] = []
        self.unbound: list[str] = []

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        self.started.append(config.id)
        try:
            await self.gate
        except asyncio.CancelledError:
            self.cancelled.append(config.id)
            if self.on_cancel == "raise":
                raise
        if self.cut_caller is not None:
            self.cut_caller.cancel()  # (its wait for this hook is woken with the cancel, this hook done with it)
        self.bound.append(config.id)

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        self.unbound.append(config.id)


async def _binding(host: TriggerTypeHost, hooks: _Hooks) -> asyncio.Task[Any]:
    """The engine's bind of trigger ``t1`` of type ``gone`` in a task of its own (as the client runs it), its hook
    started."""
    host.add("gone", hooks)
    task = asyncio.create_task(host.register("gone", "t1", "f", {}, generation=1))
    await until(lambda: hooks.started == ["t1"])
    return task


async def _cancelled(task: asyncio.Task[Any]) -> None:
    """The shutdown's cancel of the handlers' tasks, and the wait for their end."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _shut_down(host: TriggerTypeHost, let_go: bool, within: float = 3.0) -> None:
    """What the client's shutdown does next: the type let go meanwhile (the release's coroutine closed, as a closed
    client does), then the wait for the releases' unbinds and the cancel of what is left."""
    if let_go:
        released = host.release("gone")
        if released is not None:
            released.close()
    await asyncio.wait_for(host.finish_releases(within), within + 2)
    host.cancel_hooks()


async def test_a_bind_ending_as_its_task_is_cancelled_is_unbound_when_its_type_is_let_go() -> None:
    host = TriggerTypeHost()
    hooks = _Hooks()
    task = await _binding(host, hooks)
    hooks.cut_caller = task
    hooks.gate.set_result(None)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hooks.bound == ["t1"]
    await _shut_down(host, let_go=True)
    # before: [] (never noted as bound: the release found nothing to unbind)
    assert hooks.unbound == ["t1"]


async def test_a_bind_ending_as_its_task_is_cancelled_of_a_type_kept_is_left_bound() -> None:
    host = TriggerTypeHost()
    hooks = _Hooks()
    task = await _binding(host, hooks)
    hooks.cut_caller = task
    hooks.gate.set_result(None)
    with pytest.raises(asyncio.CancelledError):
        await task
    await _shut_down(host, let_go=False)
    assert hooks.unbound == []  # (a type still owned: nothing is unbound at shutdown)
    assert host._bound["gone"]["t1"].trigger.id == "t1"  # before: not noted


async def test_a_bind_running_as_its_task_is_cancelled_runs_on_and_is_unbound_when_its_type_is_let_go() -> None:
    host = TriggerTypeHost()
    hooks = _Hooks()
    task = await _binding(host, hooks)
    await _cancelled(task)
    assert hooks.cancelled == []  # before: ['t1'] (cancelled with its task)
    assert host.release("gone") is None  # (nothing noted as bound yet)
    asyncio.get_running_loop().call_soon(hooks.gate.set_result, None)  # (it ends while the shutdown waits)
    await _shut_down(host, let_go=False)
    assert hooks.bound == ["t1"]
    assert hooks.unbound == ["t1"]


async def test_a_bind_that_catches_its_cancel_with_the_client_and_finishes_is_noted_as_bound() -> None:
    host = TriggerTypeHost()
    hooks = _Hooks(on_cancel="finish")
    task = await _binding(host, hooks)
    await _cancelled(task)
    await _shut_down(host, let_go=False)  # (its type kept: not waited for, cancelled with the client)
    await until(lambda: hooks.bound == ["t1"])
    assert hooks.cancelled == ["t1"] and hooks.unbound == []
    assert host._bound["gone"]["t1"].trigger.id == "t1"  # before: not noted


async def test_a_bind_still_running_past_the_wait_is_named_cancelled_and_not_unbound(
        caplog: pytest.LogCaptureFixture) -> None:
    host = TriggerTypeHost()
    hooks = _Hooks(on_cancel="raise")
    task = await _binding(host, hooks)
    await _cancelled(task)
    with caplog.at_level(logging.ERROR, logger="iii.trigger_host"):
        await _shut_down(host, let_go=True, within=0.2)
    await until(lambda: hooks.cancelled == ["t1"])
    assert hooks.bound == [] and hooks.unbound == []  # (no unbind for a bind that did not happen)
    lines = [r.getMessage() for r in caplog.records if "released trigger types" in r.getMessage()]
    assert len(lines) == 1, lines
    # before: "0 unbind(s) owed ... still running (0 more not started; 1 bind(s) of them still running, each to be
    # unbound should it bind)": no unbind comes once the hook is cancelled with the client, whatever it does next
    head, _, tail = lines[0].partition(" s into ")
    assert head.startswith("1 bind(s) of released trigger types (or of triggers unregistered, or bound here "
                           "otherwise) still running "), lines
    assert tail.startswith("the client's shutdown's wait for them: no longer waited for, cancelled with the client "
                           "(a bind that goes on regardless, its work in a thread say, and binds after all is left "
                           "bound with nothing to unbind it: its hook has to undo it itself): "), lines
    assert lines[0].endswith(": gone/t1 (bind)"), lines
    assert "unbind(s) owed" not in lines[0] and "should it bind" not in lines[0], lines


async def test_a_bind_running_at_shutdown_with_the_engines_unbind_queued_behind_it_is_waited_for_and_unbound(
) -> None:
    host = TriggerTypeHost()
    hooks = _Hooks()
    task = await _binding(host, hooks)
    # The user unregistered the trigger: the engine's unbind, its frame read, waits for the bind's turn.
    unbind = asyncio.create_task(host.unregister("gone", "t1", "f", {}))
    await asyncio.sleep(0)  # (its first step: waiting behind the bind)
    assert not unbind.done()
    await _cancelled(task)  # (the shutdown's cancel of the handlers' tasks: both)
    await _cancelled(unbind)
    assert hooks.cancelled == []  # (the bind runs on)
    asyncio.get_running_loop().call_soon(hooks.gate.set_result, None)  # (it binds while the shutdown waits)
    await asyncio.wait_for(host.finish_releases(3.0), 5)  # (its type still owned)
    # before: the wait returned at once, leaving the bind out (its type still owned), and the cancel of what was
    # left cut it: a bind in a thread bound all the same, the trigger the engine had dropped never unbound
    assert (hooks.bound, hooks.unbound, hooks.cancelled) == (["t1"], ["t1"], [])
    host.cancel_hooks()
    assert "t1" not in host._bound.get("gone", {})


class _SlowUnbind(TriggerHandler[Any]):
    """Binds at once; each unbind waits for ``gate`` (and says so when cancelled)."""

    def __init__(self) -> None:
        self.gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.started: list[str] = []
        self.unbound: list[str] = []
        self.cancelled: list[str] = []

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        pass

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        self.started.append(config.id)
        try:
            await self.gate
        except asyncio.CancelledError:
            self.cancelled.append(config.id)
            raise
        self.unbound.append(config.id)


@pytest.mark.parametrize("let_go", [False, True])
async def test_the_engines_unbind_under_way_at_shutdown_runs_to_its_end_within_the_wait(let_go: bool) -> None:
    host = TriggerTypeHost()
    hooks = _SlowUnbind()
    host.add("kept", hooks)
    assert await host.register("kept", "t1", "f", {}, generation=1) is None
    task = asyncio.create_task(host.unregister("kept", "t1", "f", {}))  # (the engine's: the trigger unregistered)
    await until(lambda: hooks.started == ["t1"])
    task.cancel()  # (the shutdown's cancel of the handlers' tasks)
    with pytest.raises(asyncio.CancelledError):
        await task
    asyncio.get_running_loop().call_soon(hooks.gate.set_result, None)  # (it ends while the shutdown waits)
    if let_go:
        assert host.release("kept") is None  # (nothing bound is left to unbind: its unbind is under way)
    await asyncio.wait_for(host.finish_releases(3.0), 5)
    host.cancel_hooks()
    # before: cut short by the cancel ([] unbound, ['t1'] cancelled): the trigger, gone from the engine, stayed bound
    assert (hooks.unbound, hooks.cancelled) == (["t1"], [])


async def test_the_shutdown_waits_for_a_bind_of_an_unregistered_trigger_at_most_its_deadline() -> None:
    """Each hook at most its deadline: a bind cut by the shutdown, owed as its trigger was unregistered behind it, is
    waited for until its ``due`` (the host's hook deadline from the cut), not the whole ``CANCEL_WAIT_S``."""
    host = TriggerTypeHost(hook_deadline=0.5)
    hooks = _Hooks()
    task = await _binding(host, hooks)
    unbind = asyncio.create_task(host.unregister("gone", "t1", "f", {}))
    await asyncio.sleep(0)  # (waiting behind the bind)
    await _cancelled(task)
    await _cancelled(unbind)
    assert [entry.claim is not None for entry in host._detached[("gone", "t1")]] == [True]  # (cut, not overdue)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(host.finish_releases(3.0), 5)  # (its gate never set: it never ends by itself)
    took = loop.time() - started
    host.cancel_hooks()
    assert took < 2.0, took  # before: 3.0 (the whole wait, its due never looked at)
    await until(lambda: hooks.cancelled == ["t1"])
    assert hooks.bound == [] and hooks.unbound == []
