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
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.loss_log import LossLog
from iii.wire import dumps, loads

from ...limits import FIRE_LIMIT
from ...settings import RedisAdapterSettings
from ..base import EngineError
from ..health import Component, component, probe
from .backlog import Backlog
from .settings import PubSubSettings
from .writer import OrderedPublisher

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

log = logging.getLogger(__name__)

_WARN_INTERVAL_S = 10.0
# Messages read from Redis and not yet delivered (see backlog.Backlog): past either bound a message is dropped,
# counted and logged (a message may be as large as a control frame, so the count alone would not bound the memory).
# The reader never stops for them: the replies to SUBSCRIBE, UNSUBSCRIBE and PING come on the same connection.
# Large enough to take what Redis itself held for a subscriber that stopped reading before the reader kept reading
# (its default pubsub output buffer limit: 8 MB for 60 s, 32 MB at most, besides the 16 MiB the engine read ahead),
# so that a burst the engine used to deliver late is not dropped now; each message counts 128 bytes besides its
# payload, so that a flood of small ones is bounded in memory too.
_READ_AHEAD_MESSAGES = 131_072
_READ_AHEAD_BYTES = 48 * 1024 * 1024
_MESSAGE_OVERHEAD = 128
# Pauses between attempts to reach Redis again after the subscriber connection broke: the first retry is quick
# (a killed connection or a restart), later ones back off so an outage costs a connection attempt per 2 s at most
_RECONNECT_FIRST_S = 0.05
_RECONNECT_MAX_S = 2.0
# A subscriber connection made half-open (a NAT or firewall that forgot it, a host gone without a reset) never fails a
# read: every message went elsewhere, with no outage counted or logged. After this long with nothing heard it is
# PINGed, and with nothing heard _PONG_S later it counts as lost (dropped, reconnected, the topics renewed).
_QUIET_S = 10.0
_PONG_S = 5.0
# How long subscribe() waits for Redis to confirm a SUBSCRIBE
_SUBSCRIBE_TIMEOUT_S = 10.0
# How long unsubscribe() waits for its UNSUBSCRIBE to be written (its turn under the lock included)
_UNSUBSCRIBE_WAIT_S = 1.0
# How long a connection attempt, or a command's reply (a PUBLISH), may take: without it a Redis that stalls (accepts
# and never answers) held every publish for good, each holding its caller's call count
_REDIS_TIMEOUT_S = 10.0

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

    async def health(self) -> Component:
        """Whether messages get through now (an ``engine::health::check`` component, see
        :mod:`iii_engine.modules.health`)."""

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

    async def health(self) -> Component:
        """See :class:`PubSubBus`: always healthy (nothing leaves this process)."""
        return component(None, adapter="local")

    async def close(self) -> None:
        """Nothing to release."""


class RedisBus:
    """Redis ``PUBLISH``/``SUBSCRIBE`` bus, wire-compatible with the production RedisAdapter.

    Example:
        >>> bus = RedisBus("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    """

    def __init__(self, redis_url: str) -> None:
        from redis.exceptions import RedisError

        from iii_streams.redis import subscriber_client, waiting_client

        # what a broken or refused connection raises (redis is an optional package: imported here, not above); a
        # publish that waited the whole pool_timeout for a connection raises PoolExhaustedError, an OSError
        self._broken: tuple[type[Exception], ...] = (RedisError, OSError)
        # ... and what a subscribe or publish that ran out of time raises too
        self._no_answer: tuple[type[Exception], ...] = (*self._broken, TimeoutError)
        # A blocking pool (50 connections, or the URL's ?max_connections=): a publish beyond it waits for one (10 s,
        # or ?timeout=); Redis.from_url's pool failed it at once ("Too many connections", 1,901 of 2,000 concurrent
        # publishes).
        self._redis: Redis = waiting_client(redis_url, pool_timeout=_REDIS_TIMEOUT_S, socket_timeout=_REDIS_TIMEOUT_S,
                                            socket_connect_timeout=_REDIS_TIMEOUT_S)
        # The subscriber's connection, held for good, comes from a pool of its own: taken from the publishes' pool,
        # with ?max_connections=1 no publish ever got a connection.
        self._subscriber: Redis = subscriber_client(self._redis)
        self._pubsub: PubSub = self._subscriber.pubsub()
        # This engine's PUBLISHes go through one ordered writer, so they reach Redis in the order publish() was
        # called (a pool of concurrent publishes reordered one worker's void publishes: 44 of 1,000 pairs)
        self._writer = OrderedPublisher(self._redis, timeout=_REDIS_TIMEOUT_S, on_ready=self._redis_reachable)
        self._reader: asyncio.Task[None] | None = None
        # Messages wait for room in the engine (max_fired_calls) in a task of their own, each topic's in order and
        # the topics in turns (see Backlog). The reader never waits for them: SUBSCRIBE confirmations come on the
        # same connection. Before, once 1,024 messages waited it stopped reading: a new subscribe failed after 10 s
        # ("no confirmation") with Redis healthy, and a message for another topic waited behind every one queued.
        self._received = Backlog(max_messages=_READ_AHEAD_MESSAGES, max_bytes=_READ_AHEAD_BYTES,
                                 overhead=_MESSAGE_OVERHEAD)
        self._has_received = asyncio.Event()
        self._delivery: asyncio.Task[None] | None = None
        self._deliver: Deliver | None = None
        # Futures completed when Redis confirms a SUBSCRIBE, so subscribe() returns only once it is live.
        self._confirm: dict[str, list[asyncio.Future[None]]] = {}
        # The topics this engine wants subscribed, and the one lock every SUBSCRIBE and UNSUBSCRIBE is sent under
        # (see _sync): before, several tasks drove redis-py's PubSub at once, each reconnecting it on its own
        # ("read() called while another coroutine is already waiting", "'NoneType' object has no attribute
        # 'writelines'"), and a subscribe that finished after its topic's unsubscribe put it back among the channels
        # redis-py renews at every reconnection: 1 to 4 channels subscribed with no trigger (stall_race.py).
        self._wanted: set[str] = set()
        self._commands = asyncio.Lock()
        # UNSUBSCRIBEs written per topic whose reply has not come yet, on this connection: a ``subscribe`` reply for
        # a topic with one pending answers a SUBSCRIBE sent before it, which it withdrew (see _read)
        self._unsubscribes: dict[str, int] = {}
        # whether the subscriber connection is set up (see start), and the topics whose command waits for that
        self._settled = False
        self._unsynced: set[str] = set()
        self._idle = f"__iii_pubsub_idle:{uuid.uuid4()}"
        self._syncs: set[asyncio.Task[None]] = set()
        self._closing = False
        # set when a publish found Redis reachable: the reader, waiting out its pause after a broken connection,
        # reconnects at once (messages published until it has renewed its SUBSCRIBEs never reach this engine)
        self._reconnect_now = asyncio.Event()
        self._woken = False  # the reconnect pause was cut short by a publish in this outage already
        #: times the subscriber connection broke (messages published while it is down never reach this engine)
        self.connection_losses = 0
        self._lost_at: float | None = None
        #: messages received that reached no subscriber (the engine had no room for them in time, or not JSON)
        self.undelivered = 0
        self._undelivered_log = LossLog(self._log_undelivered, _WARN_INTERVAL_S)
        #: UNSUBSCRIBEs that failed (Redis unreachable): logged rate-limited, a line each flooded an outage's log
        #: (1,266 lines in 10 s of workers re-registering)
        self.unsubscribe_failures = 0
        self._unsubscribe_log = LossLog(self._log_unsubscribe_failures, _WARN_INTERVAL_S)

    async def start(self, deliver: Deliver) -> None:
        """See :class:`PubSubBus`."""
        from iii_streams.redis import check_reachable

        self._deliver = deliver
        # a Redis that is down fails the module's start in one line naming it
        await check_reachable(self._redis, timeout=_REDIS_TIMEOUT_S)
        # A private channel opens the connection so the reader can run before any topic is subscribed.
        await self._pubsub.subscribe(self._idle)
        # a (re)connection is seen from the moment its socket is up (_connecting) until it is set up, the topics
        # renewed (_connected, after redis-py's own callback): SUBSCRIBE/UNSUBSCRIBE wait for the end (see _sync)
        connection: Any = self._pubsub.connection  # opened by the subscribe above
        connection.redis_connect_func = self._connecting
        connection.register_connect_callback(self._connected)
        self._settled = True
        self._reader = asyncio.create_task(self._read(), name="pubsub-redis-reader")
        self._delivery = asyncio.create_task(self._deliver_received(), name="pubsub-redis-delivery")

    async def publish(self, topic: str, data: Any) -> None:
        """See :class:`PubSubBus`.

        Raises:
            EngineError: ``publish_failed`` naming the topic when Redis is unreachable or did not answer in 10 s.
        """
        try:
            # encoded once, here (its size is what the writer's bound counts), and held by the writer alone: it lets
            # the payload go once sent
            await self._writer.publish(topic, dumps(data).encode())
        except self._no_answer as exc:
            # the writer's error says whether the message was sent (it may have been published) or not
            raise EngineError("publish_failed", f"Redis did not confirm the publish to topic {topic!r:.200}: "
                              f"{type(exc).__name__}: {exc}") from None

    async def subscribe(self, topic: str) -> None:
        """See :class:`PubSubBus`.

        Raises:
            EngineError: ``subscribe_failed`` naming the topic when Redis refused the subscription or did not
                confirm it within 10 s.
        """
        timeout = _SUBSCRIBE_TIMEOUT_S
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # wanted and confirmed already (no subscribe of it waiting): this one giving up takes nothing away
        confirmed_before = topic in self._wanted and topic not in self._confirm
        waiters = self._confirm.setdefault(topic, [])
        waiters.append(confirmed)
        self._want(topic, True)
        try:
            # The SUBSCRIBE is sent by a task of its own, so the 10 s count from here, the wait for the lock included
            # (awaited inline, a write stuck under the lock cost 9.5 s before this subscribe's own 10 s: failed at
            # 20.07 s), and close() ends that wait by cancelling the task (it held subscribes ~20 s past close()).
            self._spawn_sync(topic)
            await asyncio.wait_for(confirmed, timeout=timeout)
        except BaseException as exc:
            # No answer in time, or the caller cancelled (a register cancelled while Redis had not confirmed: before,
            # the topic stayed subscribed in Redis with no trigger, renewed at every reconnection)
            if not confirmed_before:
                self._give_up(topic, confirmed)
            if not isinstance(exc, self._no_answer):
                raise
            # the confirmation's own timeout says nothing (the line ended "TimeoutError: ")
            reason = f"no confirmation within {timeout:g} s" \
                if isinstance(exc, TimeoutError) and not str(exc) else f"{type(exc).__name__}: {exc}"
            raise EngineError("subscribe_failed", f"Redis did not subscribe to topic {topic!r:.200}: "
                              f"{reason}") from None
        finally:
            # a confirmation that never came must not keep its future (one per failed subscribe otherwise)
            if confirmed in waiters:
                waiters.remove(confirmed)
            if not waiters and self._confirm.get(topic) is waiters:
                del self._confirm[topic]

    def _give_up(self, topic: str, confirmed: asyncio.Future[None]) -> None:
        """The subscribe waiting on ``confirmed`` ends unconfirmed: its topic is withdrawn unless another subscribe of
        it still waits, or an unsubscribe withdrew it already.

        The SUBSCRIBE may have gone out (a stalled connection): without this, Redis would confirm it later and every
        reconnection would renew it, for a topic this engine no longer wants. A later subscribe still waiting would
        pass on the confirmation it shares, and the UNSUBSCRIBE, sent after its SUBSCRIBE, leave the topic
        unsubscribed for good: that one decides instead.
        """
        if topic in self._wanted and all(waiter is confirmed for waiter in self._confirm.get(topic, ())):
            # not waiting for the UNSUBSCRIBE's turn: this subscribe is over
            self._want(topic, False)
            self._spawn_sync(topic)

    async def unsubscribe(self, topic: str) -> None:
        """See :class:`PubSubBus`. A broken connection is not an error here: the topic has no subscriber left in
        this engine, so what Redis still sends on it is dropped on arrival.

        A subscribe of the topic still waiting for Redis's confirmation fails at once (``subscribe_failed``, saying
        it was withdrawn): its SUBSCRIBE lost with a connection is not renewed now, so it waited its full 10 s and
        then reported a failure though Redis was healthy (8 of 8 rounds of a register, a reconnect, an unregister).
        """
        withdrawn = self._confirm.pop(topic, [])
        for waiter in withdrawn:
            if not waiter.done():
                waiter.set_exception(EngineError("subscribe_failed", f"the subscription to topic {topic!r:.200} "
                                                 "was withdrawn (unsubscribed) before Redis confirmed it"))
                waiter.exception()  # retrieved: its subscribe may end on its own error before it awaits this
        self._want(topic, False)
        # Waits a moment at most for its turn: a write stuck under the lock held it up to redis-py's 10 s socket
        # timeout. The topic is no longer wanted already, so the UNSUBSCRIBE still goes out in its turn (or the
        # reconnection leaves the topic out), and what Redis sends on it meanwhile is dropped here.
        await asyncio.wait({self._spawn_sync(topic)}, timeout=_UNSUBSCRIBE_WAIT_S)

    def _want(self, topic: str, wanted: bool) -> None:
        """Record whether ``topic`` is wanted, in redis-py's ``channels`` too: what it subscribes again when the
        subscriber connection is back. Forgotten at once, not when Redis confirms an UNSUBSCRIBE: one lost with the
        connection had the topic subscribed again at the reconnection, for good."""
        encoder = self._pubsub.encoder
        key = encoder.decode(encoder.encode(topic))
        if wanted:
            self._wanted.add(topic)
            self._pubsub.channels[key] = None
        else:
            self._wanted.discard(topic)
            self._pubsub.channels.pop(key, None)

    async def _sync(self, topic: str) -> None:
        """Send Redis what ``topic`` is wanted as now (SUBSCRIBE or UNSUBSCRIBE), one command at a time.

        Each change of a topic is followed by its own sync, so the last command Redis gets for a topic is what it is
        wanted as. Sent only on a connection that is up, never connecting: the reader alone reconnects, and redis-py
        then subscribes every wanted topic again. An error is logged, never raised (the reader notices a broken
        connection and renews what is wanted).
        """
        if self._closing:
            return
        async with self._commands:
            if self._closing:
                return  # the connection is about to close: nothing to send on it
            wanted = topic in self._wanted
            connection: Any = self._pubsub.connection
            if connection is None or not connection.is_connected:
                return  # down: nothing is subscribed in Redis, and the reconnection subscribes what is wanted
            if not self._settled:
                # being set up: the renewal subscribes what is wanted when it runs, _connected sends the rest
                self._unsynced.add(topic)
                return
            if not wanted:
                self._unsubscribes[topic] = self._unsubscribes.get(topic, 0) + 1  # its reply may beat the write's end
            try:
                await connection.send_packed_command(
                    connection.pack_command("SUBSCRIBE" if wanted else "UNSUBSCRIBE", topic), check_health=False)
            except Exception as exc:  # whatever it is, the connection is dropped and the reader reconnects
                # an outage like any other: counted and logged (before, the reconnection went without a word)
                self._connection_lost(exc)
                if not wanted:
                    self.unsubscribe_failures += 1
                    self._unsubscribe_log.lost("unsubscribe", f"topic {topic!r:.200} ({type(exc).__name__}: {exc})")
                else:
                    log.warning("pubsub: Redis SUBSCRIBE of topic %r not sent (%s: %s); sent again when the "
                                "subscriber connection is back", topic[:200], type(exc).__name__, exc)

    def _confirmed(self, topic: str) -> None:
        """Redis confirmed a SUBSCRIBE: the subscribes waiting for it return; a topic no longer wanted (its
        UNSUBSCRIBE overtaken by a reconnection's renewal) is unsubscribed again."""
        for waiter in self._confirm.pop(topic, []):
            if not waiter.done():
                waiter.set_result(None)
        if topic not in self._wanted and topic != self._idle:
            self._want(topic, False)  # redis-py's renewal lists what it subscribed: not renewed next time
            self._spawn_sync(topic)

    def _spawn_sync(self, topic: str) -> asyncio.Task[None]:
        """:meth:`_sync` in a task close() cancels (tasks take the lock in the order they were created)."""
        task = asyncio.create_task(self._sync(topic), name="pubsub-redis-sync")
        self._syncs.add(task)
        task.add_done_callback(self._syncs.discard)
        return task

    async def health(self) -> Component:
        """See :class:`PubSubBus`: a ``PING`` on a pooled connection, and the subscriber connection up (while it is
        down, messages published reach no subscriber of this engine)."""
        from iii_streams.redis import check_reachable

        details = {"adapter": "redis", "connection_losses": self.connection_losses, "undelivered": self.undelivered,
                   "unsubscribe_failures": self.unsubscribe_failures}
        found = await probe(check_reachable(self._redis, timeout=_REDIS_TIMEOUT_S), **details)
        if found["status"] == "healthy" and self._lost_at is not None:
            down = time.monotonic() - self._lost_at
            return component(f"the subscriber connection is down ({down:.1f} s); messages published meanwhile do "
                             "not reach this engine", **details)
        return found

    async def close(self) -> None:
        """Stop the reader and close both connections."""
        # The flag ends the reader even if the client library swallows the cancellation.
        self._closing = True
        # the subscribes still waiting fail now, not when their 10 s are up (close() returned, they went on ~20 s)
        for waiters in self._confirm.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(EngineError("subscribe_failed", "the pubsub module is stopping"))
                    waiter.exception()  # retrieved: its subscribe may be gone already
        self._confirm.clear()
        await self._writer.close()
        for task in (self._reader, self._delivery, *self._syncs):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # a burst's count still unlogged (its end-of-interval timer belongs to this loop) is logged now
        self._undelivered_log.close()
        self._unsubscribe_log.close()
        await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # PubSub.aclose is typed from redis 8.2 only
        if self._subscriber is not self._redis:
            await self._subscriber.aclose()
        await self._redis.aclose()

    async def _read(self) -> None:
        pause = _RECONNECT_FIRST_S
        loop = asyncio.get_running_loop()
        heard, pinged = loop.time(), False
        while not self._closing:
            quiet = loop.time() - heard
            if quiet > _QUIET_S + _PONG_S:
                self._connection_lost(ConnectionError(f"no reply to PING within {_PONG_S:g} s (a half-open "
                                                      "connection)"), silent_for=quiet)
                connection: Any = self._pubsub.connection
                if connection is not None:
                    await connection.disconnect()  # still up for redis-py: the next read connects afresh
                heard, pinged = loop.time(), False
                continue
            try:
                if quiet > _QUIET_S and not pinged:
                    await self._ping()
                    pinged = True
                # after a broken connection this reconnects and subscribes again to every topic (redis-py); a read
                # ends by the next check of the quiet spell
                due = heard + (_QUIET_S + _PONG_S if pinged else _QUIET_S) - loop.time()
                message = await self._pubsub.get_message(timeout=min(1.0, max(due, 0.01)))
            except self._broken as exc:
                # before: the reader ended here and every later message was lost without a word
                self._connection_lost(exc)
                heard, pinged = loop.time(), False
                # a pause between connection attempts, cut short when a publish finds Redis back: waited out, it let
                # publishes succeed for up to 2 s (its longest) after Redis was back while this engine's subscribers
                # got none of them (107 to 110 at 100 publishes/s after an 8 s outage; 1 with the wake)
                self._reconnect_now.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._reconnect_now.wait()
                pause = min(pause * 2, _RECONNECT_MAX_S)
                continue
            if self._lost_at is not None:
                log.warning("pubsub: Redis subscriber connection back after %.1f s (subscriptions renewed)",
                            time.monotonic() - self._lost_at)
                self._lost_at = None
                self._woken = False
            pause = _RECONNECT_FIRST_S
            if message is None:
                continue
            heard, pinged = loop.time(), False  # anything at all, our PING's pong included, proves it alive
            channel = message["channel"]
            topic = channel.decode() if isinstance(channel, bytes) else str(channel)
            if message["type"] == "unsubscribe":
                if (pending := self._unsubscribes.pop(topic, 0)) > 1:
                    self._unsubscribes[topic] = pending - 1
            elif message["type"] == "subscribe" and topic not in self._unsubscribes:
                # With an UNSUBSCRIBE of the topic still unanswered, this answers a SUBSCRIBE written before it:
                # the topic is unsubscribed again in Redis right after. Taken as the confirmation, a later subscribe
                # returned before Redis had its own SUBSCRIBE, and a message published then reached nobody (20 of
                # 20 with a 30 ms client-to-server delay).
                self._confirmed(topic)
            elif message["type"] == "message":
                raw = message["data"]
                for dropped_topic, dropped in self._received.put(topic, raw):
                    self.undelivered += 1
                    self._undelivered_log.lost("undelivered", f"topic {dropped_topic!r:.200}: dropped, "
                                               f"{len(dropped)} bytes: {self._received.messages} messages "
                                               f"({self._received.bytes} bytes) wait for room in the engine already "
                                               f"(at most {_READ_AHEAD_MESSAGES}, {_READ_AHEAD_BYTES} bytes)")
                self._has_received.set()

    async def _ping(self) -> None:
        """PING the subscriber connection (its pong proves it alive), under the command lock as every write; raises
        TimeoutError when that takes over 5 s."""
        async with asyncio.timeout(_PONG_S):  # the lock's turn, and a send into a full socket buffer, wait too
            async with self._commands:
                connection: Any = self._pubsub.connection
                if self._settled and connection is not None and connection.is_connected:
                    await connection.send_packed_command(connection.pack_command("PING"), check_health=False)

    async def _deliver_received(self) -> None:
        """Deliver what the reader received, one message after another (each waits for room in the engine), the
        topics in turns (see :class:`Backlog`)."""
        received = self._received
        while True:
            item = received.take()
            if item is None:
                self._has_received.clear()
                await self._has_received.wait()
                continue
            topic, raw = item
            if self._deliver is None:
                continue
            try:
                data = loads(raw)
            except ValueError as exc:  # published by something else than an engine: counted, not dropped silently
                self.undelivered += 1
                self._undelivered_log.lost("undelivered", f"topic {topic!r:.200}: not JSON ({exc}): {raw!r:.100}")
                continue
            try:
                await self._deliver(topic, data)
            except Exception as exc:  # one message not delivered must not end the delivery
                self._not_delivered(topic, exc)

    async def _connecting(self, connection: Any) -> None:
        """The subscriber connection's socket is up again: no reply is owed on it yet, and nothing is written on it
        until it is set up (then its usual handshake).

        Run as redis-py's ``redis_connect_func``, before anything can be written on the new socket. The connection
        counts as up from here: before, SUBSCRIBE/UNSUBSCRIBE went out during the handshake's round trips (their
        replies could even be read by the handshake, as RESP3 pushes) and the counts were cleared after them, so a
        subscribe withdrawn then and subscribed again was confirmed by the withdrawn SUBSCRIBE's reply while Redis
        had the topic unsubscribed (a message published then reached 0 subscribers).
        """
        self._settled = False
        self._unsynced.clear()
        self._unsubscribes.clear()
        await connection.on_connect()

    async def _connected(self, connection: Any) -> None:
        """The subscriber connection is set up and redis-py has renewed the wanted topics: commands may go out
        again, and a topic changed after the renewal took its list is sent now."""
        self._settled = True
        for topic in self._unsynced:
            self._spawn_sync(topic)
        self._unsynced.clear()

    def _redis_reachable(self) -> None:
        """A publish has a connection to Redis (handshake answered): a reader pausing between attempts tries now,
        once per outage. Why once: while publishes worked and the subscriber's connection was refused (Redis's
        maxclients reached, an ACL), every publish woke it: 419 attempts in 5 s at 100 publishes/s, 7 with the
        backoff alone."""
        if self._lost_at is not None and not self._woken:
            self._woken = True
            self._reconnect_now.set()

    def _connection_lost(self, exc: Exception, silent_for: float | None = None) -> None:
        """Log the start of an outage once (messages published during it are lost: Redis pub/sub keeps nothing).
        ``silent_for``: the seconds since the connection was last heard from, when it is found dead by its silence
        (a half-open connection): the outage began then, not when the silence was noticed, and the lines say so.
        (Before, 15 s of messages published before the warning were in neither line: 300-500 of them.)"""
        if self._lost_at is None:
            self._lost_at = time.monotonic() - (silent_for or 0.0)
            self.connection_losses += 1
            what = "messages published" if silent_for is None else (
                f"nothing heard from it for {silent_for:.1f} s: messages published since then and")
            log.warning("pubsub: Redis subscriber connection lost (%s: %s); reconnecting; %s until it is back do not "
                        "reach this engine", type(exc).__name__, exc, what)

    def _not_delivered(self, topic: str, exc: Exception) -> None:
        """Count a message that reached no subscriber; warn the first time, then at most every 10 s with the count
        since the last warning, a burst's count at its end (not about ``fire_limit``: the engine's
        max_fired_calls bound logs those itself, rate-limited)."""
        self.undelivered += 1
        if isinstance(exc, EngineError) and exc.code == FIRE_LIMIT:
            return
        self._undelivered_log.lost("undelivered", f"topic {topic!r:.200}: {exc}")

    def _log_undelivered(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = f"; latest on {latest}" if latest is not None else ""
        log.warning("%d pubsub messages from Redis not delivered (%d in all)%s", counts["undelivered"],
                    self.undelivered, latest_text)

    def _log_unsubscribe_failures(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = f"; latest of {latest}" if latest is not None else ""
        log.warning("pubsub: %d Redis UNSUBSCRIBEs failed (%d in all)%s; their topics' messages are dropped here",
                    counts["unsubscribe"], self.unsubscribe_failures, latest_text)


def open_bus(settings: PubSubSettings) -> PubSubBus:
    """The bus the settings' ``adapter`` names."""
    adapter = settings.bus_adapter[1]
    if isinstance(adapter, RedisAdapterSettings):
        return RedisBus(adapter.redis_url)
    return LocalBus()
