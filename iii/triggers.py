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

    ``register_trigger`` may be called again for an id it already knows (the engine replays stored triggers
    whenever the type is registered): treat a repeated id as a replacement. Plain (not ``async``) methods are
    served too, on the client's event loop: they must not block.
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
