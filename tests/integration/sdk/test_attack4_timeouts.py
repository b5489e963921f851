"""Attack on a8da08c: a huge but finite ``timeout_ms`` (1e300, 10**400) must not break a call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii import InitOptions
from iii.iii import register_worker

from .conftest import Harness, MakeWorker

HUGE: list[Any] = [1e300, 10**400]


@pytest.mark.parametrize("huge", HUGE, ids=["1e300", "10**400"])
def test_a_huge_timeout_waits_for_the_answer(served: Harness, make_worker: MakeWorker, huge: Any) -> None:
    a, b = make_worker("a"), make_worker("b")
    a.register_function("echo::huge", lambda data: data)
    served.wait_registered("echo::huge")
    assert b.trigger({"function_id": "echo::huge", "payload": 1, "timeout_ms": huge}) == 1

    async def from_a_loop() -> Any:
        return await b.trigger_async({"function_id": "echo::huge", "payload": 2, "timeout_ms": huge})

    assert asyncio.run(from_a_loop()) == 2
    assert b._run_on_loop(b.trigger_async({"function_id": "echo::huge", "payload": 3, "timeout_ms": huge})) == 3
    assert len(b._calls) == 0
    assert len(b._session._pending) == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, "100", True], ids=repr)
def test_a_bad_default_invocation_timeout_is_refused_at_once(served: Harness, bad: Any) -> None:
    """``InitOptions.invocation_timeout_ms`` is the timeout of every call that gives none: a NaN, negative or
    non-number default is refused when the client is made (before: accepted, then each call broke as a8da08c's
    bad timeout_ms did - a NaN left a timer and a clock per call, -1 expired every call at once)."""
    with pytest.raises(ValueError, match=r"invocation_timeout_ms must be a finite number of milliseconds >= 0"):
        register_worker(served.url, InitOptions(worker_name="bad", invocation_timeout_ms=bad))


def test_a_huge_default_invocation_timeout_waits_for_the_answer(served: Harness, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b", invocation_timeout_ms=1e300)
    a.register_function("echo::huge-default", lambda data: data)
    served.wait_registered("echo::huge-default")
    assert b.trigger({"function_id": "echo::huge-default", "payload": 4}) == 4
    assert len(b._calls) == 0
