"""Stream models and the ``IStream`` contract every stream backend implements.

Example:
    >>> from iii.stream import StreamSetInput, UpdateIncrement
    >>> StreamSetInput(stream_name="todos", group_id="g", item_id="1", data={"n": 1}).item_id
    '1'
    >>> UpdateIncrement(path="n", by=2).type
    'increment'
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, Discriminator, Tag

TData = TypeVar("TData")

StreamContext = Any


class StreamAuthInput(BaseModel):
    """What the stream socket's auth function receives."""

    headers: dict[str, str]
    path: str
    query_params: dict[str, list[str]]
    addr: str


class StreamAuthResult(BaseModel):
    """What an auth function returns; ``context`` reaches join/leave handlers."""

    context: Any | None = None


class StreamJoinLeaveEvent(BaseModel):
    """Payload of ``stream:join`` / ``stream:leave`` triggers."""

    subscription_id: str
    stream_name: str
    group_id: str
    id: str | None = None
    context: Any | None = None


class StreamJoinResult(BaseModel):
    """Answer of a join handler."""

    unauthorized: bool


class StreamGetInput(BaseModel):
    stream_name: str
    group_id: str
    item_id: str


class StreamSetInput(BaseModel):
    stream_name: str
    group_id: str
    item_id: str
    data: Any


class StreamDeleteInput(BaseModel):
    stream_name: str
    group_id: str
    item_id: str


class StreamListInput(BaseModel):
    stream_name: str
    group_id: str


class StreamListGroupsInput(BaseModel):
    stream_name: str


class UpdateSet(BaseModel):
    """Set top-level key ``path`` (``""`` = the whole value) to ``value``."""

    type: str = "set"
    path: str
    value: Any


class UpdateIncrement(BaseModel):
    """Add ``by`` to the number at ``path``."""

    type: str = "increment"
    path: str
    by: int | float


class UpdateDecrement(BaseModel):
    """Subtract ``by`` from the number at ``path``."""

    type: str = "decrement"
    path: str
    by: int | float


class UpdateRemove(BaseModel):
    """Remove key ``path``."""

    type: str = "remove"
    path: str


class UpdateMerge(BaseModel):
    """Shallow-merge the object ``value`` into the item (``path`` ``""``, the root, as production's engine: a merge at
    any other path, or of a value that is not an object, changes nothing)."""

    type: str = "merge"
    path: str
    value: Any


UpdateOp = UpdateSet | UpdateIncrement | UpdateDecrement | UpdateRemove | UpdateMerge



def _op_type(op: Any) -> Any:
    return op.get("type") if isinstance(op, dict) else getattr(op, "type", None)


# How input models hold ops: the class named by ``type``. Left to pydantic's smart union, a merge became an
# UpdateSet and a decrement an UpdateIncrement (same fields), so a backend that told ops apart by class decremented
# where asked to increment. ``type`` stays a plain string on the models themselves, as in the reference SDK.
TaggedUpdateOp = Annotated[
    Annotated[UpdateSet, Tag("set")]
    | Annotated[UpdateIncrement, Tag("increment")]
    | Annotated[UpdateDecrement, Tag("decrement")]
    | Annotated[UpdateRemove, Tag("remove")]
    | Annotated[UpdateMerge, Tag("merge")],
    Discriminator(_op_type),
]


class StreamUpdateInput(BaseModel):
    stream_name: str
    group_id: str
    item_id: str
    ops: list[TaggedUpdateOp]


class StreamSetResult(BaseModel, Generic[TData]):
    old_value: TData | None = None
    new_value: TData


class StreamUpdateResult(BaseModel, Generic[TData]):
    old_value: TData | None = None
    new_value: TData


class StreamDeleteResult(BaseModel):
    old_value: Any | None = None


class IStream(ABC, Generic[TData]):
    """A keyed store of JSON items: ``stream_name`` → ``group_id`` → ``item_id`` → value.

    Implement every method; plug the object into ``III.create_stream(name, stream)``.

    Example:
        >>> class Nothing(IStream[dict]):
        ...     async def get(self, input): return None
        ...     async def set(self, input): return StreamSetResult(new_value=input.data)
        ...     async def delete(self, input): return StreamDeleteResult()
        ...     async def list(self, input): return []
        ...     async def list_groups(self, input): return []
        ...     async def update(self, input): return None
        >>> isinstance(Nothing(), IStream)
        True
    """

    @abstractmethod
    async def get(self, input: StreamGetInput) -> TData | None:
        """The item, or ``None`` when missing."""

    @abstractmethod
    async def set(self, input: StreamSetInput) -> StreamSetResult[TData] | None:
        """Store the item; returns old and new value."""

    @abstractmethod
    async def delete(self, input: StreamDeleteInput) -> StreamDeleteResult:
        """Remove the item; returns the old value."""

    @abstractmethod
    async def list(self, input: StreamListInput) -> builtins.list[TData]:
        """Every item value in a group."""

    @abstractmethod
    async def list_groups(self, input: StreamListGroupsInput) -> builtins.list[str]:
        """Every non-empty group of a stream."""

    @abstractmethod
    async def update(self, input: StreamUpdateInput) -> StreamUpdateResult[TData] | None:
        """Apply ``ops`` atomically; ``None`` lets the caller compose get → apply → set."""
