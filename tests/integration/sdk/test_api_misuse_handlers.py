"""Handlers and trigger-type owners that misbehave: the caller gets an error naming what happened and the worker
keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from iii.errors import InvocationError

from .conftest import Harness, MakeWorker

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
