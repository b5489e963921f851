"""Our SDK against our embedded engine (``iii_engine.Engine``) on a background loop, over real sockets.

Registrations are never acknowledged (docs/protocol.md#production-behaviour-our-sdk-copes-with T2); frames on one
socket are handled in order, so a
round trip on the registering worker is the barrier that proves the engine has seen them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iii import InvocationError, TriggerAction, TriggerConfig, TriggerHandler
from iii.iii import III

from .conftest import RealEngineThread, reconnected, wait_until, workers_of

pytestmark = pytest.mark.our_engine("reads our engine's tables and restarts it")


@pytest.fixture
def real() -> Iterator[RealEngineThread]:
    with RealEngineThread() as served:
        yield served


@pytest.fixture
def worker(real: RealEngineThread) -> Iterator[Callable[..., III]]:
    yield from workers_of(real.url)


def test_calls_both_ways_void_errors_and_listing(real: RealEngineThread, worker: Callable[[str], III]) -> None:
    a, b = worker("alpha"), worker("beta")
    noted = threading.Event()
    a.register_function("alpha::add", lambda d: d["x"] + d["y"], description="adds")
    a.register_function("alpha::note", lambda d: noted.set())
    a.register_service({"id": "alpha", "description": "the alpha service"})

    async def shout(data: Any) -> Any:
        return await b.trigger_async({"function_id": "alpha::add", "payload": {"x": data["n"], "y": 1}})

    b.register_function("beta::shout", shout)
    b.list_functions()  # barrier: b's registration is in
    a.list_functions()
    assert b.trigger({"function_id": "alpha::add", "payload": {"x": 2, "y": 3}}) == 5
    assert a.trigger({"function_id": "beta::shout", "payload": {"n": 41}}) == 42  # nested call, both ways
    assert b.trigger({"function_id": "alpha::note", "payload": {}, "action": TriggerAction.Void()}) is None
    assert noted.wait(5)
    enqueue = {"function_id": "alpha::note", "payload": {}, "action": TriggerAction.Enqueue(queue="q")}
    with pytest.raises(InvocationError) as enqueue_info:  # no queue named "q" is configured
        b.trigger(enqueue)
    assert (enqueue_info.value.code, enqueue_info.value.message) == ("enqueue_error", "Queue 'q' not found")
    with pytest.raises(InvocationError) as info:
        b.trigger({"function_id": "nobody::home", "payload": {}})
    assert info.value.code == "function_not_found"
    release = threading.Event()
    a.register_function("alpha::stall", lambda d: release.wait(5))
    a.list_functions()
    with pytest.raises(TimeoutError, match=r"^Invocation of 'alpha::stall' timed out after 50ms$"):
        b.trigger({"function_id": "alpha::stall", "payload": None, "timeout_ms": 50})
    release.set()

    ids = {f.function_id for f in b.list_functions()}
    assert {"alpha::add", "alpha::note", "beta::shout"} <= ids
    names = {w.name for w in b.list_workers()}
    assert {"alpha", "beta"} <= names


class Hooks(TriggerHandler[Any]):
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.active: dict[str, TriggerConfig[Any]] = {}

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.cond:
            self.active[config.id] = config
            self.cond.notify_all()

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.cond:
            self.active.pop(config.id, None)
            self.cond.notify_all()


def test_custom_trigger_type_and_functions_available(real: RealEngineThread, worker: Callable[[str], III]) -> None:
    owner, user = worker("owner"), worker("user")
    hooks = Hooks()
    owner.register_trigger_type({"id": "hook", "description": "test hooks"}, hooks)
    owner.list_functions()
    fired: list[Any] = []
    def on_hook(data: Any) -> str:
        fired.append(data)
        return "ok"

    user.register_function("user::on_hook", on_hook)
    trigger = user.register_trigger({"type": "hook", "function_id": "user::on_hook", "config": {"k": 1}})
    with hooks.cond:
        assert hooks.cond.wait_for(lambda: len(hooks.active) == 1, 5)
    (config,) = hooks.active.values()
    assert owner.trigger({"function_id": config.function_id, "payload": {"event": 1}}) == "ok"
    assert any(t.trigger_type == "hook" for t in user.list_triggers())
    trigger.unregister()
    with hooks.cond:
        assert hooks.cond.wait_for(lambda: not hooks.active, 5)  # S6 against our engine

    seen = threading.Event()
    owner.on_functions_available(lambda fns: seen.set() if any(f.function_id == "late::fn" for f in fns) else None)
    owner.list_functions()
    user.register_function("late::fn", lambda d: d)
    assert seen.wait(5)


def test_reconnect_after_engine_restart(real: RealEngineThread, worker: Callable[[str], III]) -> None:
    a, b = worker("a"), worker("b")
    a.register_function("keep::me", lambda d: {"back": d})
    a.list_functions()
    old_a, old_b = a.worker_id, b.worker_id
    real.restart()
    # Each worker replays its registrations as soon as it is back; b's call goes out once b is on a new socket.
    wait_until(lambda: reconnected(a, old_a) and reconnected(b, old_b))
    a.list_functions()  # barrier on a's new socket: its replay is in
    assert b.trigger({"function_id": "keep::me", "payload": 1}) == {"back": 1}
