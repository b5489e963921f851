"""State models and the ``IState`` contract (docs/protocol.md#built-in-functions,
docs/protocol.md#reference-sdk-differences).

The models mirror the payloads of the engine's ``state::*`` functions and of ``state`` trigger events; update
operations are the stream ones from :mod:`iii.stream`.

Example:
    >>> StateSetInput(scope="users", key="42", value={"name": "Ada"}).key
    '42'
    >>> StateEventType("state:updated") is StateEventType.UPDATED
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from .stream import TaggedUpdateOp, UpdateOp  # noqa: F401 - UpdateOp: the reference SDK exports it here too

__all__ = [
    "DeleteResult",
    "IState",
    "StateDeleteInput",
    "StateDeleteResult",
    "StateEventData",
    "StateEventType",
    "StateGetInput",
    "StateListInput",
    "StateSetInput",
    "StateSetResult",
    "StateUpdateInput",
    "StateUpdateResult",
]

TData = TypeVar("TData")


class StateGetInput(BaseModel):
    """Which value to read: ``state::get`` payload."""

    scope: str
    key: str


class StateSetInput(BaseModel):
    """Value to store (create or overwrite): ``state::set`` payload."""

    scope: str
    key: str
    value: Any


class StateDeleteInput(BaseModel):
    """Which value to remove: ``state::delete`` payload."""

    scope: str
    key: str


class StateListInput(BaseModel):
    """Which scope to list: ``state::list`` payload."""

    scope: str


class StateUpdateInput(BaseModel):
    """Operations applied in order to one value: ``state::update`` payload."""

    scope: str
    key: str
    ops: list[TaggedUpdateOp]


class StateSetResult(BaseModel, Generic[TData]):
    """What a set returns: the previous value (``None`` when created) and the stored one."""

    old_value: TData | None = None
    new_value: TData


class StateUpdateResult(BaseModel, Generic[TData]):
    """What an update returns: the value before and after the operations."""

    old_value: TData | None = None
    new_value: TData


class StateDeleteResult(BaseModel):
    """What a delete returns: the removed value, ``None`` if there was none."""

    old_value: Any | None = None


class DeleteResult(BaseModel):
    """Same shape as :class:`StateDeleteResult`; the name ``IState.delete`` is declared with."""

    old_value: Any | None = None


class StateEventType(str, Enum):  # noqa: UP042 - str() and format() as the reference (not StrEnum)
    """``event_type`` of a ``state`` trigger event."""

    CREATED = "state:created"
    UPDATED = "state:updated"
    DELETED = "state:deleted"


class StateEventData(BaseModel, Generic[TData]):
    """Payload a ``state`` trigger delivers to its function."""

    type: str = "state"
    event_type: StateEventType
    scope: str
    key: str
    old_value: TData | None = None
    new_value: TData | None = None


class IState(ABC, Generic[TData]):
    """A state store: values addressed by ``(scope, key)``.

    Example:
        >>> class Empty(IState[int]):
        ...     async def get(self, input: StateGetInput) -> int | None: return None
        ...     async def set(self, input: StateSetInput) -> StateSetResult[int] | None: return None
        ...     async def delete(self, input: StateDeleteInput) -> DeleteResult: return DeleteResult()
        ...     async def list(self, input: StateListInput) -> list[int]: return []
        ...     async def update(self, input: StateUpdateInput) -> StateUpdateResult[int] | None: return None
        >>> isinstance(Empty(), IState)
        True
    """

    @abstractmethod
    async def get(self, input: StateGetInput) -> TData | None:
        """The value at ``(scope, key)``, or ``None``."""

    @abstractmethod
    async def set(self, input: StateSetInput) -> StateSetResult[TData] | None:
        """Store a value, returning the old and new values."""

    @abstractmethod
    async def delete(self, input: StateDeleteInput) -> DeleteResult:
        """Remove a value, returning what was removed."""

    @abstractmethod
    async def list(self, input: StateListInput) -> list[TData]:
        """Every value of a scope."""

    @abstractmethod
    async def update(self, input: StateUpdateInput) -> StateUpdateResult[TData] | None:
        """Apply update operations atomically, returning the values before and after."""
