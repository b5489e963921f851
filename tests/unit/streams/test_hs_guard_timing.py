"""One timing implementation for a store's batch deadline and its per-operation guard (StoreDeadline, which
OperationGuard extends): both paths (the store's shared timer, a per-call ``asyncio.timeout``) give a plain
``TimeoutError`` from StoreDeadline and a ``StreamTimeoutError`` naming the operation from the guard."""

from __future__ import annotations

import asyncio

import pytest

from iii_streams import MemoryStream, StreamTimeoutError, StreamUnavailableError
from iii_streams.base import OperationGuard, StoreDeadline
from iii_streams.deadlines import SharedDeadlines


def test_the_guard_inherits_the_deadline_timing_unchanged() -> None:
    assert issubclass(OperationGuard, StoreDeadline)
    # a guard that succeeds runs StoreDeadline's code, nothing of its own
    assert OperationGuard.__aenter__ is StoreDeadline.__aenter__
    assert OperationGuard.__aexit__ is StoreDeadline.__aexit__


@pytest.mark.parametrize("shared", [True, False], ids=["shared-timer", "asyncio-timeout"])
async def test_store_deadline_raises_a_plain_timeout(shared: bool) -> None:
    deadline = StoreDeadline(0.01, SharedDeadlines(0.01) if shared else None)
    with pytest.raises(TimeoutError) as caught:
        async with deadline:
            await asyncio.Event().wait()
    assert type(caught.value) is TimeoutError
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-timer", "asyncio-timeout"])
async def test_the_guard_names_the_operation_and_keeps_the_timeout_as_cause(shared: bool) -> None:
    store = MemoryStream()
    guard = OperationGuard(store, "get", 0.01, SharedDeadlines(0.01) if shared else None)
    with pytest.raises(StreamTimeoutError, match=r"^MemoryStream\.get did not finish within 0\.01 s$") as caught:
        async with guard:
            await asyncio.Event().wait()
    assert type(caught.value.__cause__) is TimeoutError


async def test_store_deadline_without_a_limit_bounds_nothing_and_passes_errors() -> None:
    async with StoreDeadline(None):
        await asyncio.sleep(0)
    with pytest.raises(OSError, match="boom"):
        async with StoreDeadline(None):
            raise OSError("boom")


async def test_the_guard_wraps_backend_errors_with_the_operation_name() -> None:
    with pytest.raises(StreamUnavailableError, match=r"^MemoryStream\.set: backend unreachable: boom") as caught:
        async with OperationGuard(MemoryStream(), "set", None):
            raise OSError("boom")
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(asyncio.CancelledError):  # not an Exception: passes as it is
        async with OperationGuard(MemoryStream(), "set", None):
            raise asyncio.CancelledError
