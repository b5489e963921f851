"""A call's ``timeout_ms`` is checked before anything is sent: NaN, infinities, negatives and non-numbers are
refused with an error naming it, in every call form, and the client keeps working."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii import TriggerRequest

from .conftest import Harness, MakeWorker

BAD = [float("nan"), float("inf"), -1, "100", True]


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_bad_timeouts_are_refused_and_the_client_keeps_working(served: Harness, make_worker: MakeWorker,
                                                               bad: Any) -> None:
    a, b = make_worker("a"), make_worker("b")
    a.register_function("echo::t", lambda data: data)
    served.wait_registered("echo::t")
    with pytest.raises(ValueError, match=r"timeout_ms must be a finite number of milliseconds >= 0.*got"):
        b.trigger({"function_id": "echo::t", "payload": 1, "timeout_ms": bad})

    async def from_a_loop() -> None:
        with pytest.raises(ValueError, match="timeout_ms"):
            await b.trigger_async({"function_id": "echo::t", "payload": 1, "timeout_ms": bad})

    asyncio.run(from_a_loop())
    assert len(b._calls) == 0  # nothing was left waiting
    assert b.trigger({"function_id": "echo::t", "payload": 2, "timeout_ms": 5000}) == 2
    assert b.trigger(TriggerRequest(function_id="echo::t", payload=3, timeout_ms=0)) == 3  # 0: the default


def test_any_real_number_is_a_timeout(served: Harness, make_worker: MakeWorker) -> None:
    from fractions import Fraction

    a, b = make_worker("a"), make_worker("b")
    a.register_function("echo::r", lambda data: data)
    served.wait_registered("echo::r")
    assert b.trigger({"function_id": "echo::r", "payload": 4, "timeout_ms": Fraction(10_001, 2)}) == 4
