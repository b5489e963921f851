"""One ordered writer for an engine's Redis ``PUBLISH``\\ es: they reach Redis in the order ``publish`` was called.

Before, every publish took its own connection from a 50-connection pool, so two publishes from one worker whose
calls ran at once (fire-and-forget ones, each in a task of its own) could reach Redis in either order: 1,000 void
publishes from one connection arrived with 16 to 44 out-of-order pairs. Now publishes queue, and one task sends
what is queued, in order, in one round trip (a pipeline; a lone publish goes as a plain ``PUBLISH``), then settles
each caller with its own outcome: Redis's reply to its command, or the error that ended its round trip.

The queue is bounded (``max_messages`` and ``max_bytes``, a round trip under way included): a caller past the
bound waits its turn, in call order, never dropped. The bound counts admitted messages, not the callers waiting
for room: those hold their payload too (what bounds them is the engine's ``max_call_bytes_per_worker`` per worker).
Each caller has ``timeout`` seconds from its call for the whole of it (waiting for room, for its turn, for Redis's
reply), and its error says which one ran out and whether the message went to Redis:

* not sent: a message still waiting when its deadline passes is withdrawn, and one whose turn comes with less than
  ``min_left`` seconds of it left (Redis was slow to answer those before it) fails then, unsent: either is never
  sent after its caller was told it failed. Before, after a stall ended by the 10 s socket timeout, the writer sent
  the next 1,000 queued messages with milliseconds left: their callers were told Redis did not answer, and Redis
  published them once it resumed (1,146 of 5,000 publishes reached subscribers after failing).
* sent: :class:`OutcomeUnknown` (a :class:`TimeoutError`) says the message may have been published, as a reply
  lost in a stall, or a connection that broke after the batch was written, always could be (its text names the
  cause). A message counts as sent from when its batch is written to a connection that is ready (connected, its
  handshake answered), not before: a server that accepts connections and never answers had all 50 publishes told
  they may have been published, though it received no ``PUBLISH`` at all; and 60 of 133 publishes that failed with
  "Connection closed by server." as Redis killed the connection had been published.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["OrderedPublisher", "OutcomeUnknown"]

# What may wait for Redis at once (queued or in the round trip under way): as many messages as one worker may have
# calls in flight by default (max_calls_per_worker), as many bytes as its max_call_bytes_per_worker
MAX_MESSAGES = 10_000
MAX_BYTES = 64 * 1024 * 1024
# One round trip carries at most this much (at least one message, however large): a large burst goes as several
# round trips rather than one reply read that takes every message's deadline with it
_BATCH_MESSAGES = 1_000
_BATCH_BYTES = 4 * 1024 * 1024

# A message's turn must leave it at least this share of its deadline for Redis's answer, else it fails unsent
_MIN_LEFT_SHARE = 0.1

# _TAKEN: in the batch about to go, waiting for a connection that is ready (nothing written yet)
_WAITING, _QUEUED, _TAKEN, _SENT, _GONE = range(5)


class OutcomeUnknown(TimeoutError):
    """A message went to Redis and its deadline passed, or its connection broke, before Redis answered: it may
    have been published."""


@dataclass(eq=False, slots=True)
class _Message:
    channel: str
    payload: bytes
    done: asyncio.Future[None]
    deadline: float  # the loop's time
    state: int = _WAITING
    #: it waited for room past the bound (its error names that, whatever it waited for next)
    waited: bool = False
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.payload)


class OrderedPublisher:
    """Sends ``PUBLISH`` commands in call order through one round trip at a time (see the module).

    An error that ends a round trip (a connection refused, broken or timed out) is each of its messages' outcome.
    ``on_ready`` is called each time a round trip has a connection that is ready (Redis is reachable), before it
    writes.
    """

    def __init__(self, redis: Redis, *, timeout: float, min_left: float | None = None,
                 max_messages: int = MAX_MESSAGES, max_bytes: int = MAX_BYTES,
                 on_ready: Callable[[], None] | None = None) -> None:
        self._redis = redis
        self._on_ready = on_ready
        self._timeout = timeout
        # default a tenth of the deadline (1 s of 10 s): a healthy round trip takes milliseconds
        self._min_left = timeout * _MIN_LEFT_SHARE if min_left is None else min_left
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
            OutcomeUnknown: sent, and Redis did not answer within ``timeout`` or the connection broke before it
                answered (the cause chained and named): it may have been published.
            TimeoutError: not sent, and never will be: no room in time, or Redis did not answer the publishes
                before it soon enough, naming which.
            ConnectionError: the writer is closing.
            Exception: not sent: what kept its round trip from starting (redis-py's ``ConnectionError``,
                ``TimeoutError``, a pool's wait running out); or Redis's error reply to this command.
        """
        if self._closed:
            raise ConnectionError("the pubsub module is stopping")
        loop = asyncio.get_running_loop()
        message = _Message(channel, payload, loop.create_future(), loop.time() + self._timeout)
        if self._waiting or not self._has_room(message.size):
            message.waited = True
            self._waiting.append(message)  # behind those already waiting: call order holds
        else:
            self._admit(message)
        if self._task is None:
            self._task = asyncio.create_task(self._write(), name="pubsub-redis-writer")
        try:
            async with asyncio.timeout_at(message.deadline):
                await asyncio.shield(message.done)
        except TimeoutError:
            if message.done.done():
                # settled in the loop turn its deadline passed (a round trip ending as it does): that outcome, even
                # success, not the timeout's empty TimeoutError (1,097 of 5,000 callers once unsent messages are
                # failed at their turn, as a stalled round trip ends)
                return message.done.result()
            state = self._withdraw(message)
            if state == _SENT:
                raise OutcomeUnknown(f"outcome unknown: sent, but Redis did not answer within {self._timeout:g} s; "
                                     "it may have been published") from None
            raise TimeoutError(f"not published within {self._timeout:g} s: {self._why_late(message, state)}; "
                               "it was not sent") from None
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

    def _why_late(self, message: _Message, state: int) -> str:
        """What a message not sent in time waited for (a waiter let in as others left is still named waiting:
        they all time out at once, and room was what it lacked)."""
        room = (f"it waited for room in the engine's publish queue (max {self._max_messages} messages, "
                f"{self._max_bytes} bytes)")
        if state == _WAITING:
            return room
        if state == _TAKEN:
            ready = "no connection to Redis was ready (connecting, or waiting for a free one)"
            return f"{room}, then {ready}" if message.waited else ready
        if message.waited:
            return f"{room}, then behind publishes Redis had not answered"
        return "Redis had not answered the publishes before it"

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
            message.payload = b""
            with contextlib.suppress(ValueError):  # O(n), on timeouts only
                self._waiting.remove(message)
        elif state in (_QUEUED, _TAKEN):
            # stays in the queue or batch (skipped when its turn comes) but holds no room from now on
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
        too_late = asyncio.get_running_loop().time() + self._min_left
        while queue and len(batch) < _BATCH_MESSAGES and (not batch or size + queue[0].size <= _BATCH_BYTES):
            message = queue.popleft()
            if message.state != _QUEUED:
                continue  # withdrawn: its room is back already
            if message.deadline < too_late:
                self._fail_unsent(message)
                continue
            message.state = _TAKEN
            batch.append(message)
            size += message.size
        return batch

    def _mark_sent(self, batch: list[_Message]) -> list[_Message]:
        """The messages of ``batch`` that go now, marked sent: not those withdrawn while the connection was made
        ready, nor those then left with less than ``min_left`` of their deadline (they would likely pass it in the
        round trip, their callers told they failed and Redis publishing them later)."""
        too_late = asyncio.get_running_loop().time() + self._min_left
        going: list[_Message] = []
        for message in batch:
            if message.state != _TAKEN:
                continue
            if message.deadline < too_late:
                self._fail_unsent(message)
                continue
            message.state = _SENT
            going.append(message)
        return going

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
            except Exception as exc:  # no connection was ready (Redis unreachable, silent): none of it was sent
                outcomes = [exc] * len(batch)
            finally:
                # settled even when the writer is cancelled (close), so no caller waits out its deadline for it
                self._finish(batch, outcomes)

    def _fail_unsent(self, message: _Message) -> None:
        left = message.deadline - asyncio.get_running_loop().time()
        why = self._why_late(message, message.state)
        self._settle(message, TimeoutError(
            f"not published: its turn came with {max(left, 0):.2f} s of its {self._timeout:g} s left, too little "
            f"to wait for Redis's answer ({why}); it was not sent"))
        message.state = _GONE
        message.payload = b""
        self._release(message)

    def _finish(self, batch: list[_Message], outcomes: list[Exception | None]) -> None:
        self.round_trips += bool(batch)
        for message, outcome in zip(batch, outcomes, strict=True):
            if message.state == _GONE:
                continue  # withdrawn or failed before it was sent: settled, its room back
            self.published += outcome is None
            self._settle(message, outcome)
            message.state = _GONE
            message.payload = b""  # the batch stays referenced while the writer waits for the next one
            self._release(message)

    async def _send(self, batch: list[_Message]) -> list[Exception | None]:
        """One round trip on a connection made ready first; each message's outcome (``None``: Redis took it, else
        Redis's error reply to it, or :class:`OutcomeUnknown` when the connection broke before its reply).

        Raises:
            Exception: no connection was ready (refused, no answer to the handshake, the pool's wait): nothing sent.
        """
        from redis.exceptions import ResponseError

        pool = self._redis.connection_pool
        # connects and handshakes (HELLO, AUTH, SELECT) when needed: a hang or failure here sends nothing
        connection: Any = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            if self._on_ready is not None:
                self._on_ready()
            going = self._mark_sent(batch)
            replies: dict[int, Exception | None] = {}
            try:
                if going:
                    # one write: a lone PUBLISH, or a pipeline of them (no MULTI: each is its own command)
                    await connection.send_packed_command(connection.pack_commands(
                        [("PUBLISH", message.channel, message.payload) for message in going]))
                for message in going:
                    try:
                        await connection.read_response()
                        replies[id(message)] = None
                    except ResponseError as exc:  # Redis's refusal of this command: the others stand
                        replies[id(message)] = exc
            except Exception as exc:
                await connection.disconnect(nowait=True)
                # written (wholly or in part) before the connection broke: Redis may have published any of them
                unknown = OutcomeUnknown(f"outcome unknown: sent, but the connection broke before Redis answered "
                                         f"({type(exc).__name__}: {exc}); it may have been published")
                unknown.__cause__ = exc
                for message in going:
                    replies.setdefault(id(message), unknown)
            return [replies.get(id(message)) for message in batch]
        except BaseException:
            await connection.disconnect(nowait=True)  # cancelled mid round trip (close): its replies are unread
            raise
        finally:
            await pool.release(connection)
