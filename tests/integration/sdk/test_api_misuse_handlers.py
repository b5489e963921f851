"""Handlers and trigger-type owners that misbehave: the caller gets an error naming what happened and the worker
keeps serving."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from iii import InitOptions, TriggerAction
from iii.errors import InvocationError
from iii.iii import register_worker
from iii.triggers import TriggerConfig, TriggerHandler

from .conftest import Harness, MakeWorker, wait_until

BASE_EXCEPTIONS: list[Callable[[], BaseException]] = [
    KeyboardInterrupt, lambda: SystemExit(2), GeneratorExit, asyncio.CancelledError,
]


def _sync_raiser(make: Callable[[], BaseException]) -> Callable[[Any], Any]:
    def handler(_: Any) -> Any:
        raise make()

    return handler


def _async_raiser(make: Callable[[], BaseException]) -> Callable[[Any], Any]:
    async def handler(_: Any) -> Any:
        raise make()

    return handler


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_handler_raising_a_base_exception_fails_the_call_and_the_worker_serves_on(
        served: Harness, make_worker: MakeWorker, kind: str) -> None:
    owner, caller = make_worker("owner"), make_worker("caller")
    wrap = _sync_raiser if kind == "sync" else _async_raiser
    ids = []
    for n, make in enumerate(BASE_EXCEPTIONS):
        ids.append(f"raises.{n}")
        owner.register_function(ids[-1], wrap(make))
    owner.register_function("echo", lambda d: d)
    served.wait_registered("echo", *ids)
    for function_id, make in zip(ids, BASE_EXCEPTIONS, strict=True):
        with pytest.raises(InvocationError) as caught:
            caller.trigger({"function_id": function_id, "payload": 1, "timeout_ms": 2000})
        assert caught.value.code == "invocation_failed"
        assert type(make()).__name__ in caught.value.message
        assert caller.trigger({"function_id": "echo", "payload": 7, "timeout_ms": 2000}) == 7
    # the owner's own loop still runs: its calls are answered
    assert owner.trigger({"function_id": "echo", "payload": 8, "timeout_ms": 2000}) == 8


class _Hooks(TriggerHandler[Any]):
    """A trigger type owner whose register_trigger and unregister_trigger raise what it is given."""

    def __init__(self, on_register: BaseException | None, on_unregister: BaseException | None) -> None:
        self.on_register, self.on_unregister = on_register, on_unregister
        self.seen = threading.Condition()
        self.calls: list[str] = []

    def _note(self, what: str, exc: BaseException | None) -> None:
        with self.seen:
            self.calls.append(what)
            self.seen.notify_all()
        if exc is not None:
            raise exc

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        self._note("register", self.on_register)

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        self._note("unregister", self.on_unregister)


@pytest.mark.parametrize("make", BASE_EXCEPTIONS, ids=lambda make: type(make()).__name__)
def test_a_trigger_type_owner_raising_a_base_exception_serves_on(
        served: Harness, make_worker: MakeWorker, make: Callable[[], BaseException]) -> None:
    owner, user = make_worker("owner"), make_worker("user")
    refusing, failing_unbind = _Hooks(make(), None), _Hooks(None, make())
    owner.register_trigger_type({"id": "refuses", "description": "register_trigger raises"}, refusing)
    owner.register_trigger_type({"id": "unbinds", "description": "unregister_trigger raises"}, failing_unbind)
    owner.register_function("echo", lambda d: d)
    user.register_function("target", lambda d: d)
    served.wait_registered("echo", "target")
    served.wait_for(lambda: {"refuses", "unbinds"} <= served.worker_trigger_types())
    user.register_trigger({"type": "refuses", "function_id": "target", "config": {}})
    with refusing.seen:
        assert refusing.seen.wait_for(lambda: refusing.calls == ["register"], 5)
    assert user.trigger({"function_id": "echo", "payload": 1, "timeout_ms": 2000}) == 1
    bound = user.register_trigger({"type": "unbinds", "function_id": "target", "config": {}})
    with failing_unbind.seen:
        assert failing_unbind.seen.wait_for(lambda: failing_unbind.calls == ["register"], 5)
    bound.unregister()
    with failing_unbind.seen:
        assert failing_unbind.seen.wait_for(lambda: failing_unbind.calls == ["register", "unregister"], 5)
    assert user.trigger({"function_id": "echo", "payload": 2, "timeout_ms": 2000}) == 2


def test_functions_available_callbacks_may_block_raise_and_call_the_sync_api(
        served: Harness, make_worker: MakeWorker) -> None:
    watcher, other = make_worker("watcher"), make_worker("other")
    watcher.register_function("echo", lambda d: d)
    release = threading.Event()
    listed: list[int] = []
    after_raise: list[int] = []

    def blocks(functions: list[Any]) -> None:
        listed.append(len(watcher.list_functions()))  # the sync API, from the callback
        release.wait(10)

    def raises(functions: list[Any]) -> None:
        raise KeyboardInterrupt

    def runs_after(functions: list[Any]) -> None:
        after_raise.append(len(functions))

    for callback in (blocks, raises, runs_after):
        watcher.on_functions_available(callback)
    served.wait_for(lambda: any(t["trigger_type"] == "engine::functions-available"
                                for t in served.worker_triggers()))
    other.register_function("new::fn", lambda d: d)
    wait_until(lambda: bool(listed), 5)
    try:
        # the callback blocks: the watcher still answers calls
        assert other.trigger({"function_id": "echo", "payload": 3, "timeout_ms": 2000}) == 3
    finally:
        release.set()
    wait_until(lambda: bool(after_raise), 5)
    assert listed[0] > 0


@pytest.mark.parametrize("function_id", [None, 5, b"echo", ["echo"]], ids=repr)
async def test_a_function_id_that_is_not_a_string_is_refused_before_sending(
        served: Harness, make_worker: MakeWorker, function_id: Any) -> None:
    caller = make_worker("caller")
    caller.register_function("echo", lambda d: d)
    served.wait_registered("echo")
    with pytest.raises(TypeError, match="function_id must be a string, got"):
        caller.trigger({"function_id": function_id, "payload": 1, "timeout_ms": 2000})
    with pytest.raises(TypeError, match="function_id must be a string, got"):
        await caller.trigger_async({"function_id": function_id, "payload": 1, "timeout_ms": 2000})
    assert served.calls_in_flight() == set()
    assert caller.trigger({"function_id": "echo", "payload": 4, "timeout_ms": 2000}) == 4


@pytest.mark.parametrize("request_", [None, ["echo"], "echo"], ids=repr)
def test_a_request_that_is_not_a_dict_names_what_it_was(served: Harness, make_worker: MakeWorker,
                                                         request_: Any) -> None:
    caller = make_worker("caller")
    expected = f"a trigger request is a dict or a TriggerRequest, got {type(request_).__name__}"
    with pytest.raises(TypeError, match=expected):
        caller.trigger(request_)


@pytest.mark.parametrize(("request_", "expected"), [
    ({"function_id": "echo", "data": 5}, "a trigger request has no key 'data'"),
    ({"function_id": "echo", "payload": 5, "timeout": 2000}, "a trigger request has no key 'timeout'"),
    ({"payload": 5}, "a trigger request needs 'function_id'"),
    ({"function_id": "echo", "payload": 5, 7: 1}, "a trigger request has no key 7"),
], ids=["data", "timeout", "no-id", "int-key"])
async def test_a_request_with_a_key_it_does_not_know_or_lacks_is_refused_before_sending(
        served: Harness, make_worker: MakeWorker, request_: dict[Any, Any], expected: str) -> None:
    # a misspelt "payload" was dropped without a word: the function ran with None
    caller = make_worker("caller")
    seen: list[Any] = []
    caller.register_function("echo", lambda d: seen.append(d) or d)
    served.wait_registered("echo")
    with pytest.raises(TypeError, match=expected):
        caller.trigger(request_)
    with pytest.raises(TypeError, match=expected):
        await caller.trigger_async(request_)
    assert seen == []
    assert caller.trigger({"function_id": "echo", "payload": 4, "timeout_ms": 2000}) == 4
    assert seen == [4]


def test_registrations_of_the_wrong_type_are_named(served: Harness, make_worker: MakeWorker) -> None:
    worker = make_worker("w")
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: worker.register_function(None, lambda d: d),  # type: ignore[arg-type]
         "register_function's first argument must be an id, a RegisterFunctionInput or a dict, got NoneType"),
        (lambda: worker.register_trigger(None),  # type: ignore[arg-type]
         "register_trigger's trigger must be a RegisterTriggerInput or a dict, got NoneType"),
        (lambda: worker.register_service("payments"),  # type: ignore[arg-type]
         "register_service's service must be a RegisterServiceInput or a dict, got str"),
        (lambda: worker.register_trigger_type("hook", _Hooks(None, None)),  # type: ignore[arg-type]
         "register_trigger_type's trigger_type must be a RegisterTriggerTypeInput or a dict, got str"),
        (lambda: worker.unregister_trigger_type(None),  # type: ignore[arg-type]
         "unregister_trigger_type's trigger_type must be a RegisterTriggerTypeInput or a dict, got NoneType"),
        (lambda: worker.register_trigger_type({"id": "hook", "description": "d"}, None),  # type: ignore[arg-type]
         "register_trigger_type('hook'): NoneType is not a TriggerHandler: no callable register_trigger, "
         "unregister_trigger"),
    ]
    for register, message in cases:
        with pytest.raises(TypeError) as caught:
            register()
        assert str(caught.value) == message
    worker.register_function("after", lambda d: d)
    served.wait_registered("after")
    assert "hook" not in served.worker_trigger_types()
    worker.unregister_trigger_type({"id": "hook"})  # a dict needs only the id


def _deep(levels: int) -> list[Any]:
    outer: list[Any] = []
    inner = outer
    for _ in range(levels):
        inner.append([])
        inner = inner[0]
    return outer


@pytest.mark.parametrize(("payload", "error"), [
    ({1, 2}, TypeError), (b"x", TypeError), ({(1, 2): 3}, TypeError), (float("nan"), ValueError),
    (_deep(1_000_000), ValueError),
], ids=["set", "bytes", "tuple key", "nan", "1e6 deep"])
async def test_a_payload_with_no_json_form_names_the_call_and_nothing_is_sent(
        served: Harness, make_worker: MakeWorker, payload: Any, error: type[Exception]) -> None:
    caller = make_worker("caller")
    caller.register_function("echo", lambda d: d)
    served.wait_registered("echo")
    note = "the call to 'echo' was not sent: it cannot be written as JSON"
    for action in (None, {"type": "void"}):
        with pytest.raises(error) as caught:
            caller.trigger({"function_id": "echo", "payload": payload, "action": action})
        assert note in getattr(caught.value, "__notes__", [])
        with pytest.raises(error) as caught:
            await caller.trigger_async({"function_id": "echo", "payload": payload, "action": action})
        assert note in getattr(caught.value, "__notes__", [])
    assert served.calls_in_flight() == set()
    assert caller.trigger({"function_id": "echo", "payload": 5, "timeout_ms": 2000}) == 5


def test_shutdown_is_bounded_when_a_handler_swallows_its_cancel(served: Harness, make_worker: MakeWorker) -> None:
    caller = make_worker("caller")
    stubborn = register_worker(served.url, InitOptions(worker_name="stubborn"))
    started, release = threading.Event(), threading.Event()

    async def swallows_cancel(_: Any) -> None:
        started.set()
        while not release.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass

    stubborn.register_function("swallows", swallows_cancel)
    served.wait_registered("swallows")
    caller.trigger({"function_id": "swallows", "payload": 1, "action": TriggerAction.Void()})
    assert started.wait(5)
    closing = threading.Thread(target=stubborn.shutdown, daemon=True)
    closing.start()
    try:
        closing.join(8)
        assert not closing.is_alive(), "shutdown() still waits for the handler 8 s after it was cancelled"
    finally:
        release.set()
        closing.join(5)


def test_one_callback_subscribed_twice_runs_once_per_change_as_in_the_reference(
        served: Harness, make_worker: MakeWorker) -> None:
    watcher, other = make_worker("watcher"), make_worker("other")
    runs: list[int] = []
    changes: list[int] = []
    done = threading.Event()

    def twice(functions: list[Any]) -> None:
        runs.append(len(functions))

    def control(functions: list[Any]) -> None:  # subscribed last: runs after ``twice`` on each change
        changes.append(len(functions))
        if any(f.function_id == "second" for f in functions):
            done.set()

    with pytest.raises(TypeError, match="on_functions_available: the callback must be callable, got NoneType"):
        watcher.on_functions_available(None)  # type: ignore[arg-type]
    unsubscribe = watcher.on_functions_available(twice)
    watcher.on_functions_available(twice)
    unsubscribe_control = watcher.on_functions_available(control)
    served.wait_for(lambda: any(t["trigger_type"] == "engine::functions-available"
                                for t in served.worker_triggers()))
    other.register_function("first", lambda d: d)
    served.wait_registered("first")
    other.register_function("second", lambda d: d)
    assert done.wait(5)
    assert runs == changes
    unsubscribe()
    unsubscribe_control()  # no subscription left: the trigger goes with it
    served.wait_for(lambda: not any(t["trigger_type"] == "engine::functions-available"
                                    for t in served.worker_triggers()))


class _PlainHooks:
    """A trigger type owner whose hooks are plain methods (the reference awaits their None and refuses every
    trigger)."""

    def __init__(self) -> None:
        self.seen = threading.Condition()
        self.calls: list[str] = []

    def _note(self, what: str) -> None:
        with self.seen:
            self.calls.append(what)
            self.seen.notify_all()

    def register_trigger(self, config: TriggerConfig[Any]) -> None:
        self._note(f"register {config.config['k']}")

    def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        self._note(f"unregister {config.config['k']}")


def test_a_trigger_type_owner_with_plain_methods_binds_and_unbinds(served: Harness, make_worker: MakeWorker) -> None:
    owner, user = make_worker("owner"), make_worker("user")
    hooks = _PlainHooks()
    owner.register_trigger_type({"id": "plain", "description": "plain hooks"}, hooks)  # type: ignore[arg-type]
    user.register_function("target", lambda d: d)
    served.wait_registered("target")
    served.wait_for(lambda: "plain" in served.worker_trigger_types())
    trigger = user.register_trigger({"type": "plain", "function_id": "target", "config": {"k": 1}})
    # (bound first: an unregister read before the owner's loop ran the bind is a trigger it never binds, by design)
    with hooks.seen:
        assert hooks.seen.wait_for(lambda: hooks.calls == ["register 1"], 5), hooks.calls
    trigger.unregister()
    with hooks.seen:
        assert hooks.seen.wait_for(lambda: hooks.calls == ["register 1", "unregister 1"], 5), hooks.calls
