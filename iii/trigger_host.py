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
from typing import Any

from .handler_runner import describe_base_exception, handler_raised
from .triggers import TriggerConfig, TriggerHandler

__all__ = ["TriggerTypeHost"]

log = logging.getLogger(__name__)


class TriggerTypeHost:
    """Trigger type id → handler."""

    def __init__(self) -> None:
        self._handlers: dict[str, TriggerHandler[Any]] = {}

    def add(self, type_id: str, handler: TriggerHandler[Any]) -> None:
        """Own ``type_id`` with ``handler``."""
        self._handlers[type_id] = handler

    def get(self, type_id: str) -> TriggerHandler[Any] | None:
        """The handler owning ``type_id`` (``None``: not owned)."""
        return self._handlers.get(type_id)

    def remove(self, type_id: str) -> None:
        """Stop owning ``type_id``."""
        self._handlers.pop(type_id, None)

    async def register(self, type_id: str, trigger_id: str, function_id: str, config: Any) -> dict[str, str] | None:
        """Bind a trigger; the error body for the engine when the handler refused it (``None`` on success)."""
        handler = self._handlers.get(type_id)
        if handler is None:
            return {"code": "trigger_type_not_found", "message": "Trigger type not found"}
        try:
            await _settled(handler.register_trigger(TriggerConfig(id=trigger_id, function_id=function_id,
                                                                  config=config)))
        except Exception as exc:
            log.exception("Error registering trigger %s", trigger_id)
            return {"code": "trigger_registration_failed", "message": str(exc)}
        except BaseException as exc:
            if not handler_raised(exc):
                raise
            # Let through, a KeyboardInterrupt or SystemExit from the handler ended the client's loop thread.
            log.exception("Error registering trigger %s", trigger_id)
            return {"code": "trigger_registration_failed", "message": describe_base_exception(exc)}
        return None

    async def unregister(self, type_id: str, trigger_id: str, function_id: str, config: Any) -> None:
        """Unbind a trigger; a failing handler is logged, never raised (the engine does not wait for an answer)."""
        handler = self._handlers.get(type_id)
        if handler is None:
            return
        try:
            await _settled(handler.unregister_trigger(TriggerConfig(id=trigger_id, function_id=function_id,
                                                                    config=config)))
        except Exception:
            log.exception("Error unregistering trigger %s", trigger_id)
        except BaseException as exc:
            if not handler_raised(exc):
                raise
            log.exception("Error unregistering trigger %s", trigger_id)


async def _settled(outcome: Any) -> None:
    """Await ``outcome`` when it is awaitable: a handler whose hooks are plain methods is served as well (awaiting
    their ``None`` refused every trigger with "object NoneType can't be used in 'await' expression")."""
    if inspect.isawaitable(outcome):
        await outcome
