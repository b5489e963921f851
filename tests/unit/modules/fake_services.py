"""A small in-memory :class:`EngineServices` for module unit tests (functions are Python callables), and what else
those tests share: a module started for a block, a condition that answers when the test lets it, a wall clock the test
sets.

Example::

    services = FakeServices()
    seen = services.collect("handler")  # the data of every call of "handler", in order
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any, ClassVar, TypeVar

from iii.iii_types import TriggerInfo
from iii.protocol.codec import Encoded
from iii_engine.channels import ChannelRelay
from iii_engine.limits import FiredCalls
from iii_engine.modules.base import (
    BuiltinFunction,
    EngineError,
    EngineModule,
    ExternalFunctions,
    FiredSlots,
    InvocationContext,
    NamedQueues,
    TriggerTypeHandler,
)

Handler = Callable[[Any], Awaitable[Any]]
ModuleT = TypeVar("ModuleT", bound=EngineModule)


@asynccontextmanager
async def started(module: ModuleT) -> AsyncIterator[ModuleT]:
    """``module``, started for the block and stopped at its end (also when it fails).

    Example::

        async with started(PubSubModule(FakeServices(), {})) as pubsub:
            ...
    """
    await module.start()
    try:
        yield module
    finally:
        await module.stop()


class FakeServices:
    """Routes ``invoke``/``fire`` to registered built-ins or to test handlers added with :meth:`add`."""

    def __init__(self) -> None:
        self.log = logging.getLogger("tests.fake_engine")
        self.builtins: dict[str, BuiltinFunction] = {}
        self.handlers: dict[str, Handler] = {}
        self.trigger_types: dict[str, TriggerTypeHandler] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.telemetry_listeners: list[Callable[[str, bytes, str], None]] = []
        self.observer: Any = None
        self.channels = ChannelRelay()  # a real relay: modules that open channels get real ones
        self.function_listeners: list[Callable[[], None]] = []
        self.named_queues: NamedQueues | None = None
        self.external_functions: ExternalFunctions | None = None
        self.fired_calls = FiredCalls()  # the engine's bound on fired calls, with its defaults

    def add(self, function_id: str, handler: Handler) -> None:
        self.handlers[function_id] = handler

    def collect(self, function_id: str) -> list[Any]:
        """Add ``function_id`` as a handler that keeps the data of each call: the list it returns, in call order."""
        calls: list[Any] = []

        async def keep(data: Any) -> None:
            calls.append(data)

        self.add(function_id, keep)
        return calls

    def queue_calls(self, function_id: str) -> asyncio.Queue[Any]:
        """Add ``function_id`` as a handler that puts the data of each call on the queue it returns, to be awaited."""
        calls: asyncio.Queue[Any] = asyncio.Queue()
        self.add(function_id, calls.put)
        return calls

    async def call(self, function_id: str, data: Any = None) -> Any:
        """Call a built-in the way a worker would."""
        return await self.builtins[function_id].handler(data, InvocationContext())

    async def trigger(self, trigger_type: str, trigger_id: str, function_id: str, config: Any) -> TriggerInfo:
        info = TriggerInfo(id=trigger_id, trigger_type=trigger_type, function_id=function_id, config=config)
        await self.trigger_types[trigger_type].register(info)
        return info

    def register_function(self, function: BuiltinFunction) -> None:
        self.builtins[function.id] = function

    def unregister_function(self, function_id: str) -> None:
        self.builtins.pop(function_id, None)

    def register_trigger_type(self, trigger_type: str, description: str, handler: TriggerTypeHandler) -> None:
        self.trigger_types[trigger_type] = handler

    def has_function(self, function_id: str) -> bool:
        return function_id in self.builtins or function_id in self.handlers

    def function_owner(self, function_id: str) -> str | None:
        return None  # every function here is the engine's own

    def fired_callee(self, function_id: str) -> str | None:
        return None  # every function here is the engine's own

    async def invoke(self, function_id: str, data: Any, *, timeout_s: float | None = None) -> Any:
        if isinstance(data, Encoded):  # every function here is in-process: the value itself, as the engine hands it
            data = data.value()
        if function_id in self.builtins:
            return await self.call(function_id, data)
        handler = self.handlers.get(function_id)
        if handler is None:
            raise EngineError("function_not_found", f"Function {function_id} not found")
        try:
            return await handler(data)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError("invocation_failed", str(exc)) from exc

    def worker_calls_stats(self) -> dict[str, int]:
        return {"max_calls_per_worker": 10_000, "in_flight": 0, "busiest_worker": 0, "refused": 0, "refused_void": 0}

    def worker_calls_degraded(self) -> bool:
        return False

    def fire(self, function_id: str, data: Any, *, taken: FiredSlots | None = None,
             busy_until: float | None = None) -> bool:
        slot = taken if taken is not None else self.fired_calls.try_take()
        if slot is None:
            self.fired_calls.skip(f"call of {function_id}")
            return False

        async def run() -> None:
            try:
                await self.invoke(function_id, data)
            except EngineError as exc:
                self.log.info("fired %s failed: %s", function_id, exc)
            finally:
                slot.release()

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def invoke_when_free(self, function_id: str, data: Any, *, until: float | None = None) -> Any:
        return await self.invoke(function_id, data)

    async def condition_passes(self, condition_function_id: str | None, payload: Any, *,
                               wait_if_busy: bool = True, busy_until: float | None = None,
                               hold_place: bool = False) -> bool:
        if not condition_function_id:
            return True
        try:
            return await self.invoke(condition_function_id, payload) is not False
        except EngineError:
            return False

    def triggers_of_type(self, trigger_type: str) -> list[TriggerInfo]:
        return []

    def module(self, name: str) -> EngineModule | None:
        return None

    def add_telemetry_listener(self, listener: Callable[[str, bytes, str], None]) -> None:
        self.telemetry_listeners.append(listener)

    def set_invocation_observer(self, observer: Any) -> None:
        self.observer = observer

    def service_functions(self, service_id: str) -> Collection[str]:
        return frozenset()

    def add_functions_listener(self, listener: Callable[[], None]) -> None:
        self.function_listeners.append(listener)

    def serve_named_queues(self, queues: NamedQueues | None) -> None:
        self.named_queues = queues

    def serve_external_functions(self, host: ExternalFunctions | None) -> None:
        self.external_functions = host


@dataclass
class SlowCondition:
    """A condition function that answers ``True`` only once the test sets :attr:`answer`; :attr:`asked` is set as
    soon as it is called, so the test knows a tick or a message is in flight, held by it.

    Example::

        gate = SlowCondition()
        services.add("slow", gate)
        ...  # a trigger with "condition_function_id": "slow" fires
        await gate.asked.wait()
        gate.answer.set()
    """

    asked: asyncio.Event = field(default_factory=asyncio.Event)
    answer: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, data: Any) -> bool:
        self.asked.set()
        await self.answer.wait()
        return True


class ShiftedClock(datetime):
    """``datetime`` whose ``now`` is the real one plus :attr:`offset`: a wall clock set back or forward (an NTP
    step, an operator, a suspend) without the test waiting for it.

    Example::

        monkeypatch.setattr(cron_module, "datetime", ShiftedClock)
        ShiftedClock.offset = timedelta(hours=-1)  # the cron module now reads a clock an hour back
    """

    offset: ClassVar[timedelta] = timedelta(0)

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> ShiftedClock:
        real = datetime.now(tz) + cls.offset
        return cls.fromtimestamp(real.timestamp(), tz)
