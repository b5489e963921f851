"""How published messages reach the engines that subscribe to their topic: in-process, or through Redis
``PUBLISH``/``SUBSCRIBE`` on a channel named exactly the topic (payload = JSON of ``data``), wire-compatible with
production's RedisAdapter.

Example:
    >>> type(open_bus(PubSubSettings())).__name__
    'LocalBus'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from iii.wire import dumps, loads

from ...limits import FIRE_LIMIT
from ...settings import RedisAdapterSettings
from ..base import EngineError
from .settings import PubSubSettings

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

log = logging.getLogger(__name__)

_WARN_INTERVAL_S = 10.0
# Messages read from Redis and not yet delivered: past either bound the reader stops reading and Redis holds the
# rest (a message may be as large as a control frame, so the count alone would not bound the memory)
_READ_AHEAD_MESSAGES = 1024
_READ_AHEAD_BYTES = 16 * 1024 * 1024

__all__ = ["Deliver", "LocalBus", "PubSubBus", "RedisBus", "open_bus"]

Deliver = Callable[[str, Any], Awaitable[None]]


class PubSubBus(Protocol):
    """Carries published messages to the engines that subscribe to their topic."""

    async def start(self, deliver: Deliver) -> None:
        """Begin delivering received messages to ``deliver(topic, data)``."""

    async def publish(self, topic: str, data: Any) -> None:
        """Send ``data`` to every subscriber of ``topic``."""

    async def subscribe(self, topic: str) -> None:
        """Receive ``topic`` from now on (returns once the subscription is active)."""

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``."""

    async def close(self) -> None:
        """Release connections."""


class LocalBus:
    """In-process bus: publishing delivers straight to this engine's subscribers.

    Example:
        >>> LocalBus().__class__.__name__
        'LocalBus'
    """

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        """See :class:`PubSubBus`."""
        self._deliver = deliver

    async def publish(self, topic: str, data: Any) -> None:
        """See :class:`PubSubBus`."""
        if self._deliver is not None:
            await self._deliver(topic, data)

    async def subscribe(self, topic: str) -> None:
        """Nothing to do: every local topic is delivered."""

    async def unsubscribe(self, topic: str) -> None:
        """Nothing to do."""

    async def close(self) -> None:
        """Nothing to release."""


class RedisBus:
    """Redis ``PUBLISH``/``SUBSCRIBE`` bus, wire-compatible with the production RedisAdapter.

    Example:
        >>> bus = RedisBus("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    """

    def __init__(self, redis_url: str) -> None:
        from redis.asyncio import Redis

        self._redis: Redis = Redis.from_url(redis_url)
        self._pubsub: PubSub = self._redis.pubsub()
        self._reader: asyncio.Task[None] | None = None
        # Messages wait for room in the engine (max_fired_calls) in a task of their own, in order: the reader
        # meanwhile still takes SUBSCRIBE confirmations, which come on the same connection.
        self._received: deque[tuple[str, bytes]] = deque()
        self._received_bytes = 0
        self._has_received = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._delivery: asyncio.Task[None] | None = None
        self._deliver: Deliver | None = None
        # Futures completed when Redis confirms a SUBSCRIBE, so subscribe() returns only once it is live.
        self._confirm: dict[str, list[asyncio.Future[None]]] = {}
        self._closing = False
        #: messages received that reached no subscriber (the engine had no room for them in time)
        self.undelivered = 0
        self._unlogged = 0
        self._warned_at = float("-inf")

    async def start(self, deliver: Deliver) -> None:
        """See :class:`PubSubBus`."""
        self._deliver = deliver
        # A private channel opens the connection so the reader can run before any topic is subscribed.
        await self._pubsub.subscribe(f"__iii_pubsub_idle:{uuid.uuid4()}")
        self._reader = asyncio.create_task(self._read(), name="pubsub-redis-reader")
        self._delivery = asyncio.create_task(self._deliver_received(), name="pubsub-redis-delivery")

    async def publish(self, topic: str, data: Any) -> None:
        """See :class:`PubSubBus`."""
        await self._redis.publish(topic, dumps(data))

    async def subscribe(self, topic: str) -> None:
        """See :class:`PubSubBus`."""
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(topic, []).append(confirmed)
        await self._pubsub.subscribe(topic)
        await asyncio.wait_for(confirmed, timeout=10)

    async def unsubscribe(self, topic: str) -> None:
        """See :class:`PubSubBus`."""
        await self._pubsub.unsubscribe(topic)

    async def close(self) -> None:
        """Stop the reader and close both connections."""
        # The flag ends the reader even if the client library swallows the cancellation.
        self._closing = True
        for task in (self._reader, self._delivery):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()

    async def _read(self) -> None:
        while not self._closing:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            channel = message["channel"]
            topic = channel.decode() if isinstance(channel, bytes) else str(channel)
            if message["type"] == "subscribe":
                for waiter in self._confirm.pop(topic, []):
                    if not waiter.done():
                        waiter.set_result(None)
            elif message["type"] == "message":
                raw = message["data"]
                self._received.append((topic, raw))
                self._received_bytes += len(raw)
                self._has_received.set()
                if len(self._received) >= _READ_AHEAD_MESSAGES or self._received_bytes >= _READ_AHEAD_BYTES:
                    # that much waits for room already: Redis holds what comes meanwhile
                    self._has_room.clear()
                    await self._has_room.wait()

    async def _deliver_received(self) -> None:
        """Deliver what the reader received, one message after another (each waits for room in the engine)."""
        received = self._received
        while True:
            if not received:
                self._has_received.clear()
                await self._has_received.wait()
                continue
            topic, raw = received.popleft()
            self._received_bytes -= len(raw)
            if len(received) < _READ_AHEAD_MESSAGES and self._received_bytes < _READ_AHEAD_BYTES:
                self._has_room.set()
            if self._deliver is None:
                continue
            try:
                data = loads(raw)
            except ValueError:
                continue
            try:
                await self._deliver(topic, data)
            except Exception as exc:  # one message not delivered must not end the delivery
                self._not_delivered(topic, exc)

    def _not_delivered(self, topic: str, exc: Exception) -> None:
        """Count a message that reached no subscriber; warn the first time, then at most every 10 s (not about
        ``fire_limit``: the engine's max_fired_calls bound logs those itself, rate-limited)."""
        self.undelivered += 1
        if isinstance(exc, EngineError) and exc.code == FIRE_LIMIT:
            return
        self._unlogged += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_INTERVAL_S:
            log.warning("%d pubsub messages from Redis not delivered (%d in all); latest on topic %r: %s",
                        self._unlogged, self.undelivered, topic, exc)
            self._unlogged = 0
            self._warned_at = now


def open_bus(settings: PubSubSettings) -> PubSubBus:
    """The bus the settings' ``adapter`` names."""
    adapter = settings.bus_adapter[1]
    if isinstance(adapter, RedisAdapterSettings):
        return RedisBus(adapter.redis_url)
    return LocalBus()
