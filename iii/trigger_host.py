"""Hosts the custom trigger types this worker owns: hands each trigger the engine binds or unbinds to the
type's :class:`~iii.triggers.TriggerHandler`.

Example:
    >>> import asyncio
    >>> class Hooks:
    ...     async def register_trigger(self, config): print("bound", config.id)
    ...     async def unregister_trigger(self, config): print("unbound", config.id)
    >>> host = TriggerTypeHost()
    >>> host.add("hook", Hooks())
    >>> asyncio.run(host.register("hook", "t1", "f", {}))
    bound t1
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Coroutine
from typing import Any

from .handler_runner import describe_base_exception, handler_raised
from .triggers import TriggerConfig, TriggerHandler

__all__ = ["TriggerTypeHost"]

log = logging.getLogger(__name__)


class TriggerTypeHost:
    """Trigger type id → handler."""

    def __init__(self) -> None:
        self._handlers: dict[str, TriggerHandler[Any]] = {}
        # what each type's handler bound and has not unbound: told to unbind it when the type is let go
        self._bound: dict[str, dict[str, TriggerConfig[Any]]] = {}

    def add(self, type_id: str, handler: TriggerHandler[Any]) -> None:
        """Own ``type_id`` with ``handler``."""
        self._handlers[type_id] = handler

    def get(self, type_id: str) -> TriggerHandler[Any] | None:
        """The handler owning ``type_id`` (``None``: not owned)."""
        return self._handlers.get(type_id)

    def remove(self, type_id: str) -> None:
        """Stop owning ``type_id``."""
        self._handlers.pop(type_id, None)
        self._bound.pop(type_id, None)

    def release(self, type_id: str) -> Coroutine[Any, Any, None] | None:
        """Stop owning ``type_id``; what unbinds (through the handler's ``unregister_trigger``) each trigger it still
        holds, to be run on the client's loop (``None``: it holds none). The engine's ``unregistertrigger`` frames
        for them arrive once the type is no longer owned here, so they would never reach the handler."""
        handler = self._handlers.get(type_id)
        bound = self._bound.get(type_id, {})
        self.remove(type_id)
        if handler is None or not bound:
            return None
        return self._unbind_all(handler, list(bound.values()))

    @staticmethod
    async def _unbind_all(handler: TriggerHandler[Any], triggers: list[TriggerConfig[Any]]) -> None:
        for trigger in triggers:
            await _unbind(handler, trigger)

    async def register(self, type_id: str, trigger_id: str, function_id: str, config: Any) -> dict[str, str] | None:
        """Bind a trigger; the error body for the engine when the handler refused it (``None`` on success)."""
        handler = self._handlers.get(type_id)
        if handler is None:
            return {"code": "trigger_type_not_found", "message": "Trigger type not found"}
        trigger: TriggerConfig[Any] = TriggerConfig(id=trigger_id, function_id=function_id, config=config)
        try:
            await _settled(handler.register_trigger(trigger))
        except Exception as exc:
            log.exception("Error registering trigger %s", trigger_id)
            return {"code": "trigger_registration_failed", "message": str(exc)}
        except BaseException as exc:
            if not handler_raised(exc):
                raise
            # Let through, a KeyboardInterrupt or SystemExit from the handler ended the client's loop thread.
            log.exception("Error registering trigger %s", trigger_id)
            return {"code": "trigger_registration_failed", "message": describe_base_exception(exc)}
        if self._handlers.get(type_id) is not handler:
            # the type was let go while the handler bound it: release() saw nothing to unbind, and the engine's
            # unregistertrigger skips a type no longer owned here, so the binding would stay for good
            await _unbind(handler, trigger)
            return {"code": "trigger_type_not_found", "message": "Trigger type released while registering"}
        self._bound.setdefault(type_id, {})[trigger_id] = trigger
        return None

    async def unregister(self, type_id: str, trigger_id: str, function_id: str, config: Any) -> None:
        """Unbind a trigger; a failing handler is logged, never raised (the engine does not wait for an answer)."""
        handler = self._handlers.get(type_id)
        if handler is None:
            return
        self._bound.get(type_id, {}).pop(trigger_id, None)
        await _unbind(handler, TriggerConfig(id=trigger_id, function_id=function_id, config=config))


async def _unbind(handler: TriggerHandler[Any], trigger: TriggerConfig[Any]) -> None:
    """``handler.unregister_trigger(trigger)``, a failure logged, never raised."""
    try:
        await _settled(handler.unregister_trigger(trigger))
    except Exception:
        log.exception("Error unregistering trigger %s", trigger.id)
    except BaseException as exc:
        if not handler_raised(exc):
            raise
        log.exception("Error unregistering trigger %s", trigger.id)


async def _settled(outcome: Any) -> None:
    """Await ``outcome`` when it is awaitable: a handler whose hooks are plain methods is served as well (awaiting
    their ``None`` refused every trigger with "object NoneType can't be used in 'await' expression")."""
    if inspect.isawaitable(outcome):
        await outcome
