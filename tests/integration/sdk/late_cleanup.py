"""The production engine's late cleanup of a worker's old connection (docs/protocol.md, production behaviour T7), on
the :class:`~tests.integration.sdk.fake_engine.FakeEngine`: the cleanup of a connection that dropped is held until
the test releases it, and then deletes every function and trigger id that connection had registered, also those the
worker's new connection has registered again meanwhile.

Example::

    late = LateCleanup(fake)             # before the cut
    ...cut the client's socket...
    late.release()                       # the old connection's cleanup runs now, deleting the re-sent ids
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from .conftest import EngineThread
from .fake_engine import FakeWorker


class LateCleanup:
    """Holds the fake engine's cleanup of each connection that drops until :meth:`release`; then it deletes, by id,
    what that connection registered (T7). ``workers_listed`` counts the ``engine::workers::list`` calls answered
    since (a reconnected SDK polls it until the old worker is gone)."""

    def __init__(self, fake: EngineThread, *, only: Callable[[str], bool] | None = None) -> None:
        """``only``: hold the cleanups of the worker ids it accepts; the others run at once, as usual."""
        self._fake = fake
        engine = fake.engine
        self._released = fake.run(_new_event())
        self.workers_listed = 0
        cleanup: Callable[[FakeWorker], Coroutine[Any, Any, None]] = engine._cleanup
        builtin = engine._builtin

        async def late(worker: FakeWorker) -> None:
            if only is not None and not only(worker.id):
                await cleanup(worker)
                return
            await self._released.wait()
            for frame in worker.frames:  # T7: by id, whoever registered it since
                if frame.get("type") == "registerfunction":
                    engine.functions.pop(frame["id"], None)
                elif frame.get("type") == "registertrigger":
                    engine.triggers.pop(frame["id"], None)
            await cleanup(worker)

        def counting(worker: FakeWorker, function_id: str, data: Any) -> Any:
            if function_id == "engine::workers::list":
                self.workers_listed += 1
            return builtin(worker, function_id, data)

        engine._cleanup = late  # type: ignore[method-assign]
        engine._builtin = counting  # type: ignore[method-assign]

    def release(self) -> None:
        """Let the held cleanups run (from any thread but the engine's)."""
        self._fake.loop.call_soon_threadsafe(self._released.set)

    def snapshot(self, worker_id: str, function_id: str) -> tuple[bool, bool, bool]:
        """``(old worker still known, function_id registered, a trigger bound to it)``, read on the engine's loop."""
        engine = self._fake.engine

        async def read() -> tuple[bool, bool, bool]:
            return (worker_id in engine.workers, function_id in engine.functions,
                    any(t.get("function_id") == function_id for _, t in engine.triggers.values()))

        return self._fake.run(read())


async def _new_event() -> asyncio.Event:
    return asyncio.Event()  # made on the engine's loop, where it is awaited
