"""One worker connection from this engine (the "front") to a remote engine, for the bridge module and adapters.

The front is an ordinary worker of the remote: each :class:`BridgeLink` is one ``iii`` SDK client (its own thread
and event loop) that reconnects every 2 s forever and replays its registrations (functions, triggers, services)
after every reconnect. Creating a link never waits, so the front starts while the remote is still down.

Ours, where production queues without bound and lets late writes run on the remote: a call made while the link is
down waits at most ``connect_grace_s`` (2 s) for it to come up, then fails with :class:`BridgeCallError` naming the
remote URL; a call that was queued and timed out is dropped before it is ever sent (the SDK only flushes frames
whose caller still waits), so a write that failed never executes later. A void call (:meth:`BridgeLink.fire`) is
sent at most once, on the connection up when it is made, or fails "not sent"; it is never kept for the next
connection. The SDK's outbox is bounded by its ``MAX_QUEUE_SIZE``.

A remote that stops answering without closing its socket (a stopped or hung process) is found by a WebSocket ping
while calls are pending: one every ``ping_interval_s`` (1 s), and a pong not back within ``ping_timeout_s`` (5 s)
drops the connection, which the SDK then makes again, unless the remote showed life meanwhile: bytes came from it
(its pong waits behind an answer it is still sending over a slow link) or it acknowledged bytes of ours on their way
to it (it reads a big frame of ours slowly); each further ``ping_timeout_s`` without a pong needs that again (the
kernel's TCP_INFO counters on Linux; elsewhere only our unacknowledged bytes going down count). Calls written to
the dropped connection fail at once, saying they may have run there (their frames reached the remote); calls not
yet written fail after ``connect_grace_s`` saying they were not sent. Before, such a remote held every bridged call
for its whole timeout (30 s for the stores) and the connection stayed "connected" until websockets' own keepalive
gave up, 20 to 40 s after the stop.

"Not sent" is decided on the SDK client's own loop, where frames are written: in one step there, with no socket
up, the calls still queued are taken out of its queue (never written later); while a socket is up the calls wait on.

Example:
    >>> link = BridgeLink("ws://127.0.0.1:1", role="docs")
    >>> link.url, link.connected
    ('ws://127.0.0.1:1', False)
    >>> BridgeLink("http://x", role="docs")
    Traceback (most recent call last):
    ...
    ValueError: engine URL 'http://x' has scheme 'http'; expected ws:// or wss://
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import struct
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

import iii.ws_imports  # isort: skip - websockets loads whole there, under one lock (see there)
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii._cli import mask_passwords
from iii.connection import Connection, check_url
from iii.errors import ConnectionLostError, InvocationError, OutboundQueueFullError, ShuttingDownError
from iii.iii import III
from iii.iii_constants import InitOptions, ReconnectionConfig
from iii.iii_types import TriggerActionEnqueue
from iii.protocol.worker_session import clip_text
from iii.telemetry_types import OtelConfig
from iii.triggers import Trigger

from ...own_listener import refuse_own_listener
from ...send_queue import unsent

__all__ = ["DEFAULT_TIMEOUT_MS", "MAY_HAVE_RUN", "NOT_SENT", "RETRY_INTERVAL_MS", "BridgeCallError", "BridgeLink"]

log = logging.getLogger(__name__)

RETRY_INTERVAL_MS: Final = 2000  # production's fixed pause between connection attempts
DEFAULT_TIMEOUT_MS: Final = 30_000
REMOTE_ERROR_CHARS: Final = 2000  # of a remote's error message kept in a bridged call's error
# how often the link's watcher looks whether it is still up, while calls are pending
_LINK_CHECK_S: Final = 0.1
DEFAULT_CONNECT_GRACE_S: Final = 2.0
DEFAULT_PING_INTERVAL_S: Final = 1.0
# long enough for a busy remote whose event loop is held a few seconds; a pong later than this cuts the connection
DEFAULT_PING_TIMEOUT_S: Final = 5.0
_RETRY: Final = ReconnectionConfig(initial_delay_ms=RETRY_INTERVAL_MS, max_delay_ms=RETRY_INTERVAL_MS,
                                   backoff_multiplier=1.0, jitter_factor=0.0, max_retries=-1)

Handler = Callable[[Any], Coroutine[Any, Any, Any]]
# the ends of a failed call's error: whether the remote may have applied it
MAY_HAVE_RUN: Final = "it was sent and may have been applied there (its answer never came)"
NOT_SENT: Final = "it was not sent, nothing was applied"


class BridgeCallError(RuntimeError):
    """A call through the bridge failed; ``str()`` is the reason (it names the remote URL when unreachable).

    ``code`` / ``message`` / ``stacktrace`` are the remote's error body when the remote answered with an error.

    Example:
        >>> str(BridgeCallError("remote error (x): y", code="x", message="y"))
        'remote error (x): y'
    """

    def __init__(self, text: str, *, code: str | None = None, message: str | None = None,
                 stacktrace: str | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.message = message
        self.stacktrace = stacktrace


class BridgeLink:
    """A reconnecting worker connection to the remote engine at ``url``; ``role`` names it in logs and metadata."""

    def __init__(self, url: str, *, role: str, connect_grace_s: float = DEFAULT_CONNECT_GRACE_S,
                 ping_interval_s: float = DEFAULT_PING_INTERVAL_S,
                 ping_timeout_s: float = DEFAULT_PING_TIMEOUT_S) -> None:
        self.url = check_url(url)
        self.shown = mask_passwords(self.url)  # in messages and logs: a password in it (user:pw@, ?password=) masked
        self.role = role
        self.connect_grace_s = connect_grace_s
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        # the keepalive probe in flight (one per link, on the SDK client's loop) and when the last one started
        self._probe: concurrent.futures.Future[None] | None = None
        self._probed_at = float("-inf")
        # why the keepalive dropped the last connection, until a pong comes again: named in the calls' errors
        self.silence: str | None = None
        self._forget_silence: Callable[[], None] | None = None  # removes _heard_again from the client
        self._client: III | None = None
        self._closed_client: III | None = None  # the client of the last close (a close under way included)
        # One watcher per link and event loop looks at the connection while calls are pending, not one poll per
        # call (1,000 pending calls were 10,000 wake-ups a second); it resolves the current outage future once the
        # link has been down for connect_grace_s, which fails every call that was pending then. Per loop: a future
        # or task serves only its own loop, and a loop that ended (an engine stopped, asyncio.run over) must not
        # leave one behind for the calls of the next.
        self._watches: dict[asyncio.AbstractEventLoop, _LoopWatch] = {}

    def start(self) -> None:
        """Start connecting in the background; returns at once (idempotent).

        Raises:
            ConfigError: started during an engine's start, ``url`` reaches that engine's own worker port (see
                :mod:`iii_engine.own_listener`).
        """
        if self._client is None:
            refuse_own_listener(self.url, f"the {self.role} bridge's URL")
            options = InitOptions(worker_name=f"iii-engine bridge ({self.role})", enable_metrics_reporting=False,
                                  reconnection_config=_RETRY, otel=OtelConfig(enabled=False))
            self._client = III(self.url, options)
            # a new connection is up: the silence that dropped the last one no longer explains anything
            self._forget_silence = self._client.on_registrations_ready(self._heard_again)
            log.info("bridge %s: connecting to %s (retry every %d ms)", self.role, self.shown, RETRY_INTERVAL_MS)

    def _heard_again(self) -> None:
        self.silence = None

    @property
    def connected(self) -> bool:
        """Whether the connection to the remote is up right now."""
        return self._client is not None and self._client.get_connection_state() == "connected"

    def _running(self) -> III:
        if self._client is None:
            raise BridgeCallError(f"bridge to remote engine {self.shown} is not started")
        return self._client

    async def _up(self) -> III:
        """The client once connected; at most ``connect_grace_s`` of waiting, then a clear error."""
        client = self._running()
        if client.get_connection_state() == "connected":
            return client
        try:
            await client.wait_until_connected_async(self.connect_grace_s)
        except ShuttingDownError:
            raise BridgeCallError(f"bridge to remote engine {self.shown} is shut down") from None
        except ConnectionError as exc:
            raise BridgeCallError(f"remote engine {self.shown} unreachable ({exc}){self._silent()}; "
                                  f"{NOT_SENT}") from None
        return client

    def _silent(self) -> str:
        return "" if self.silence is None else f" ({self.silence})"

    async def call(self, function_id: str, data: Any, *, timeout_ms: int | None = None,
                   action: TriggerActionEnqueue | None = None, baggage: str | None = None) -> Any:
        """Invoke ``function_id`` on the remote and return its result (``None`` when it has none); ``baggage`` (a
        W3C ``baggage`` header) travels with the call, for the remote's built-ins to read.

        Raises :class:`BridgeCallError` when the remote is unreachable, the call times out (default 30 s), the
        connection drops during the call (a remote that answers no ping within ``ping_timeout_s`` has its
        connection dropped), or the remote answers with an error. Unreachable: the call never left and never runs
        later (the error says nothing was applied); dropped during the call, or timed out: the remote may have run
        it (the error says so).
        """
        client = await self._up()
        wait_ms = timeout_ms or DEFAULT_TIMEOUT_MS
        try:
            return await self._unless_lost(client, _trigger(
                client, {"function_id": function_id, "payload": data, "timeout_ms": wait_ms, "action": action},
                baggage), function_id)
        except TimeoutError:
            # (a call still queued unwritten at its timeout is dropped unsent; which one it was is not known here)
            raise BridgeCallError(f"invocation timed out after {wait_ms} ms (remote engine {self.shown}, "
                                  f"function {function_id}){self._silent()}; {MAY_HAVE_RUN}") from None
        except OutboundQueueFullError as exc:  # a ConnectionLostError too, but the connection may be fine
            raise BridgeCallError(self._not_sent(function_id, exc)) from None
        except ConnectionLostError:
            # the SDK fails only calls already written to the socket so: the remote may have run it (a caller who
            # read "lost" as "not done" and retried ran a write, or an enqueue, twice)
            raise BridgeCallError(f"connection to remote engine {self.shown} lost during the call of {function_id}"
                                  f"{self._silent()}; {MAY_HAVE_RUN}") from None
        except InvocationError as exc:
            # cut: engines bridged in a loop wrap the error again at each hop (a self-bridged engine's one call
            # came back 10,000 deep, its cost growing with the square of the depth: 6 GB)
            raise BridgeCallError(f"remote error ({clip_text(exc.code, 200)}): "
                                  f"{clip_text(exc.message, REMOTE_ERROR_CHARS)}",
                                  code=exc.code, message=exc.message, stacktrace=exc.stacktrace) from None
        except ShuttingDownError:
            raise BridgeCallError(f"bridge to remote engine {self.shown} is shut down") from None

    async def _unless_lost(self, client: III, request: Coroutine[Any, Any, Any], function_id: str) -> Any:
        """Await ``request``; if the link drops while it is pending and is not back within the connect grace,
        give up with a clear error. A call that never left the client's queue would otherwise wait for the
        remote's return (or its own timeout); giving up drops it, so it can never run on the remote later."""
        call = asyncio.ensure_future(request)
        watch, outage = self._watch()
        try:
            await asyncio.wait({call, outage}, return_when=asyncio.FIRST_COMPLETED)
            if call.done():
                return call.result()
            raise BridgeCallError(f"remote engine {self.shown} unreachable (the connection dropped during the call of "
                                  f"{function_id}){self._silent()}; {NOT_SENT}")
        finally:
            watch.pending -= 1
            if not call.done():
                call.cancel()
            elif not call.cancelled():
                # (an outcome come with the outage, or with this wait's cancel, is read: not "never retrieved")
                call.exception()

    @property
    def _pending_calls(self) -> int:
        """Calls waiting on the remote, on all loops."""
        return sum(watch.pending for watch in list(self._watches.values()))

    def _watch(self) -> tuple[_LoopWatch, asyncio.Future[None]]:
        """Count one more pending call on this loop and hand it this loop's current outage future (the loop's
        watcher runs while any is)."""
        loop = asyncio.get_running_loop()
        watch = self._watches.get(loop)
        if watch is None:
            for closed in [other for other in self._watches if other.is_closed()]:  # closed with its tasks pending
                self._watches.pop(closed, None)
            watch = self._watches[loop] = _LoopWatch()
        if watch.outage is None or watch.outage.done():
            watch.outage = loop.create_future()
        watch.pending += 1
        if watch.watcher is None or watch.watcher.done():
            watch.watcher = loop.create_task(self._watch_link(loop, watch))
        return watch, watch.outage

    async def _watch_link(self, loop: asyncio.AbstractEventLoop, watch: _LoopWatch) -> None:
        lost_since: float | None = None
        try:
            while watch.pending > 0:
                await asyncio.sleep(_LINK_CHECK_S)
                if self.connected:
                    lost_since = None
                    self._keepalive(loop)
                elif lost_since is None:
                    lost_since = loop.time()
                elif loop.time() - lost_since >= self.connect_grace_s:
                    lost_since = None
                    outage, watch.outage = watch.outage, None  # (calls from now on join a new one)
                    if outage is None or outage.done():
                        continue
                    # One turn: each call that joined this outage had its first step (the hand-over of its frame to
                    # the client's loop) scheduled before this; after the turn, all those hand-overs are posted to
                    # the client's loop ahead of the look below (both loops run their callbacks first come first).
                    await asyncio.sleep(0)
                    if await self._queued_calls_taken():
                        outage.set_result(None)
                    else:  # a socket is up again: its flush may write them; they wait on, in the next outage
                        _rejoin(watch, outage)
        finally:
            # no await between the last look at the count and this: a call of this loop cannot slip in between
            if self._watches.get(loop) is watch:
                del self._watches[loop]

    async def _queued_calls_taken(self) -> bool:
        """Decide on the client's own loop, where frames are written, whether the calls pending now were not sent:
        True when no socket is up there, and then every call still queued for one is taken out of its queue in the
        same step (never written, to any socket); the calls written to the lost socket were failed already, when it
        was lost. False while a socket is up (its flush may be writing them), or when the client's loop does not
        answer within ``connect_grace_s`` (held: the next check looks again; each call's timeout bounds it).

        Why on that loop: the link's grace (2 s) is the SDK's reconnect pause (2 s), so a verdict made on this
        loop and a flush of the queued frames on a connection made meanwhile could land within milliseconds of each
        other; a call told "not sent" could have been written."""
        client = self._client
        if client is None:
            return True  # closed: nothing is written any more
        conn, client_loop = _sdk_connection(client), _sdk_loop(client)
        if conn is None or client_loop is None:
            return not self.connected  # (an SDK whose insides are not known here: this loop's look, not exact)
        looked: concurrent.futures.Future[bool] = concurrent.futures.Future()

        def look() -> None:
            if looked.set_running_or_notify_cancel():
                looked.set_result(conn.take_queued_calls() is not None)

        try:
            client_loop.call_soon_threadsafe(look)
        except RuntimeError:
            return True  # the client's loop is closed: it writes nothing any more
        try:
            return await asyncio.wait_for(asyncio.wrap_future(looked), self.connect_grace_s)
        except TimeoutError:
            return False

    def _keepalive(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start a ping of the remote unless one is in flight or the last started under ``ping_interval_s`` ago."""
        client = self._client
        if not isinstance(client, III) or (self._probe is not None and not self._probe.done()):
            return  # (not a client with a socket: a stand-in of the unit tests)
        now = time.monotonic()  # (one clock for the watchers of every loop)
        if now - self._probed_at < self.ping_interval_s:
            return
        self._probed_at = now
        # the socket lives on the SDK client's own loop; the SDK has no keepalive setting of its own (websockets'
        # default, 20 s + 20 s, is all it has), so the link pings through its connection
        client_loop = _sdk_loop(client)
        if client_loop is None:
            return
        ping = self._ping(client)
        try:
            self._probe = asyncio.run_coroutine_threadsafe(ping, client_loop)
        except RuntimeError:  # the client's loop is closed: the link is closing
            ping.close()

    async def _ping(self, client: III) -> None:
        """On the client's loop: ping its socket; no pong within ``ping_timeout_s`` drops the connection, unless
        the socket made progress meanwhile: bytes came from the remote (its pong waits behind an answer it is
        still sending over a slow link) or the remote acknowledged bytes of ours (it is reading a big frame of
        ours, and its pong comes after). Each further ``ping_timeout_s`` without a pong needs progress again, so
        a remote that stopped with megabytes of ours unacknowledged is found one or two timeouts later."""
        ws = _sdk_socket(client)
        if ws is None:
            return

        async def round_trip() -> None:
            pong = await ws.ping()  # (its sending, too, may wait behind our bytes)
            await pong

        answered = asyncio.ensure_future(round_trip())
        answered.add_done_callback(lambda task: task.cancelled() or task.exception())  # (read: never "unretrieved")
        seen = _progress(ws)
        try:
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(answered), self.ping_timeout_s)
                    break
                except TimeoutError:
                    if _sdk_socket(client) is not ws:
                        return  # replaced meanwhile: that socket is gone already
                    now = _progress(ws)
                    if not now.beyond(seen):
                        raise
                    seen = now
        except TimeoutError:
            if _sdk_socket(client) is not ws:
                return
            self.silence = f"it answered no ping within {self.ping_timeout_s:g} s: stopped or hung"
            log.warning("bridge %s: remote engine %s answered no ping within %g s and took or sent no byte "
                        "meanwhile (stopped or hung); dropping the connection and connecting again", self.role,
                        self.shown, self.ping_timeout_s)
            ws.transport.abort()  # the SDK sees the loss, fails the calls written to it and reconnects
        except ConnectionClosed:
            pass
        else:
            self.silence = None
        finally:
            answered.cancel()

    async def round_trip(self) -> None:
        """Return once the remote engine answered the link's keepalive ping (the health check's probe): being
        connected says nothing of a remote that stopped without closing its socket, and an idle link pings nobody
        (a stopped remote was ``healthy`` for 50 s). The ping is the keepalive's own: one in flight is awaited, one
        answered under ``ping_interval_s`` ago stands, else one is started as the keepalive would (a ping of the
        health check's own was bytes the stopped remote's kernel acknowledged, which the keepalive took for life:
        with checks every 0.05 s a call waited past 15 s). :class:`ConnectionError` when no socket is up or the
        ping went unanswered; the caller bounds the wait (cancelling it leaves the ping to the keepalive)."""
        client = self._client
        if not self.connected:
            raise ConnectionError(f"not connected{self._silent()}")
        if not isinstance(client, III):  # a stand-in of the unit tests: its state is all there is
            return
        probe = self._probe
        if probe is None or (probe.done() and time.monotonic() - self._probed_at >= self.ping_interval_s):
            loop = _sdk_loop(client)
            if loop is None:
                return  # an SDK whose insides are not known here: pinged by nobody, as the keepalive does
            self._probed_at = time.monotonic()
            ping = self._ping(client)
            try:
                probe = self._probe = asyncio.run_coroutine_threadsafe(ping, loop)
            except RuntimeError:  # the client's loop is closed: the link is closing
                ping.close()
                raise ConnectionError("the link is closing") from None
        await asyncio.shield(asyncio.wrap_future(probe))
        if not self.connected or self.silence is not None:
            raise ConnectionError(f"not connected{self._silent()}")

    async def fire(self, function_id: str, data: Any) -> None:
        """Invoke ``function_id`` on the remote without waiting for a result (action ``void``).

        At most once, on the connection that is up when it is made: a link that is down is waited for at most
        ``connect_grace_s``; the call then waits its turn behind the frames already queued for that connection
        and returns once written to it (once the socket takes it at once: it never waits in the client's own
        buffer). A connection that drops before that (a drop racing the call, or a remote that took nothing for the
        SDK's ``send_timeout``, 30 s) fails the call with :class:`BridgeCallError` "not sent", and it is never kept
        for the next connection, so a caller who retries cannot make it run twice. Written to the socket counts
        as sent: a connection that dies with it in flight may lose it, as with any fire-and-forget message.
        """
        client = await self._up()
        try:
            # (the SDK's trigger would have queued it for the next connection, to run there however much later)
            sent = await client.trigger_once_async({"function_id": function_id, "payload": data})
        except ShuttingDownError:
            raise BridgeCallError(f"bridge to remote engine {self.shown} is shut down") from None
        except InvocationError as exc:  # not sent: the outbound queue is full, or the call is over the size limit
            raise BridgeCallError(self._not_sent(function_id, exc)) from None
        if not sent:
            raise BridgeCallError(f"call of {function_id} not sent to remote engine {self.shown}: the connection "
                                  "dropped before it was written (it is not sent later)")

    def _not_sent(self, function_id: str, exc: InvocationError) -> str:
        return f"call of {function_id} not sent to remote engine {self.shown}: {exc.message}"

    def register_function(self, function_id: str, handler: Handler) -> Callable[[], None]:
        """Offer ``function_id`` to the remote; ``handler`` runs on the caller's (the engine's) event loop.

        Returns the callable that withdraws it."""
        client = self._running()
        engine_loop = asyncio.get_running_loop()

        async def on_link_loop(data: Any) -> Any:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(handler(data), engine_loop))

        return client.register_function({"id": function_id}, on_link_loop).unregister

    def on_ready(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` on the caller's (the engine's) event loop each time a connection to the remote is up
        and this link's registrations are in place there (the SDK's ``on_registrations_ready``): after every
        reconnect, once those the remote's cleanup of the old connection deleted were sent again, and after the first
        connection unless that one came before this call. What the remote sent meanwhile (a pub/sub message) never
        reached this engine; a remote that restarted may hold other data altogether. Returns the callable that
        stops it."""
        engine_loop = asyncio.get_running_loop()

        def ready() -> None:  # on one of the link's handler threads
            with contextlib.suppress(RuntimeError):  # the engine's loop is closed: nobody left to tell
                engine_loop.call_soon_threadsafe(callback)

        return self._running().on_registrations_ready(ready)

    def register_trigger(self, trigger_type: str, function_id: str, config: Any) -> Trigger:
        """Bind a remote trigger to a function of this link; re-sent after every reconnect."""
        return self._running().register_trigger({"type": trigger_type, "function_id": function_id,
                                                 "config": config})

    def register_service(self, service_id: str, name: str) -> None:
        """Announce a service on the remote (re-sent after every reconnect)."""
        self._running().register_service({"id": service_id, "name": name})

    async def close(self) -> None:
        """Disconnect and stop the link's thread (idempotent: a call while a close is under way returns once the
        link's thread has ended)."""
        # The client stays known after its close: a second close waits on its shutdown (which waits for the one
        # under way) instead of returning while the first still disconnects.
        client = self._client or self._closed_client
        self._client, self._closed_client = None, client
        watches = list(self._watches.values())
        current = asyncio.get_running_loop()
        for watch in watches:
            if watch.watcher is None:
                continue
            if watch.watcher.get_loop() is current:
                watch.watcher.cancel()
            else:  # a task is cancelled on its own loop's thread; a loop that is closed has none to cancel
                with contextlib.suppress(RuntimeError):
                    watch.watcher.get_loop().call_soon_threadsafe(watch.watcher.cancel)
        if self._probe is not None:
            self._probe.cancel()
        forget, self._forget_silence = self._forget_silence, None
        if forget is not None:
            forget()
        if client is not None:
            await client.shutdown_async()  # its loop thread joined too, this loop never blocked on it


def _trigger(client: III, request: dict[str, Any], baggage: str | None) -> Coroutine[Any, Any, Any]:
    """``client.trigger_async(request)``, with ``baggage`` on the call's frame when given.

    Why not ``trigger_async`` then: the SDK puts on a call only the baggage of the calling thread's OpenTelemetry
    context, which is empty here (and OpenTelemetry is optional); its ``_call``, on its own loop, takes the headers
    given. A cancelled wait cancels that call there, which forgets it as ``trigger_async`` does (its frame, still
    queued, is never sent). A client without those insides (a stand-in of the unit tests) gets the plain call."""
    loop = _sdk_loop(client)
    if baggage is None or not isinstance(client, III) or loop is None:
        return client.trigger_async(request)
    return _on_loop(client._call(request["function_id"], request["payload"], request["action"],
                                 request["timeout_ms"], (None, baggage)), loop, client, request)


async def _on_loop(call: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop, client: III,
                   request: dict[str, Any]) -> Any:
    try:
        running = asyncio.run_coroutine_threadsafe(call, loop)
    except RuntimeError:  # the client's loop is closed: its plain call says why (shut down)
        call.close()
        return await client.trigger_async(request)
    return await asyncio.wrap_future(running)


def _sdk_loop(client: III) -> asyncio.AbstractEventLoop | None:
    """The SDK client's own event loop, where its socket lives (``None``: an SDK without one known here, and the
    link pings nothing; websockets' own keepalive is left). With :func:`_sdk_connection` (whose public methods it
    then uses) and :func:`_sdk_socket`, the link's only reach into the SDK's insides: it has no public accessor for
    them."""
    loop = getattr(client, "_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


def _sdk_connection(client: III) -> Connection | None:
    """The SDK client's connection (``None``: an SDK whose insides are not the ones known here)."""
    conn = getattr(client, "_conn", None)
    return conn if isinstance(conn, Connection) else None


def _sdk_socket(client: III) -> ClientConnection | None:
    """The SDK client's socket now (``None``: none up, or an SDK whose insides are not the ones known here)."""
    ws = getattr(_sdk_connection(client), "_ws", None)
    return ws if isinstance(ws, ClientConnection) else None


def _rejoin(watch: _LoopWatch, outage: asyncio.Future[None]) -> None:
    """Calls of ``outage`` wait on: the next outage of ``watch`` ends them too."""
    if watch.outage is None or watch.outage.done():
        watch.outage = outage
    else:
        watch.outage.add_done_callback(lambda _: _end(outage))


def _end(outage: asyncio.Future[None]) -> None:
    if not outage.done():
        outage.set_result(None)


@dataclass(frozen=True, slots=True)
class _Progress:
    """What a socket has done so far: bytes of ours its remote acknowledged (``acked``) and bytes it sent us
    (``received``), from the kernel's TCP_INFO (``None`` where that is not known), and bytes of ours unacknowledged
    now (``unacked``, :func:`~iii_engine.send_queue.unsent`).

    Example:
        >>> _Progress(1, 10, 0).beyond(_Progress(1, 9, 0))  # bytes came from the remote
        True
        >>> _Progress(9, 1, 5).beyond(_Progress(5, 1, 9)), _Progress(9, 1, 0).beyond(_Progress(8, 1, 0))
        (True, False)
        >>> _Progress(None, None, 5).beyond(_Progress(None, None, 8))  # no kernel counters: fewer unacknowledged
        True
    """

    acked: int | None
    received: int | None
    unacked: int

    def beyond(self, before: _Progress) -> bool:
        """Whether the remote showed life since ``before``: it sent us bytes, or it acknowledged bytes of ours while
        some were on their way to it (the ping behind them). Bytes acknowledged with none of ours outstanding, the
        ping's own for one, prove only its kernel alive: a stopped process's kernel takes small frames all the same.
        Without the kernel's counters, fewer of our bytes unacknowledged (received bytes are not seen then)."""
        if self.received is not None and before.received is not None and self.received > before.received:
            return True
        if self.acked is not None and before.acked is not None:
            return self.acked > before.acked and (self.unacked > 0 or before.unacked > 0)
        return self.unacked < before.unacked


def _progress(ws: ClientConnection) -> _Progress:
    sock = ws.transport.get_extra_info("socket")
    acked, received = _tcp_counts(sock)
    return _Progress(acked, received, unsent(ws.transport))


# struct tcp_info (linux/tcp.h, Linux >= 4.1): tcpi_bytes_acked and tcpi_bytes_received, two u64 from byte 120
_TCP_INFO: Final = getattr(socket, "TCP_INFO", None) if sys.platform.startswith("linux") else None
_TCP_INFO_BYTES: Final = struct.Struct("=QQ")
_TCP_INFO_AT: Final = 120


def _tcp_counts(sock: Any) -> tuple[int | None, int | None]:
    """Bytes of ours ``sock``'s peer acknowledged and bytes it sent us, per the kernel; ``(None, None)`` where the
    kernel does not tell (not Linux, a kernel before 4.1, a closed socket)."""
    if _TCP_INFO is None or sock is None:
        return None, None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    except (OSError, ValueError):
        return None, None
    if len(info) < _TCP_INFO_AT + _TCP_INFO_BYTES.size:
        return None, None
    acked, received = _TCP_INFO_BYTES.unpack_from(info, _TCP_INFO_AT)
    return int(acked), int(received)


@dataclass(eq=False)
class _LoopWatch:
    """One event loop's calls pending on the link, the future their outage resolves, the task that watches."""

    pending: int = 0
    outage: asyncio.Future[None] | None = None
    watcher: asyncio.Task[None] | None = None

