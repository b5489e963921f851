"""Attack A-S on the OperationGuard/StoreDeadline refactor: nested guards, a body that swallows the deadline's
cancel and raises something else, a cancel from outside racing the deadline, and a store's write raising inside a
guard; on both timing paths (the store's shared timer, a per-call ``asyncio.timeout``)."""

from __future__ import annotations

import asyncio

import pytest

from iii_streams import MemoryStream, StreamBackendError, StreamTimeoutError
from iii_streams.base import OperationGuard
from iii_streams.deadlines import SharedDeadlines

PATHS = pytest.mark.parametrize("shared", [True, False], ids=["shared-timer", "asyncio-timeout"])


def _guard(operation: str, limit: float, shared: SharedDeadlines | None) -> OperationGuard:
    return OperationGuard(MemoryStream(), operation, limit, shared)


@PATHS
async def test_nested_guards_expiring_together_report_the_outer_timeout_once(shared: bool) -> None:
    """Both deadlines pass in one timer run: the inner guard lets the cancel through (it is not only its own),
    the outer reports its timeout, and the task is left with no cancel pending."""
    deadlines = SharedDeadlines(0.01) if shared else None
    inner_saw: list[BaseException] = []
    with pytest.raises(StreamTimeoutError, match=r"MemoryStream\.outer did not finish"):
        async with _guard("outer", 0.01, deadlines):
            try:
                async with _guard("inner", 0.01, deadlines):
                    await asyncio.Event().wait()
            except BaseException as exc:
                inner_saw.append(exc)
                raise
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert len(inner_saw) == 1
    # the inner one ends as a cancel (shared timer: both expired at once) or its own timeout (asyncio: its timer
    # ran first), never both
    assert isinstance(inner_saw[0], asyncio.CancelledError | StreamTimeoutError)
    await asyncio.sleep(0)  # nothing left to cancel this task


@PATHS
async def test_a_body_that_swallows_the_deadline_and_raises_another_error_gets_that_error(shared: bool) -> None:
    """The deadline's cancel is caught by the body, which raises a backend error instead: that error is what the
    caller sees (wrapped with the operation's name), not a timeout, and no cancel is left pending."""
    deadlines = SharedDeadlines(0.01) if shared else None
    with pytest.raises(StreamBackendError, match=r"^MemoryStream\.set: .*boom"):
        async with _guard("set", 0.01, deadlines):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise StreamBackendError("MemoryStream.set: boom") from None
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


@PATHS
async def test_a_cancel_from_outside_during_the_guard_is_a_cancel(shared: bool) -> None:
    """A cancel from outside, before the deadline: CancelledError, never StreamTimeoutError."""
    deadlines = SharedDeadlines(5) if shared else None
    started = asyncio.Event()

    async def body() -> None:
        async with _guard("get", 5, deadlines):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
