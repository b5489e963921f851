"""A module whose stop bound cannot be had is still stopped; a worker module that cannot be built fails the start
in one line.

Before: ``_stop_module`` made the ``module.stop()`` coroutine, then ``module.stop_timeout_s()`` raised (the queue
module's ``stop_timeout_ms`` 10**400: OverflowError), so the stop never ran and the queue's 2 consumer loops ran on
after ``Engine.stop()``. The worker module was built outside the start's ``try``: a 10**400
``functions_available_debounce_ms`` raised a bare OverflowError out of ``Engine.start()`` (a 40-line traceback from
``iii-engine``), not an :class:`EngineStartError`. Both values are now refused by the configuration check; these
tests reach the engine's own handling by going around it.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import EngineStartError
from iii_engine.modules.queue.module import QueueModule
from tests.polling import until


def _consumer_loops() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "") == "QueueConsumer._loop"]


async def test_a_module_whose_stop_bound_raises_is_stopped_all_the_same(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    spec = ModuleSpec("modules::queue::QueueModule", {"queue_configs": {"a": {}, "b": {}}})
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec]))
    await engine.start()
    try:
        await until(lambda: len(_consumer_loops()) == 2)
        def no_bound(self: QueueModule) -> float:
            raise OverflowError("integer division result too large for a float")
        monkeypatch.setattr(QueueModule, "stop_timeout_s", no_bound)
    finally:
        with caplog.at_level(logging.WARNING, logger="iii_engine.engine"):
            await engine.stop()
    # the stop ran: no consumer loop left (before: 2, running on after Engine.stop())
    assert _consumer_loops() == []
    warnings = [record.getMessage() for record in caplog.records if "no stop bound" in record.getMessage()]
    assert warnings == ["module queue: no stop bound (integer division result too large for a float); stopping it "
                        "within 10.0 s"], warnings


async def test_a_worker_module_that_cannot_be_built_is_an_engine_start_error() -> None:
    # around the configuration check (which now refuses the value itself): the engine's own handling of the failure
    config = EngineConfig(host="127.0.0.1", port=0, modules=[]).model_copy(
        update={"functions_available_debounce_ms": 10**400})
    engine = Engine(config=config)
    with pytest.raises(EngineStartError) as caught:
        await engine.start()
    message = str(caught.value)
    assert message.startswith("module ") and "cannot start: " in message and "\n" not in message, message
    assert "too large" in message or "OverflowError" in message, message
    assert not engine.ready.is_set()
