"""The engine's one WebSocket listener: ``/`` is the worker control socket, ``/ws/channels/{id}`` the channel
relay, anything else HTTP 404 (docs/protocol.md#endpoints, docs/protocol.md#channels).

Example:
    >>> route_request("/ws/channels/abc?key=k&dir=read")
    ChannelRoute(channel_id='abc', key='k', direction='read')
    >>> route_request("/ws/channels/abc?dir=sideways")
    (400, 'Bad Request: channel upgrade needs key= and dir=read|write\\n')
    >>> route_request("/ws/channels/abc?key=k&key=k2&dir=read")
    (400, 'Bad Request: channel upgrade takes key= and dir= once each\\n')
    >>> route_request("/metrics")
    (404, 'Not Found\\n')
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast
from urllib.parse import parse_qs

import iii.ws_imports  # isort: skip - websockets loads whole there, under one lock (see there)
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.protocol import State

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.channel_end import FRAME_SIZE_HEADER, INVITED_FRAME_SIZES
from iii.connection import MAX_MESSAGE_SIZE_HEADER
from iii.loss_log import LossLog, latest_tail
from iii.ws_fastpath import bound_frame_queue, enable_fast_receive, reset, server_factory, set_max_message_size

from .accept_gate import AcceptGate
from .allocator import MMAP_THRESHOLD_BYTES
from .channels import CHANNEL_SOCKET_QUEUE, SOCKET_QUEUE_BYTES, ChannelRelay, SocketSlot
from .closing import CLOSE_TIMEOUT_S, close_within
from .fd_limits import open_file_limit, open_files_share
from .handshakes import BAD_TARGET, NotUpgraded, quiet_logger, request_target
from .keepalive import keep_alive
from .limits import SKIP_LOG_INTERVAL_S

log = logging.getLogger(__name__)

_CHANNEL_PREFIX = "/ws/channels/"


@dataclass(frozen=True)
class ChannelRoute:
    """A well-formed channel upgrade request."""

    channel_id: str
    key: str
    direction: str


Route = None | ChannelRoute | tuple[int, str]

FRAME_INVITATION: Final = min(INVITED_FRAME_SIZES[1], MMAP_THRESHOLD_BYTES - 64 * 1024)
"""The largest binary frame the engine invites a channel writer to send (:data:`iii.channel_end.FRAME_SIZE_HEADER`,
docs/protocol.md#frame-size-extension), unless its ``max_message_size`` is smaller: 1 MiB, what every reader
accepts, while a frame's buffers (its payload, the frame being received) stay under the engine's mmap threshold
(:data:`iii_engine.allocator.MMAP_THRESHOLD_BYTES`); over it, glibc maps and unmaps each one, ~0.5 ms of page
faults per frame. A writer's 1 MiB writes then cross the relay as one frame each, not two (960 KiB and 64 KiB):
the relay's user-space instructions per byte fell 17 % (issue 10)."""


def frame_invitation(max_message_size: int) -> int:
    """The :data:`~iii.channel_end.FRAME_SIZE_HEADER` value for a relay taking messages of ``max_message_size``.

    Example:
        >>> frame_invitation(64 << 20), frame_invitation(100_000)
        (1048576, 100000)
    """
    return min(max_message_size, FRAME_INVITATION)


def route_request(target: str) -> Route:
    """``None`` for the control socket, a :class:`ChannelRoute`, or ``(status, body)`` to refuse with."""
    parts = request_target(target)
    if parts is None:
        return BAD_TARGET
    if parts.path == "/":
        return None
    if parts.path.startswith(_CHANNEL_PREFIX):
        channel_id = parts.path[len(_CHANNEL_PREFIX):]
        query = parse_qs(parts.query, keep_blank_values=True)  # a blank duplicate is a duplicate too
        keys, directions = query.get("key", []), query.get("dir", [])
        key = keys[-1] if keys else None
        direction = directions[-1] if directions else None
        if channel_id and "/" not in channel_id:
            if len(keys) > 1 or len(directions) > 1:
                # Which one counts is a guess a proxy or another server may make differently (last wins here).
                return (400, "Bad Request: channel upgrade takes key= and dir= once each\n")
            if key is None or direction not in ("read", "write"):
                return (400, "Bad Request: channel upgrade needs key= and dir=read|write\n")
            return ChannelRoute(channel_id, key, direction)
    return (404, "Not Found\n")


def url_host(host: str) -> str:
    """``host`` (a listener's bind address) as the host part of a URL that reaches it: a wildcard bind is reached
    through loopback, and an IPv6 address goes in brackets (``http://::1:8080`` has no port a URL parser can read).

    Example:
        >>> url_host("0.0.0.0"), url_host(""), url_host("::"), url_host("::1"), url_host("[::1]"), url_host("h.example")
        ('127.0.0.1', '127.0.0.1', '[::1]', '[::1]', '[::1]', 'h.example')
    """
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, host)
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class BoundPort:
    """The port a websockets server bound, from its start on and kept after its stop: the server's socket list
    empties once it closes, and a url built from the port must still name where it listened.

    Example:
        >>> BoundPort("the listener").port
        Traceback (most recent call last):
        ...
        RuntimeError: the listener is not started
    """

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._port: int | None = None

    def take(self, server: Server) -> None:
        """Record the port ``server`` listens on (the one the system picked, for port 0)."""
        self._port = int(server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        """The bound port; ``RuntimeError`` before the first start."""
        if self._port is None:
            raise RuntimeError(f"{self._owner} is not started")
        return self._port


MAX_HANDSHAKES_AT_MOST: Final = 1024
"""``max_handshakes`` by default: a quarter of the open-file limit, at most this many
(:func:`default_max_handshakes`)."""


ACCEPT_BATCH: Final = 100
"""Connections asyncio accepts in one go (its default listen backlog): the most that may come in past
``max_handshakes`` before a pause takes effect."""


def default_max_handshakes() -> int:
    """The default ``max_handshakes``: a quarter of the process's open-file limit, at most
    :data:`MAX_HANDSHAKES_AT_MOST`.

    Example:
        >>> 1 <= default_max_handshakes() <= MAX_HANDSHAKES_AT_MOST
        True
    """
    return open_files_share(4, at_most=MAX_HANDSHAKES_AT_MOST)


class _Accepted(ServerConnection):
    """A connection to the engine's port whose listener counts it until its upgrade request comes or it closes;
    each listener makes a subclass naming itself ``listener`` (of the fast connection class when there is one)."""

    listener: ClassVar[Listener]
    #: where its websockets lines go if it closes without an upgrade (iii_engine.handshakes.QuietHandshakes)
    not_upgraded: ClassVar[NotUpgraded]
    #: a channel socket's place under the relay's ``max_sockets`` (given back when the connection is lost)
    channel_slot: SocketSlot | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.listener._handshake_over(self)
        if self.channel_slot is not None:
            self.channel_slot.release()


class Listener:
    """Owns the websockets server; hands accepted connections to the control or channel handler.

    Connections that have not sent their whole upgrade request are counted from their accept: with
    ``max_handshakes`` of them, the port stops accepting until one sends its request or closes (websockets closes a
    silent one after its 10 s ``open_timeout``). Meanwhile new connections wait in the kernel's listen queue, which
    holds none of the engine's descriptors, and none is closed: a burst from one busy process (the kernel completes
    every connect before that process writes any request) only waits. Before, each silent connection held a
    descriptor however many came, and a flood of them took every descriptor the engine had (``accept()`` failed with
    EMFILE; no store or file could be opened). Up to one accept batch more (asyncio's, 100, the listen backlog)
    may come in before the pause takes effect; a backlog sized to the bound multiplied asyncio's failed accepts when
    descriptors ran short. Where the event loop cannot pause accepting
    (:mod:`iii_engine.accept_gate`: uvloop, Windows), the port accepts as before, said in one line at start.
    """

    def __init__(self, host: str, port: int, *, max_message_size: int, relay: ChannelRelay,
                 control: Callable[[ServerConnection], Awaitable[None]], max_handshakes: int | None = None) -> None:
        self.host = host
        self.requested_port = port
        self.max_message_size = max_message_size
        self.relay = relay
        self.max_handshakes = default_max_handshakes() if max_handshakes is None else max_handshakes
        self._control = control
        self._server: Server | None = None
        self._bound = BoundPort("the listener")
        # connections closed without becoming a WebSocket (no request, not HTTP, refused): counted instead of
        # websockets' lines about them, only while those INFO lines are made (they are what the count replaces)
        self._not_upgraded = NotUpgraded(log, "the engine's port", SKIP_LOG_INTERVAL_S)
        base = server_factory() or ServerConnection
        self._connection_class: type[ServerConnection] = type(
            "Accepted", (_Accepted, base), {"listener": self, "not_upgraded": self._not_upgraded})
        # accepted, their upgrade request not come yet (counted from the protocol's creation, the loop turn after
        # the accept: a pause then cancels an accept batch already due in the same turn)
        self._handshaking: set[ServerConnection] = set()
        self._gate: AcceptGate | None = None
        #: how many times the port stopped accepting with every ``max_handshakes`` place taken
        self.accept_pauses = 0
        self._pause_log = LossLog(self._log_paused, SKIP_LOG_INTERVAL_S)
        # Every connection from its accept on, opening handshakes included: websockets' ``connections`` holds only
        # OPEN ones, and the stop must reach a peer stalled in its upgrade request too (weak: the transport and the
        # handler task keep a live one).
        self._connections: weakref.WeakSet[ServerConnection] = weakref.WeakSet()
        # the stop's close of each connection, from close() on: every connection accepted then is closed too
        self._closes: dict[ServerConnection, asyncio.Task[None]] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return self._bound.port

    async def start(self, *, serving: bool = True) -> None:
        """Bind and start accepting connections (with ``serving=False`` only bind: connections are refused until
        :meth:`start_serving`, so the port is taken before anything else starts)."""
        self._closes = None  # an engine started again serves its workers again
        limit = open_file_limit()
        if limit is not None and self.max_handshakes + ACCEPT_BATCH > limit * 3 // 4:
            log.warning("max_handshakes %d leaves little of the open-file limit (%d): up to %d more connections come "
                        "in before the port pauses, so connections without their request can still take every "
                        "descriptor (the default is a quarter of the limit)", self.max_handshakes, limit, ACCEPT_BATCH)
        self._server = await serve(
            self._handle,
            self.host,
            self.requested_port,
            start_serving=serving,
            compression=None,
            # channel sockets get the fast data path (iii.ws_fastpath); websockets calls the factory as it would the
            # class, and any callable returning a ServerConnection will do
            create_connection=cast("type[ServerConnection]", self._connection),
            max_size=max(self.max_message_size, self.relay.max_message_size),  # narrowed per connection
            ping_interval=None,  # production never pings workers; it only answers pings
            process_request=self._process_request,
            process_response=self._process_response,
            logger=quiet_logger(f"{__name__}.websockets"),
        )
        # websockets' Server wraps asyncio's in ``server`` (the gate checks what it gets)
        self._gate = AcceptGate(getattr(self._server, "server", None))
        if not self._gate.available:
            log.info("the engine's port cannot pause accepting (%s): connections without an upgrade request are "
                     "bounded by websockets' 10 s handshake timeout only, not by max_handshakes",
                     self._gate.unavailable_reason)
        self._bound.take(self._server)  # the engine's url and port still name it during and after the stop

    def _connection(self, *args: Any, **kwargs: Any) -> ServerConnection:
        connection = self._connection_class(*args, **kwargs)
        self._connections.add(connection)
        self._handshake_began(connection)
        if self._closes is not None:  # accepted as the port was closing
            self._close(connection)
        return connection

    def _handshake_began(self, connection: ServerConnection) -> None:
        self._handshaking.add(connection)
        gate = self._gate
        if len(self._handshaking) < self.max_handshakes or gate is None or self._closes is not None:
            return
        # again while paused: a connection that came in then was let in by asyncio's own retry of a failed accept
        was_paused = gate.paused
        if gate.pause() and not was_paused:
            self.accept_pauses += 1
            self._pause_log.lost("paused", f"{len(self._handshaking)} connections without their whole request")

    def _handshake_over(self, connection: ServerConnection) -> None:
        """``connection`` sent its upgrade request or closed: its place is free."""
        self._handshaking.discard(connection)
        gate = self._gate
        if gate is not None and gate.paused and len(self._handshaking) < self.max_handshakes and self._closes is None:
            gate.resume()

    def _log_paused(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        log.warning("the engine's port stopped accepting %d time(s) since the last warning, %d in all: max_handshakes "
                    "(%d) connections had not sent their whole upgrade request; new connections wait in the listen "
                    "queue until one sends it or times out%s", counts["paused"], self.accept_pauses,
                    self.max_handshakes, latest_text)

    def _close(self, connection: ServerConnection) -> None:
        """Close ``connection`` for the stop (once), in a task :meth:`close` waits for."""
        closes = self._closes
        if closes is None or connection in closes:
            return
        if connection.state is State.CONNECTING:
            task = asyncio.ensure_future(self._end_handshake(connection))
        else:
            task = asyncio.ensure_future(close_within(connection, 1001, "going away"))
        closes[connection] = task
        task.add_done_callback(lambda _: closes.pop(connection, None))

    @staticmethod
    async def _end_handshake(connection: ServerConnection) -> None:
        """An opening handshake under way at the stop: its request, if it comes within ``CLOSE_TIMEOUT_S``, is
        answered 503 (websockets' answer once the port stopped serving), else the connection is reset. Not
        websockets' ``close()``: during the handshake it made that answer fail, and the peer was dropped unanswered."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connection.wait_closed(), CLOSE_TIMEOUT_S)
        # no transport: asyncio made the protocol but not its transport, the server having just closed
        if connection.state is State.CONNECTING and getattr(connection, "transport", None) is not None:
            reset(connection)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self._handshake_over(connection)
        route = route_request(request.path)
        if route is None:
            set_max_message_size(connection, self.max_message_size)
            # the engine reads whole frames through iii.ws_fastpath; up to 1 MiB of them may wait unread
            enable_fast_receive(connection)
            return None
        if isinstance(route, ChannelRoute):
            refusal = self.relay.check(route.channel_id, route.key, route.direction)
            if refusal is None and isinstance(connection, _Accepted):
                slot = self.relay.take_socket(route.channel_id)
                if isinstance(slot, SocketSlot):
                    connection.channel_slot = slot
                else:
                    response = connection.respond(*slot)
                    response.headers["Retry-After"] = "1"
                    return response
            if refusal is None:
                set_max_message_size(connection, self.relay.max_message_size)
                # Frames queue up here before the relay reads them; start small so a burst of large messages
                # cannot pile up (the relay resizes the queue from the message sizes it sees).
                bound_frame_queue(connection, *CHANNEL_SOCKET_QUEUE)
                enable_fast_receive(connection, SOCKET_QUEUE_BYTES)
                return None
            status, body = refusal
            return connection.respond(status, body)
        status, body = route
        # debug only: the connection is counted with the others that never upgrade, one INFO line per interval
        log.debug("refused %s %.200r: HTTP %d", connection.remote_address, request.path, status)
        return connection.respond(status, body)

    def _process_response(self, connection: ServerConnection, request: Request, response: Response) -> None:
        """A writer's accepted upgrade carries the frame size the engine invites, a worker's the largest message it
        takes (our extensions, docs/protocol.md#frame-size-extension and #message-size-extension; the production
        engine, and so ``production_mode``, sends neither: writers keep 64 KiB frames, workers check nothing)."""
        if response.status_code != 101 or self.relay.production_mode:
            return
        route = route_request(request.path)
        if route is None:
            response.headers[MAX_MESSAGE_SIZE_HEADER] = str(self.max_message_size)
        elif isinstance(route, ChannelRoute) and route.direction == "write":
            response.headers[FRAME_SIZE_HEADER] = str(frame_invitation(self.relay.max_message_size))

    async def _handle(self, connection: ServerConnection) -> None:
        # its 101 went out as the port began to close (once it stopped serving, websockets answers 503)
        self._close(connection)
        keep_alive(connection.transport.get_extra_info("socket"))  # a peer that vanished is noticed (see keepalive)
        route = route_request(connection.request.path if connection.request else "/")
        if isinstance(route, ChannelRoute):
            await self.relay.serve(connection, route.channel_id, route.key, route.direction)
        else:
            await self._control(connection)

    async def start_serving(self) -> None:
        """Start accepting connections on the socket :meth:`start` bound."""
        if self._server is None:
            raise RuntimeError("the listener is not started")
        await self._server.start_serving()

    async def close(self) -> None:
        """Stop accepting and close every connection (close code 1001), each within
        :data:`~iii_engine.closing.CLOSE_TIMEOUT_S`, then reset."""
        if self._server is None:
            return
        if self._closes is None:
            self._closes = {}
            # The port stops accepting first: it took upgrades in until the connections it knew of were closed (up
            # to 2 s), and websockets' own close of those waited its close_timeout (10 s) for a silent peer. And our
            # closes, not websockets': it leaves a peer stalled in its upgrade request to its open_timeout (10 s).
            self._server.close(close_connections=False)
            # A peer that stopped reading, with megabytes queued to it, held the stop for about 50 s: websockets'
            # close first waits for the socket to drain, with no deadline. At the stop each connection gets
            # close_within's (normal closes keep waiting for a slow reader to take what was sent before the close).
            # Every connection, closing ones too: a channel end the relay began to close as the engine's stop began
            # waited websockets' close_timeout (10 s) for a peer that never answers, past the stop's bounds, and its
            # handler was left running on the loop. (A close already under way is reset at the bound as well.)
            for connection in list(self._connections):
                if connection.state is not State.CLOSED:
                    self._close(connection)
        try:
            while self._closes:  # one accepted as the port closed is added by _connection, one let in by _handle
                await asyncio.wait(list(self._closes.values()))
            await self._server.wait_closed()
        finally:  # a stop cut short (Ctrl-C, an outer bound) still writes the counts not logged yet
            self._not_upgraded.flush()
            self._pause_log.flush(None)
