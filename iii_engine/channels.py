"""Channel relay (PROTOCOL §5, §9.2). Interface stub: the channels work replaces the bodies.

The worker listener hands ``/ws/channels/{id}`` upgrades here: ``check`` runs before the upgrade (HTTP
rejection), ``serve`` runs the accepted connection until it ends.
"""

from __future__ import annotations

from typing import Any

from websockets.asyncio.server import ServerConnection


class ChannelRelay:
    """All channels of one engine."""

    def __init__(self, *, max_message_size: int = 64 * 1024 * 1024, attach_timeout_s: float = 300.0,
                 production_mode: bool = False) -> None:
        self.max_message_size = max_message_size
        self.attach_timeout_s = attach_timeout_s
        self.production_mode = production_mode

    def create(self, buffer_size: int | None, owner: str | None) -> dict[str, Any]:
        """``engine::channels::create``: ``{"writer": ref, "reader": ref}``."""
        raise NotImplementedError("channels are not implemented yet")

    def check(self, channel_id: str, key: str | None, direction: str | None) -> tuple[int, str] | None:
        """``(status, body)`` to refuse the upgrade with, or ``None`` to accept."""
        return (404, "Channel not found")

    async def serve(self, ws: ServerConnection, channel_id: str, key: str, direction: str) -> None:
        """Run one accepted channel end until it is done."""
        await ws.close()

    def drop_owner(self, worker_id: str) -> None:
        """The worker that created channels disconnected."""

    async def close(self) -> None:
        """Engine shutdown: close every channel socket."""
