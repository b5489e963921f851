"""A store's close held at one of its parts, and the checks of a second ``aclose`` made against it
(test_redis_close_twice.py, test_sql_close_twice.py).

Example::

    store = SQLStream.from_url("sqlite+aiosqlite://")
    await a_cancelled_second_aclose_leaves_the_first_running(store, HeldClose(store._writes))
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Protocol

import pytest

__all__ = ["HeldClose", "a_cancelled_second_aclose_leaves_the_first_running",
           "an_aclose_from_another_loop_raises_while_the_first_runs"]


class Store(Protocol):
    async def aclose(self) -> None: ...


class HeldClose:
    """Holds ``part.aclose`` (a store's write batches) in the store's close: ``entered`` is set once the close got
    there, which goes on once ``may_end`` is set."""

    def __init__(self, part: Any) -> None:
        self.entered, self.may_end = asyncio.Event(), asyncio.Event()
        real_close = part.aclose

        async def held() -> None:
            self.entered.set()
            await self.may_end.wait()
            await real_close()

        part.aclose = held

    async def first_close(self, store: Store) -> asyncio.Task[None]:
        """``store.aclose()`` started and held here."""
        first = asyncio.ensure_future(store.aclose())
        await asyncio.wait_for(self.entered.wait(), 5)
        return first


async def a_cancelled_second_aclose_leaves_the_first_running(store: Store, held: HeldClose) -> None:
    first = await held.first_close(store)
    second = asyncio.ensure_future(store.aclose())
    await asyncio.sleep(0)  # its first step: it waits for the first's end
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert not first.done()
    held.may_end.set()
    await asyncio.wait_for(first, 10)


async def an_aclose_from_another_loop_raises_while_the_first_runs(store: Store, held: HeldClose) -> None:
    """A store belongs to one event loop: a close from a loop in another thread, while the first runs, raises at once
    (it waited on an ``asyncio.Event`` that the first's loop never wakes there, in the end for good)."""
    first = await held.first_close(store)
    outcome: list[BaseException | None] = []

    def there() -> None:
        try:
            asyncio.run(asyncio.wait_for(store.aclose(), 2))
            outcome.append(None)
        except BaseException as exc:  # the test's, in its own thread
            outcome.append(exc)

    thread = threading.Thread(target=there, name="another loop", daemon=True)
    thread.start()
    await asyncio.to_thread(thread.join, 10)
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError), outcome
    assert "another event loop" in str(outcome[0])
    assert not first.done()
    held.may_end.set()
    await asyncio.wait_for(first, 10)
