"""Custom trigger types: the handler a trigger-type owner implements, and the handle a trigger returns.

Example:
    >>> class Webhooks(TriggerHandler[dict]):
    ...     async def register_trigger(self, config: TriggerConfig[dict]) -> None: ...
    ...     async def unregister_trigger(self, config: TriggerConfig[dict]) -> None: ...
    >>> TriggerConfig(id="t1", function_id="f", config={}).id
    't1'
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

TConfig = TypeVar("TConfig")


class TriggerConfig(BaseModel, Generic[TConfig]):
    """One trigger bound to a type this worker owns."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str
    function_id: str
    config: Any


class TriggerHandler(ABC, Generic[TConfig]):
    """Owner side of a custom trigger type.

    Each trigger is bound once: the engine replays the type's triggers whenever the type is registered (every
    reconnect), and one sent again as it is bound is not passed on; sent with another function or config,
    ``unregister_trigger`` of the old binding comes first. After a reconnect, a trigger the engine no longer has is
    unbound. The calls for one trigger id come one after the other. Plain (not ``async``) methods are served too, on
    the client's event loop: they must not block.
    """

    @abstractmethod
    async def register_trigger(self, config: TriggerConfig[TConfig]) -> None:
        """A trigger of this type was bound to ``config.function_id``."""

    @abstractmethod
    async def unregister_trigger(self, config: TriggerConfig[TConfig]) -> None:
        """The trigger ``config.id`` was removed."""


class Trigger:
    """Handle of a registered trigger.

    Example:
        >>> Trigger(lambda: None).unregister()
    """

    def __init__(self, unregister_fn: Callable[[], Any]) -> None:
        self._unregister_fn = unregister_fn

    def unregister(self) -> None:
        """Remove the trigger from the engine."""
        self._unregister_fn()
