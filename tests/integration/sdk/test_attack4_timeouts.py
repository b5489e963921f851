"""Attack on a8da08c: a huge but finite ``timeout_ms`` (1e300, 10**400) must not break a call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

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
