"""One ordered writer for an engine's Redis ``PUBLISH``\\ es: they reach Redis in the order ``publish`` was called.

Before, every publish took its own connection from a 50-connection pool, so two publishes from one worker whose
calls ran at once (fire-and-forget ones, each in a task of its own) could reach Redis in either order: 1,000 void
publishes from one connection arrived with 16 to 44 out-of-order pairs. Now publishes queue, and one task sends
what is queued, in order, in one round trip (a pipeline; a lone publish goes as a plain ``PUBLISH``), then settles
each caller with its own outcome: Redis's reply to its command, or the error that ended its round trip.

The queue is bounded (``max_messages`` and ``max_bytes``, a round trip under way included): a caller past the
bound waits its turn, in call order, never dropped. Each caller has ``timeout`` seconds from its call for the
whole of it (waiting for room, for its turn, for Redis's reply); past it, it gets :class:`TimeoutError` and a
message not sent yet is withdrawn (never sent after its caller was told it failed); one already sent may still
reach Redis, as a reply lost in a stall always could.

Example:
    >>> import asyncio, fakeredis
    >>> async def demo():
    ...     redis = fakeredis.FakeAsyncRedis()
    ...     writer = OrderedPublisher(redis, timeout=1.0)
    ...     await asyncio.gather(*(writer.publish("t", str(i).encode()) for i in range(3)))
    ...     await writer.close()
    ...     return writer.published, writer.round_trips
    >>> asyncio.run(demo())
    (3, 1)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["OrderedPublisher"]

# What may wait for Redis at once (queued or in the round trip under way): as many messages as one worker may have
# calls in flight by default (max_calls_per_worker), as many bytes as its max_call_bytes_per_worker
MAX_MESSAGES = 10_000
MAX_BYTES = 64 * 1024 * 1024
# One round trip carries at most this much (at least one message, however large): a large burst goes as several
# round trips rather than one reply read that takes every message's deadline with it
_BATCH_MESSAGES = 1_000
_BATCH_BYTES = 4 * 1024 * 1024

_WAITING, _QUEUED, _SENT, _GONE = range(4)


@dataclass(eq=False, slots=True)
class _Message:
    channel: str
    payload: bytes
    done: asyncio.Future[None]
    state: int = _WAITING
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.payload)


class OrderedPublisher:
    """Sends ``PUBLISH`` commands in call order through one round trip at a time (see the module).

    An error that ends a round trip (a connection refused, broken or timed out) is each of its messages' outcome.
    """

    def __init__(self, redis: Redis, *, timeout: float,
                 max_messages: int = MAX_MESSAGES, max_bytes: int = MAX_BYTES) -> None:
        self._redis = redis
        self._timeout = timeout
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        # _queue: admitted, in call order, sent from the front; _waiting: callers past the bound, admitted in order
        self._queue: deque[_Message] = deque()
        self._waiting: deque[_Message] = deque()
        # messages and bytes admitted and not yet settled (the queue plus the round trip under way)
        self._held = 0
        self._held_bytes = 0
        self._has_queued = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: messages Redis took (a reply to their PUBLISH)
        self.published = 0
        #: round trips made (a burst of publishes shares one)
        self.round_trips = 0

    async def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` on ``channel`` after every publish called before this one.

        Raises:
            TimeoutError: not settled within ``timeout`` (no room, or Redis did not answer), naming which.
            ConnectionError: the writer is closing.
            Exception: what ended this message's round trip (redis-py's ``ConnectionError``, ``TimeoutError``, a
                pool's wait running out), or Redis's error reply to this command.
        """
        if self._closed:
            raise ConnectionError("the pubsub module is stopping")
        message = _Message(channel, payload, asyncio.get_running_loop().create_future())
        if self._waiting or not self._has_room(message.size):
            self._waiting.append(message)  # behind those already waiting: call order holds
        else:
            self._admit(message)
        if self._task is None:
            self._task = asyncio.create_task(self._write(), name="pubsub-redis-writer")
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(message.done)
        except TimeoutError:
            if message.done.done():
                raise  # the round trip's own outcome (a connection attempt that timed out), not the deadline
            state = self._withdraw(message)
            where = ("it waited for room in the engine's publish queue (max "
                     f"{self._max_messages} messages, {self._max_bytes} bytes)" if state == _WAITING else
                     "Redis had not answered the publishes before it" if state == _QUEUED else "Redis did not answer")
            raise TimeoutError(f"not published within {self._timeout:g} s: {where}") from None
        except BaseException:
            self._withdraw(message)  # a cancelled caller's message is not sent after it left, if not sent yet
            raise

    async def close(self) -> None:
        """Stop the writer; every message not settled yet fails with :class:`ConnectionError`."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for message in (*self._queue, *self._waiting):
            self._settle(message, ConnectionError("the pubsub module is stopping"))
        self._queue.clear()
        self._waiting.clear()

    def _has_room(self, size: int) -> bool:
        # a message larger than the whole bound still goes, alone
        return self._held == 0 or (self._held < self._max_messages and self._held_bytes + size <= self._max_bytes)

    def _admit(self, message: _Message) -> None:
        message.state = _QUEUED
        self._held += 1
        self._held_bytes += message.size
        self._queue.append(message)
        self._has_queued.set()

    def _release(self, message: _Message) -> None:
        """Give back the room of an admitted message and let those waiting in, in order."""
        self._held -= 1
        self._held_bytes -= message.size
        waiting = self._waiting
        while waiting and self._has_room(waiting[0].size):
            self._admit(waiting.popleft())

    def _withdraw(self, message: _Message) -> int:
        """The caller left before its outcome: a message not sent yet is not sent at all (one in the round trip
        under way is settled, and its room given back, by the writer). Returns its state when the caller left."""
        state = message.state
        if state == _WAITING:
            message.state = _GONE
            with contextlib.suppress(ValueError):  # O(n), on timeouts only
                self._waiting.remove(message)
        elif state == _QUEUED:
            # stays in the queue (skipped when its turn comes) but holds no room from now on
            message.state = _GONE
            message.payload = b""
            self._release(message)
        return state

    def _settle(self, message: _Message, outcome: Exception | None) -> None:
        if not message.done.done():
            if outcome is None:
                message.done.set_result(None)
            else:
                message.done.set_exception(outcome)
                message.done.exception()  # a caller that left does not retrieve it: no "never retrieved" warning

    def _next_batch(self) -> list[_Message]:
        queue, size = self._queue, 0
        batch: list[_Message] = []
        while queue and len(batch) < _BATCH_MESSAGES and (not batch or size + queue[0].size <= _BATCH_BYTES):
            message = queue.popleft()
            if message.state != _QUEUED:
                continue  # withdrawn: its room is back already
            message.state = _SENT
            batch.append(message)
            size += message.size
        return batch

    async def _write(self) -> None:
        while True:
            if not self._queue:
                self._has_queued.clear()
                await self._has_queued.wait()
                continue
            batch = self._next_batch()
            # what the batch gets if the writer is cancelled (close) during its round trip
            outcomes: list[Exception | None] = [ConnectionError("the pubsub module is stopping")] * len(batch)
            try:
                outcomes = await self._send(batch) if batch else []
            except Exception as exc:  # the round trip failed (Redis unreachable, broken, silent): all of it did
                outcomes = [exc] * len(batch)
            finally:
                # settled even when the writer is cancelled (close), so no caller waits out its deadline for it
                self._finish(batch, outcomes)

    def _finish(self, batch: list[_Message], outcomes: list[Exception | None]) -> None:
        self.round_trips += bool(batch)
        for message, outcome in zip(batch, outcomes, strict=True):
            self.published += outcome is None
            self._settle(message, outcome)
            message.state = _GONE
            self._release(message)

    async def _send(self, batch: list[_Message]) -> list[Exception | None]:
        """One round trip; each message's outcome (``None``: Redis took it, else Redis's error reply to it)."""
        if len(batch) == 1:  # the plain command: no pipeline's bookkeeping for a publish that came alone
            await self._redis.publish(batch[0].channel, batch[0].payload)
            return [None]
        pipe: Any = self._redis.pipeline(transaction=False)
        async with pipe:
            for message in batch:
                pipe.publish(message.channel, message.payload)
            replies = await pipe.execute(raise_on_error=False)
        return [reply if isinstance(reply, Exception) else None for reply in replies]
