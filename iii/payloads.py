"""Call arguments to wire shapes and incoming payloads to Python objects, for :class:`iii.iii.III`.

Example:
    >>> action_to_wire(None) is None
    True
"""

from __future__ import annotations

from typing import Any

from .channels import ChannelReader, ChannelWriter
from .iii_types import RegisterFunctionFormat, StreamChannelRef, TriggerActionEnqueue, TriggerActionVoid
from .types import is_channel_ref

__all__ = ["action_to_wire", "format_dict", "resolve_channels"]


def format_dict(value: RegisterFunctionFormat | dict[str, Any] | None) -> dict[str, Any] | None:
    """A function format as sent in ``registerfunction``.

    Example:
        >>> format_dict(RegisterFunctionFormat(name="n", type="string"))
        {'name': 'n', 'type': 'string', 'required': False}
    """
    # The reference dumps nested format models without their None fields; keep the same wire shape.
    if isinstance(value, RegisterFunctionFormat):
        return value.model_dump(by_alias=True, exclude_none=True)
    return value


def action_to_wire(action: Any) -> dict[str, Any] | None:
    """The ``action`` of an ``invokefunction`` frame from a ``TriggerAction`` model or dict (``None``: no action).

    Example:
        >>> action_to_wire({"type": "enqueue", "queue": "jobs"})
        {'type': 'enqueue', 'queue': 'jobs'}
    """
    if action is None:
        return None
    if isinstance(action, TriggerActionVoid):
        return {"type": "void"}
    if isinstance(action, TriggerActionEnqueue):
        return {"type": "enqueue", "queue": action.queue}
    if isinstance(action, dict):
        kind = action.get("type")
        if kind == "void":
            return {"type": "void"}
        if kind == "enqueue":
            queue = action.get("queue")
            if not isinstance(queue, str):
                raise ValueError(f"enqueue action needs a string 'queue', got {queue!r}")
            return {"type": "enqueue", "queue": queue}
    raise ValueError(f"unknown trigger action {action!r}: use TriggerAction.Enqueue(queue=...) or TriggerAction.Void()")


def resolve_channels(value: Any, address: str, writers: list[ChannelWriter] | None = None,
                     readers: list[ChannelReader] | None = None) -> Any:
    """Replace channel refs in incoming data by channel ends; returns ``value`` itself when there are none.
    ``writers``: each writer made is appended to it (a handler's, to abort if it raises); ``readers``: each reader
    made (a handler's, to release if it leaves one unfinished).

    Example:
        >>> resolve_channels({"n": [1, {"k": "v"}]}, "ws://engine")
        {'n': [1, {'k': 'v'}]}
    """
    if isinstance(value, dict):
        if is_channel_ref(value):
            ref = StreamChannelRef(
                channel_id=value["channel_id"], access_key=value["access_key"], direction=value["direction"]
            )
            if ref.direction == "read":
                reader = ChannelReader(address, ref)
                if readers is not None:
                    readers.append(reader)
                return reader
            writer = ChannelWriter(address, ref)
            if writers is not None:
                writers.append(writer)
            return writer
        out: dict[str, Any] | None = None
        for k, v in value.items():
            if isinstance(v, dict | list | tuple):
                new = resolve_channels(v, address, writers, readers)
                if new is not v:
                    if out is None:
                        out = dict(value)
                    out[k] = new
        return value if out is None else out
    if isinstance(value, list | tuple):
        items: list[Any] | None = None
        for i, v in enumerate(value):
            if isinstance(v, dict | list | tuple):
                new = resolve_channels(v, address, writers, readers)
                if new is not v:
                    if items is None:
                        items = list(value)
                    items[i] = new
        if items is None:
            return value
        return tuple(items) if isinstance(value, tuple) else items
    return value
