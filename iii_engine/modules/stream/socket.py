"""The client stream WebSocket (docs/reference/payloads.md#streams-stream): browsers and apps join groups or items and
get live
change events.

Clients send ``{"type": "join" | "leave", "data": {"subscriptionId", "streamName", "groupId", "id"?}}``; the server
sends event wrappers (docs/reference/payloads.md#stream-events): one ``sync`` after each accepted join (the
custom-aware get or list result), then ``create``/``update``/``delete``/``event`` frames, or ``unauthorized``
for a refused join. Ours: a message that is no well-formed join or leave gets an ``error`` event naming what is wrong
(``invalid_message``, ``invalid_join``, ``invalid_leave``) where production answers nothing; a join of a stream name
the engine keeps for its own data (starting with ``__iii_``) gets ``invalid_join`` too, its join handlers not called.

Our improvements (docs/protocol.md#stream-improvements): each event goes **once per socket** when any of its
subscriptions matches (ST6), encoded once for all of them and looked up by its group, so a change costs the
sockets that watch its group, not every socket;
an auth function can reject the upgrade with HTTP 401 when ``auth_reject`` is on (ST5); every connection has a
bounded outbound queue and a client that lets it overflow is closed with 1013 (ST9: it is behind once
``client_queue_size`` frames or ``client_queue_bytes`` bytes wait for it, the frame being written not counted; a
frame's own size never closes it, so a sync bigger than the budget reaches a client that keeps reading, and one
that takes no byte of a frame being written to it for six times ``slow_close_timeout_ms`` is reset; and past
``max_queued_bytes`` waiting for all clients together, each frame once, the client furthest behind is: see
:class:`_QueuedBytes`; a join's sync equal to one still waiting for some client is that one, its bytes held once,
its timestamp the older); a client offering
subprotocols gets the first one echoed back (ST10). The store's event feed is open only while a client is
connected (the engine's own writes reach triggers without it), so writes with no socket client do not pay for reading
their events back; a join opens it before its sync read, so no change falls between sync and feed.

Join/leave contract: every join the ``stream:join`` handlers heard of and did not refuse gets exactly one
``stream:leave``, when the client leaves it or goes, when a later join replaces it under its id, or at once when
the handlers did not answer within ``join_timeout_ms`` or the client went before they did (a handler may have
acted on it; its late answer is dropped, and the leave may reach a worker before that answer). A refused join
(``unauthorized``) gets none, as in production; a join repeating the subscription live under its id is that
subscription. A client that goes during a join is let go at once: the join is cancelled (once its close is read:
behind more than one waiting message of its own, when that join ends).

Example:
    >>> Subscription("s", "g", None).matches({"streamName": "s", "groupId": "g", "id": "7"})
    True
    >>> Subscription("s", "g", "1").matches({"streamName": "s", "groupId": "g", "id": None})
    False
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import iii.ws_imports  # isort: skip - websockets loads whole there, under one lock (see there)
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.loss_log import LossLog, counts_text, latest_tail
from iii.wire import dumps, loads
from iii.ws_fastpath import reset, send_server_frame
from iii_streams import Backend, StreamGapError, StreamLagError, Watch
from iii_streams.deadlines import finish_within
from iii_streams.events import StreamEvent, now_ms

from ...closing import CLOSE_TIMEOUT_S, close_within
from ...handshakes import BAD_TARGET, NotUpgraded, Silent, quiet_logger, request_target
from ...limits import SKIP_LOG_INTERVAL_S
from ...send_queue import unsent
from ...server import BoundPort, url_host
from ..base import EngineError, EngineServices
from .api import StreamFunctions
from .inputs import reserved_name
from .settings import DEFAULT_CLIENT_QUEUE_BYTES, DEFAULT_SLOW_CLOSE_TIMEOUT_MS, SocketSettings
from .triggers import JoinFailed, JoinLeaveTriggers

__all__ = ["MAX_JOIN_NAME", "StreamSocketServer", "Subscription"]

log = logging.getLogger(__name__)

_MAX_CLIENT_FRAME = 1024 * 1024
# Client messages received and not yet handled before the socket stops reading (websockets' max_queue): the socket
# handles them one at a time and a join may take join_timeout_ms, so websockets' default of 16 let each client park
# 17 MiB of messages in the engine behind one slow join (170 GB at max_clients). Joins and leaves are small and
# rare: one waiting message keeps a client's next join ready (5,000 joins in a burst took as long as with 16). The
# price: a client that goes with more than one message waiting behind a hung join is seen gone when that join ends
# (join_timeout_ms at most), its close being unread behind them; with 16 it was so past 16 messages.
_CLIENT_MESSAGES_QUEUED = 1
_SLOW_CLIENT = 1013
# Looks at a blocked write per stall limit (_STALL_FACTOR times slow_close_timeout_ms; see _Client.write): a client
# is reset once it took nothing for between 1 and 1 + 1/_LOOKS times that limit
_LOOKS = 4
_STALL_FACTOR = 6
"""A writer that made no progress for this many ``slow_close_timeout_ms`` (60 s by default) is reset: a client
that reads slowly with a full receive window is acknowledged only at the sender's zero-window probes, whose backoff
doubles (~7 s apart after a few), so at 10-15 KiB/s it showed no progress for over 10 s while reading every byte."""
_SHED_GRACE_S = 1.0
"""A client that took no byte for less than this (s) since max_queued_bytes first looked at it is not yet taken for
stalled (see :meth:`_QueuedBytes.shed`)."""
_TOO_SLOW = "too slow: events were queued faster than read; reconnect and join"
_TOO_MANY_BYTES = "too slow: the engine holds too many bytes for slow clients (max_queued_bytes); reconnect and join"
_MISSED = "the engine missed the store's events; reconnect and join"
# between attempts to subscribe to the store's events while they fail: doubled up to the maximum, so a store whose
# events stay unavailable does not close (and re-sync) every client twice a second
_FEED_RETRY_S = 0.5
_FEED_RETRY_MAX_S = 5.0
# How long the socket waits for the store to end one subscription to its events (a Redis UNSUBSCRIBE, a PostgreSQL
# LISTEN connection's close) before it lets it go: a store that never answered held the engine's stop forever, and
# when the last client left, the feed's lock with it, so no later join's feed opened either. The bound, not the
# unsubscribe itself, is what a client or the stop may have to wait for.
_WATCH_CLOSE_TIMEOUT_S = 5.0
# How long the start-up probe may take to subscribe to the store's events. A store that never answers held the
# engine's start for the store's own timeout (a silent PostgreSQL: 60 s) or, with none, for good; a subscribe is a
# round trip or a connection, so a store slower than this at start is taken as down: one error line, no engine.
_START_PROBE_TIMEOUT_S = 10.0
# Ended feeds' unsubscribes under way at most before the next feed's opening waits for one to end: each may hold a
# store subscription (a PostgreSQL LISTEN connection) for up to _WATCH_CLOSE_TIMEOUT_S, and one client's
# connect-join-leave loop against a store slow to unsubscribe left 200 of them under way within 1.5 s. A store that
# unsubscribes at once never has more than one.
_UNSUBSCRIBING_MAX = 8

# Connections taken past max_clients only to be answered 503 naming the setting (once their request comes). A few:
# enough for the refusals of clients that come one at a time. When these are taken as well, a new connection takes
# the place of the oldest that has sent no request yet (see StreamSocketServer._admit), else it is closed as accepted.
_REFUSING_MAX = 4
_CLIENT = "client"
_REFUSING = "refusing"

_GroupKey = tuple[str, str]

MAX_JOIN_NAME = 1024
"""The longest ``subscriptionId``, ``streamName``, ``groupId`` or ``id`` a join may carry (characters)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """One joined group (``item_id`` None) or item."""

    stream_name: str
    group_id: str
    item_id: str | None

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` belongs to this subscription."""
        return (event.get("streamName") == self.stream_name and event.get("groupId") == self.group_id
                and (self.item_id is None or event.get("id") == self.item_id))

    @property
    def group(self) -> _GroupKey:
        """The (stream, group) whose events may match."""
        return self.stream_name, self.group_id


class _GroupSubscriptions:
    """A client's subscriptions in one group: how many take the whole group, and how many each item."""

    __slots__ = ("items", "whole")

    def __init__(self) -> None:
        self.whole = 0
        self.items: dict[str, int] = {}


class _QueuedBytes:
    """The bytes of frames waiting for every client of one socket (queued or held during a join; the frame being
    written to each not counted, as for ``client_queue_bytes``), each frame counted once however many clients it
    waits for (an event's frame is shared), bounded by ``max_queued_bytes``.

    Why: ``client_queue_bytes`` bounds one client only. A silent client that sent 40 joins of a 1 MB group under
    different ids got 40 syncs of its own queued, 31 MB under its 32 MiB: 20 such clients took an engine from 68 to
    682 MB, held for a minute, and max_clients of them hundreds of GB in principle.

    Example:
        >>> queued = _QueuedBytes(10)
        >>> frame = b"12345"
        >>> queued.add(frame); queued.add(frame); queued.total  # one frame waiting for two clients
        5
        >>> queued.remove(frame); queued.remove(frame); queued.total
        0
    """

    def __init__(self, limit: int, clients: set[_Client] | None = None) -> None:
        self.limit = limit
        self.total = 0
        # id of a frame waiting for some client -> how many times it waits (the queues hold the frame itself, so
        # its id is not reused while it is counted here)
        self._waiting: dict[int, int] = {}
        self.clients: set[_Client] = set() if clients is None else clients
        # no client to close was found at this total (see shed)
        self._quiet_until = 0
        # a look again once clients that may have stalled are past their grace (see shed)
        self._recheck: asyncio.TimerHandle | None = None
        # the latest sync frame of each subscription that still waits for some client (see same_sync), and back
        self._syncs: dict[Subscription, bytes] = {}
        self._sync_of: dict[int, Subscription] = {}

    def same_sync(self, sub: Subscription, sync: bytes) -> bytes:
        """A sync frame of ``sub`` still waiting for some client that says what ``sync`` says (only its timestamp,
        older, may differ), else ``sync``.

        Why: a client that joined one big group under 40 ids got 40 copies of its sync queued; the same bytes
        once are what it gets, at the cost of one comparison."""
        waiting = self._syncs.get(sub)
        if waiting is not None and _same_but_timestamp(waiting, sync):
            return waiting
        return sync

    def keep_sync(self, sub: Subscription, sync: bytes) -> None:
        """Offer ``sync`` to later joins of ``sub`` (:meth:`same_sync`) for as long as it waits for some client."""
        key = id(sync)
        if key in self._waiting and self._syncs.get(sub) is not sync:
            if (older := self._syncs.get(sub)) is not None:
                del self._sync_of[id(older)]
            self._syncs[sub] = sync
            self._sync_of[key] = sub

    def _look_again(self) -> None:
        self._recheck = None
        self._quiet_until = 0
        self.shed()

    def close(self) -> None:
        """Cancel a look again still to come (the socket is closing: its clients are gone)."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None

    def add(self, frame: bytes) -> None:
        key = id(frame)
        count = self._waiting.get(key, 0)
        self._waiting[key] = count + 1
        if not count:
            self.total += len(frame)

    def remove(self, frame: bytes) -> None:
        key = id(frame)
        count = self._waiting[key] - 1
        if count:
            self._waiting[key] = count
        else:
            del self._waiting[key]
            self.total -= len(frame)
            if self._sync_of and (sub := self._sync_of.pop(key, None)) is not None:
                del self._syncs[sub]
            if self.total <= self.limit:
                self._quiet_until = 0

    def shed(self) -> None:
        """While more than :attr:`limit` bytes wait, close (1013) a client and let go of its frames: the one with
        the most bytes waiting among those that took nothing since the writer last looked (stalled: its next frame
        counts too), else the one furthest behind (the most bytes waiting behind its next frame).

        Why stalled ones first, next frame counted: silent clients each holding one next frame kept the bytes over
        the limit uncounted, and an honest reader in the middle of a burst, the only one with frames behind its
        next, was closed instead, freeing almost nothing. A client that reads keeps the old rule (its own next
        frame never closes it: a reader may get a sync bigger than the limit), so the bytes may stay over the
        limit with nobody to close: the clients are looked through again only once ``limit / 16`` more bytes
        wait, not at every frame."""
        while self.total > self.limit and self.total > self._quiet_until:
            loop = asyncio.get_running_loop()
            now = loop.time()
            stalled: list[_Client] = []
            maybe: list[float] = []
            for client in self.clients:
                if client.waiting_bytes() > 0:
                    look = client.stall_look(now)
                    if look == "stalled":
                        stalled.append(client)
                    elif look == "maybe":
                        maybe.append(client.grace_ends())
            victim: _Client | None
            if stalled:
                victim = max(stalled, key=_Client.waiting_bytes)
                size = victim.waiting_bytes()
            else:
                if maybe:  # (no reader closed for them: a look again once they can be told stalled)
                    self._quiet_until = self.total + self.limit // 16
                    if self._recheck is None:
                        self._recheck = loop.call_at(min(maybe), self._look_again)
                    return
                victim = max(self.clients, key=_Client.behind_bytes, default=None)
                if victim is None or victim.behind_bytes() <= 0:
                    self._quiet_until = self.total + self.limit // 16
                    return
                size = victim.behind_bytes()
            log.warning("stream clients' queued frames passed max_queued_bytes (%d bytes waiting, limit %d); "
                        "closing the client %s, %s (%d bytes waiting), with 1013", self.total, self.limit,
                        "that stalled with the most" if stalled else "furthest behind", victim.ws.remote_address,
                        size)
            victim.fall_behind(_TOO_MANY_BYTES)
            victim.let_go()  # none of them is sent now (the writer's next send meets the close)


class _Client:
    """One socket: its auth context, subscriptions and bounded outbound queue."""

    def __init__(self, ws: ServerConnection, context: Any, queue_size: int,
                 close_timeout_s: float = DEFAULT_SLOW_CLOSE_TIMEOUT_MS / 1000,
                 queue_bytes: int = DEFAULT_CLIENT_QUEUE_BYTES, pool: _QueuedBytes | None = None) -> None:
        self.ws = ws
        self.close_timeout_s = close_timeout_s
        self._stall_s = close_timeout_s * _STALL_FACTOR
        self.context = context
        self._subscriptions: dict[str, Subscription] = {}
        # the same subscriptions by group, for :meth:`wants` (every event of a watched group asks each watcher): a
        # scan of all of them let 20 clients of 1,000 item subscriptions in a busy group take writes from 3,450 to
        # 131 a second (160 µs per event per client)
        self._index: dict[_GroupKey, _GroupSubscriptions] = {}
        # every client of the socket shares one (its max_queued_bytes); a client made alone gets its own, unbounded
        self.pool = _QueuedBytes(1 << 62) if pool is None else pool
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(queue_size)
        self.queue_bytes = queue_bytes
        # of the frames waiting in the queue; not the one being written, which a big sync can hold for seconds
        # while the client reads it as fast as it can
        self.queued_bytes = 0
        # the queued frames' lengths, oldest first (the next one to write is not counted by behind_bytes)
        self._lengths: collections.deque[int] = collections.deque()
        self.overflowed = False
        self.closer: asyncio.Task[None] | None = None
        # done once the connection is closed (made at the first join); it cancels the join in flight
        self.gone: asyncio.Task[None] | None = None
        self.joining: asyncio.Task[None] | None = None
        # frames offered while a join reads its sync (:meth:`hold`), sent after the sync
        self.held: list[bytes] | None = None
        self.held_bytes = 0
        # the writer's progress, for :meth:`_look`: frames it began, whether it is in one, and at the last look
        # (frames begun, bytes the socket held, the loop's time it last saw the client take any)
        self.writes = 0
        self.writing = False
        self._seen = (0, 0)
        self._moved_at = 0.0
        # (writes, unsent) at max_queued_bytes's first look that found them so, and when (see stall_look)
        self._stall_seen: tuple[tuple[int, int], float] | None = None
        self._looking: asyncio.TimerHandle | None = None

    def watch_gone(self) -> bool:
        """Follow the connection's end from now on (once); whether it is still open."""
        if self.gone is None:
            self.gone = asyncio.get_running_loop().create_task(self.ws.wait_closed())
            self.gone.add_done_callback(self._went)
        return not self.gone.done()

    def _went(self, _: asyncio.Task[None]) -> None:
        if self.joining is not None:  # the join in flight is for nobody now
            self.joining.cancel()

    @property
    def subscriptions(self) -> Mapping[str, Subscription]:
        """Its subscriptions by id (read-only: :meth:`subscribe` and :meth:`unsubscribe` keep the index too)."""
        return MappingProxyType(self._subscriptions)

    def subscribe(self, sub_id: str, sub: Subscription) -> Subscription | None:
        """Hold ``sub`` under ``sub_id``; the subscription it replaces there, if any."""
        old = self._subscriptions.get(sub_id)
        if old is not None:
            self._unindex(old)
        self._subscriptions[sub_id] = sub
        entry = self._index.get(sub.group)
        if entry is None:
            entry = self._index[sub.group] = _GroupSubscriptions()
        if sub.item_id is None:
            entry.whole += 1
        else:
            entry.items[sub.item_id] = entry.items.get(sub.item_id, 0) + 1
        return old

    def unsubscribe(self, sub_id: str) -> Subscription | None:
        """Drop the subscription under ``sub_id``; it, or ``None`` when there is none."""
        old = self._subscriptions.pop(sub_id, None)
        if old is not None:
            self._unindex(old)
        return old

    def unsubscribe_all(self) -> dict[str, Subscription]:
        """Drop every subscription; those it had, by id."""
        subscriptions, self._subscriptions = self._subscriptions, {}
        self._index.clear()
        return subscriptions

    def _unindex(self, sub: Subscription) -> None:
        entry = self._index[sub.group]
        if sub.item_id is None:
            entry.whole -= 1
        elif (count := entry.items[sub.item_id]) > 1:
            entry.items[sub.item_id] = count - 1
        else:
            del entry.items[sub.item_id]
        if not entry.whole and not entry.items:
            del self._index[sub.group]

    def wants(self, event: Mapping[str, Any]) -> bool:
        """Whether any of its subscriptions matches ``event`` (as :meth:`Subscription.matches`), in constant
        time."""
        stream, group = event.get("streamName"), event.get("groupId")
        if not (isinstance(stream, str) and isinstance(group, str)):
            return False
        entry = self._index.get((stream, group))
        if entry is None:
            return False
        if entry.whole:
            return True
        item = event.get("id")
        return isinstance(item, str) and item in entry.items

    def watches(self, group: _GroupKey) -> bool:
        return group in self._index

    def groups(self) -> list[_GroupKey]:
        """The groups it has a subscription in."""
        return list(self._index)

    def stall_look(self, now: float) -> str:
        """``"stalled"``: its writer is writing and the client took no byte since a look at least
        :data:`_SHED_GRACE_S` ago; ``"maybe"``: not since a look less than that ago (or this is the first look), so
        it is ``"stalled"`` at :meth:`grace_ends` unless it takes bytes; ``"moving"``: it took bytes since the last
        look, or its writer waits for frames, not for it."""
        if not self.writing:
            self._stall_seen = None
            return "moving"
        seen = (self.writes, _unsent(self.ws))
        if self._stall_seen is None or self._stall_seen[0] != seen:
            moved = self._stall_seen is not None
            self._stall_seen = (seen, now)
            return "moving" if moved else "maybe"
        return "stalled" if now - self._stall_seen[1] >= _SHED_GRACE_S else "maybe"

    def grace_ends(self) -> float:
        """Loop time at which a ``"maybe"`` of :meth:`stall_look` becomes ``"stalled"``."""
        return (self._stall_seen[1] if self._stall_seen is not None else 0.0) + _SHED_GRACE_S

    def waiting_bytes(self) -> int:
        """Bytes of frames waiting for it, the next one to write included (not the one being written)."""
        return self.queued_bytes + self.held_bytes

    def behind_bytes(self) -> int:
        """Bytes of frames waiting for it behind the next one to write (queued or held; neither the frame being
        written nor the next one counted: a frame's own size never closes a client)."""
        return self.queued_bytes + self.held_bytes - (self._lengths[0] if self._lengths else 0)

    def offer(self, frame: bytes, exempt: int = 0) -> None:
        """Queue one text frame's UTF-8 payload (shared by every socket the event goes to).

        The client is behind, and closed with 1013, when ``client_queue_bytes`` or more of frames already wait for
        it (or ``client_queue_size`` frames): the budget bounds what waits ahead of a frame, never the frame
        itself, so one client holds at most the budget plus the frame that tips it over plus the one being
        written. ``exempt``: bytes queued that do not count against this frame (a join's sync queued just before
        the events held while it was read: they came first, and a sync never counted against them).
        """
        if self.overflowed:
            return
        held = self.held
        try:
            if held is not None:
                # counted with the queue's frames and bytes: held ones wait for this client as queued ones do
                if (self.queued_bytes + self.held_bytes >= self.queue_bytes
                        or self.queue.qsize() + len(held) >= self.queue.maxsize > 0):
                    raise asyncio.QueueFull
                held.append(frame)
                self.held_bytes += len(frame)
                self.pool.add(frame)
                self.pool.shed()
                return
            if self.queued_bytes - exempt >= self.queue_bytes:
                # frames are shared between sockets, but one a slow client has yet to take stays alive for it: a
                # count alone let 1024 events of 4 MiB items hold 4 GiB. Checking the new frame's own size too
                # closed a client that was not behind at all when a sync bigger than the budget came in just
                # after a few small events, yet let the same sync through to an empty queue.
                raise asyncio.QueueFull
            self.queue.put_nowait(frame)
            self.queued_bytes += len(frame)
            self._lengths.append(len(frame))
            self.pool.add(frame)
            self.pool.shed()
        except asyncio.QueueFull:
            log.warning("stream client %s fell %d frames (%d bytes) behind; closing it with 1013",
                        self.ws.remote_address, self.queue.qsize(), self.queued_bytes)
            self.fall_behind(_TOO_SLOW)

    def hold(self) -> None:
        """Keep the frames offered from now on until :meth:`release`: a join's sync read is under way, and an event
        committed during it must reach the client after the sync, never before (the sync, read from the store
        later, may predate it: the client then kept the older value, with nothing to tell it; an attack saw it in
        12 of 100 joins on PostgreSQL, 33 of 100 on SQLite)."""
        if self.held is None:
            self.held = []

    def release(self, sync: bytes | None) -> None:
        """Queue the join's ``sync`` frame (``None``: there is none), then the frames held since :meth:`hold`, in
        order (an event both in the sync and held is sent twice: harmless, the later one wins)."""
        held = self.held
        self.held = None
        self.held_bytes = 0
        for frame in held or ():
            self.pool.remove(frame)  # offered again below, or let go
        exempt = 0
        if sync is not None:
            before = self.queued_bytes
            self.offer(sync)
            exempt = self.queued_bytes - before  # (0 when the sync closed the client)
        for frame in held or ():
            self.offer(frame, exempt)

    def fall_behind(self, reason: str) -> None:
        """Close with 1013 (once): the client missed events and must reconnect and join again to re-sync."""
        if self.overflowed:
            return
        self.overflowed = True
        # A client that stopped reading never takes the close frame: bounded, then reset.
        self.closer = asyncio.get_running_loop().create_task(
            close_within(self.ws, _SLOW_CLIENT, reason, self.close_timeout_s))

    async def write(self) -> None:
        """Send the queued frames in order until cancelled. A client that takes no byte of what waits for it for
        :data:`_STALL_FACTOR` times ``close_timeout_s`` (``slow_close_timeout_ms``) is reset (:meth:`_look`)."""
        while True:
            frame = await self.queue.get()
            self.queued_bytes -= len(frame)
            self._lengths.popleft()
            self.pool.remove(frame)
            self.writes += 1
            self.writing = True
            if self._looking is None:
                self._watch()
            try:
                # the payload is already UTF-8: no per-socket encoding or websockets message machinery
                await send_server_frame(self.ws, True, frame)
            finally:
                self.writing = False
            # not kept while waiting for the next one: an idle client held its last frame (its sync, say) for as
            # long as nothing else came for it
            del frame

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        self._seen = (self.writes, _unsent(self.ws))
        self._moved_at = loop.time()
        self._looking = loop.call_later(self._stall_s / _LOOKS, self._look)

    def _look(self) -> None:
        """Whether the client took anything since the last look; reset it once it took nothing for
        ``close_timeout_s`` times :data:`_STALL_FACTOR`.

        Why: a write waits for the socket to drain, with no deadline of its own, and websockets' keep-alive cannot
        tell either (its ping waits for the same drain). A client that joined a big group and never read held its
        sync, and every frame queued behind it, for as long as its TCP connection stayed up: 30 such sockets took
        an engine from 84 to 571 MB, still held after a minute, all under ``client_queue_bytes``. A client that
        reads, however slowly, acknowledges bytes (what is unsent shrinks) or lets the next frame begin: it is
        never cut.
        """
        self._looking = None
        if not self.writing:
            return  # the writer waits for frames, not for the client: the next write watches again
        loop = asyncio.get_running_loop()
        now = loop.time()
        seen = (self.writes, _unsent(self.ws))
        if seen[0] != self._seen[0] or seen[1] < self._seen[1]:
            self._moved_at = now
        self._seen = seen
        idle = now - self._moved_at
        if idle < self._stall_s:
            self._looking = loop.call_later(min(self._stall_s / _LOOKS, self._stall_s - idle),
                                            self._look)
            return
        log.warning("stream client %s took nothing of the %d bytes waiting for it for %.1f s "
                    "(6 x slow_close_timeout_ms); resetting it", self.ws.remote_address,
                    seen[1] + self.queued_bytes + self.held_bytes, idle)
        self.drop()
        reset(self.ws)  # the write waiting on it ends; so does the socket's handler, which lets the client go

    def drop(self) -> None:
        """Stop watching the writer and let go of every frame waiting for this client (it is gone or cut)."""
        if self._looking is not None:
            self._looking.cancel()
            self._looking = None
        self.overflowed = True  # nothing is queued for it from now on
        self.let_go()

    def let_go(self) -> None:
        """Let go of the frames queued or held for it (it is closed or gone)."""
        while not self.queue.empty():
            self.pool.remove(self.queue.get_nowait())
        self.queued_bytes = 0
        self._lengths.clear()
        if self.held is not None:
            for frame in self.held:
                self.pool.remove(frame)
            self.held.clear()
            self.held_bytes = 0


def _unsent(ws: ServerConnection) -> int:
    """Bytes written to ``ws`` that its peer has not acknowledged yet (:func:`~iii_engine.send_queue.unsent`). The
    transport's buffer alone hid a slow reader's progress: the kernel takes more from it only once a third of its
    own buffer (up to 4 MiB) is free, a wait longer than a second for a client reading 1 MB/s. Elsewhere the
    transport's buffer alone (a client reading slower than the kernel's buffer per stall may then be taken for one
    that stopped)."""
    return unsent(getattr(ws, "transport", None))  # none: not connected yet (or a stand-in), nothing written


class _Accepted(ServerConnection):
    """A TCP connection to the stream socket, counted against ``max_clients`` from its accept (see
    :meth:`StreamSocketServer._admit`); each socket's :meth:`~StreamSocketServer.start` makes a subclass naming
    that socket as ``owner``."""

    owner: ClassVar[StreamSocketServer]
    #: the place it holds from its accept to its close (_CLIENT or _REFUSING), None: none (closed as accepted, or
    #: its place given to a newer connection)
    place: str | None = None
    #: the loop's time at its accept while its upgrade request has not come whole (it may give its place to a
    #: newer connection then); None once the request came
    silent_since: float | None = None
    #: closed as accepted or evicted: counted in the socket's warning, left out of websockets' log (QuietHandshakes)
    counted_out: bool = False
    #: where its websockets lines go if it closes without an upgrade otherwise (iii_engine.handshakes.QuietHandshakes)
    not_upgraded: ClassVar[NotUpgraded]

    #: its TCP transport, as asyncio handed it over (closed at once when the connection gives its place away)
    tcp: asyncio.BaseTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tcp = transport
        self.owner._admit(self, transport.get_extra_info("peername"))
        self.owner._connections.add(self)
        # websockets' own course, also for one closed at once: its handler sees the close before any request
        super().connection_made(transport)
        if self.place is None:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.owner._connections.discard(self)
        if self.place is not None:
            self.owner._leave(self)


async def _end_handshake(conn: ServerConnection) -> None:
    """End a connection still in its opening handshake when the socket stops: at once when its request has not
    come (nothing could answer it), else once websockets has answered it (503, the server being closed) or
    ``CLOSE_TIMEOUT_S`` passed (an auth call that does not answer), whichever is first."""
    if conn.request is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.wait_closed(), CLOSE_TIMEOUT_S)
            return
    reset(conn)


async def _close_watch(watch: Watch) -> None:
    """Unsubscribe ``watch`` within ``_WATCH_CLOSE_TIMEOUT_S``, never raising but for a cancel of the caller: a
    failure is logged, and past the deadline the unsubscribe is cancelled and let go (whatever it still holds is
    the store's; the feed opens a fresh subscription)."""
    closing = asyncio.get_running_loop().create_task(watch.aclose(), name="stream-socket-feed-close")
    closing.add_done_callback(_log_close_failure)
    with contextlib.suppress(Exception):  # logged by _log_close_failure, in time or not
        await finish_within(closing, _WATCH_CLOSE_TIMEOUT_S, "the store's close of its event subscription", log)


def _log_close_failure(closing: asyncio.Task[None]) -> None:
    if not closing.cancelled() and (exc := closing.exception()) is not None:
        log.warning("the store failed to close its event subscription (%r)", exc)


_JOIN_NAMES = ("subscriptionId", "streamName", "groupId")
_SHAPE = ('{"type": "join" | "leave", "data": {"subscriptionId", "streamName", "groupId": strings, "id": a string '
          '(optional)}}')


def _kind(value: Any) -> str:
    """How a refused message names a JSON value it did not expect (never its text: it may be huge).

    Example:
        >>> _kind(10**5000), _kind([]), _kind(None)
        ('a number', 'an array', 'null')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _join_data(message: Mapping[str, Any]) -> tuple[str, str, str, str | None] | str:
    """A join or leave's ``(subscriptionId, streamName, groupId, id)``, or what is wrong with its ``data``.

    Example:
        >>> _join_data({"data": {"subscriptionId": "a", "streamName": "s", "groupId": "g"}})
        ('a', 's', 'g', None)
        >>> _join_data({"data": {"subscriptionId": 7, "streamName": "s", "groupId": "g"}})
        'data.subscriptionId must be a string, got a number'
    """
    data = message.get("data")
    if not isinstance(data, Mapping):
        return "data is missing" if "data" not in message else f"data must be an object, got {_kind(data)}"
    for name in _JOIN_NAMES:
        if name not in data:
            return f"data.{name} is missing"
        if not isinstance(data[name], str):
            return f"data.{name} must be a string, got {_kind(data[name])}"
    item = data.get("id")
    if item is not None and not isinstance(item, str):
        return f"data.id must be a string or left out, got {_kind(item)}"
    return data["subscriptionId"], data["streamName"], data["groupId"], item


def _named(data: Any, name: str) -> str | None:
    """``data[name]`` when it is a string (cut to :data:`MAX_JOIN_NAME`), for a refusal to echo back."""
    value = data.get(name) if isinstance(data, Mapping) else None
    return value[:MAX_JOIN_NAME] if isinstance(value, str) else None


def _frame(stream: str | None, group: str | None, item: str | None, event: dict[str, Any]) -> bytes:
    return dumps({"type": "stream", "timestamp": now_ms(), "streamName": stream, "groupId": group, "id": item,
                  "event": event}).encode()


def _sync_frame(stream: str, group: str, items: str) -> bytes:
    """A group's ``sync`` frame around ``items``, its items' JSON array text (spliced in, not decoded): the bytes
    :func:`_frame` makes of the decoded items.

    Example:
        >>> import json
        >>> frame = json.loads(_sync_frame("s", "g", '[{"n":1}]'))
        >>> frame["streamName"], frame["id"], frame["event"]
        ('s', None, {'type': 'sync', 'data': [{'n': 1}]})
    """
    head = dumps({"type": "stream", "timestamp": now_ms(), "streamName": stream, "groupId": group, "id": None})
    return f'{head[:-1]},"event":{{"type":"sync","data":{items}}}}}'.encode()


_AFTER_TIMESTAMP = b',"streamName":'


def _same_but_timestamp(one: bytes, other: bytes) -> bool:
    """Whether two frames made by :func:`_frame` or :func:`_sync_frame` say the same after their timestamps (a
    memcmp, no copy: ~20 µs a MB).

    Example:
        >>> _same_but_timestamp(_sync_frame("s", "g", "[]"), _frame("s", "g", None, {"type": "sync", "data": []}))
        True
        >>> _same_but_timestamp(_sync_frame("s", "g", "[1]"), _sync_frame("s", "g", "[2]"))
        False
    """
    start = other.find(_AFTER_TIMESTAMP)
    return (start >= 0 and len(one) - one.find(_AFTER_TIMESTAMP) == len(other) - start
            and one.endswith(memoryview(other)[start:]))


def _error(sub: Subscription, code: str, message: str) -> bytes:
    """The ``error`` event a client gets for a join that did not go through (or lost its sync)."""
    return _frame(sub.stream_name, sub.group_id, sub.item_id, {"type": "error", "code": code, "message": message})


class StreamSocketServer:
    """The listener on ``settings.port`` (0 = a free port; :attr:`port` is the bound one)."""

    def __init__(self, services: EngineServices, settings: SocketSettings, functions: StreamFunctions,
                 store: Backend, join: JoinLeaveTriggers, leave: JoinLeaveTriggers) -> None:
        self.services = services
        self.settings = settings
        self.functions = functions
        self.store = store
        self.join_triggers = join
        self.leave_triggers = leave
        self._server: Server | None = None
        self._bound = BoundPort("the stream socket")
        self._clients: set[_Client] = set()
        # the bytes waiting for them all, under max_queued_bytes (made at the first client)
        self._queued: _QueuedBytes | None = None
        # (stream, group) -> the sockets with a subscription in it: an event is matched against those only
        self._watchers: dict[_GroupKey, set[_Client]] = {}
        # weak: a handshake that fails after the auth call never reaches _serve to pop its entry
        self._contexts: weakref.WeakKeyDictionary[ServerConnection, Any] = weakref.WeakKeyDictionary()
        # TCP connections accepted and not closed yet, by the place they hold (see _admit): the upgrades still in their
        # handshake count with the served clients, or a flood of connections that never finished theirs (each held to
        # websockets' 10 s open_timeout) took descriptors past max_clients
        self._accepted = 0
        self._refusing = 0
        # by place, those of them whose upgrade request has not come, oldest first (so at most max_clients and
        # _REFUSING_MAX): when every place is taken the oldest gives its place to the new connection
        self._silent: dict[str, Silent[_Accepted]] = {_CLIENT: Silent(), _REFUSING: Silent()}
        # the same connections themselves: the stop ends those still in their handshake (see close)
        self._connections: set[_Accepted] = set()
        # set when close() begins: an upgrade's auth call in flight is given up for a 503 at once
        self._stopping = asyncio.Event()
        #: TCP connections closed as they were accepted (every place taken by one that sent its request), since
        #: start
        self.refused_connections = 0
        #: TCP connections closed with no upgrade request sent, their place given to a newer connection, since start
        self.evicted_connections = 0
        self._refused_log = LossLog(self._log_refused, SKIP_LOG_INTERVAL_S)
        # the other connections closed without becoming a WebSocket (not HTTP, a TLS handshake, refused, silent to the
        # handshake timeout): one INFO line per interval, not websockets' line or two each
        self._not_upgraded = NotUpgraded(log, "the stream socket", SKIP_LOG_INTERVAL_S)
        #: joins that failed (sync read failed or timed out, handlers timed out), since start
        self.failed_joins = 0
        # rate-limited: any client of this public socket could write one warning per join it sent
        self._failed_joins_log = LossLog(self._log_failed_joins, SKIP_LOG_INTERVAL_S)
        #: clients' messages ignored or refused (not JSON, malformed, a leave of nothing, a join refused for its
        #: names' length or the subscription count), since start; logged rate-limited like the failed joins
        self.ignored_messages = 0
        self._ignored_log = LossLog(self._log_ignored, SKIP_LOG_INTERVAL_S)
        # The store's event feed, open only while a client is connected (see _open_feed): the engine's own
        # writes go to triggers directly, so with no socket client reading events back costs CPU per write
        # (decoding every notification of the engine's own updates) for nothing.
        self._pump: asyncio.Task[None] | None = None
        self._watch: Watch | None = None  # the pump's current subscription
        self._feed_lock = asyncio.Lock()
        # The one opening of the feed under way, shared by every join waiting for it: a join that timed out or
        # whose client went left its own waiter behind, one task per connect-join-disconnect while the store hung.
        self._opening: asyncio.Task[None] | None = None
        # Unsubscribes of feeds that ended (the last client left, the engine stops), each within
        # _WATCH_CLOSE_TIMEOUT_S: awaited under the feed's lock, a store slow to unsubscribe held the next join's
        # feed for that long (a join_timeout_ms under 5 s: no sync). Nothing reads an ended feed, so a new one may
        # open meanwhile; the engine's stop waits for them.
        self._unsubscribing: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port."""
        return self._bound.port

    @property
    def url(self) -> str:
        """``ws://host:port/`` for clients (wildcard binds are reached through loopback)."""
        return f"ws://{url_host(self.settings.host)}:{self.port}/"

    async def start(self) -> None:
        """Check the store answers, then listen; its events are followed from the first client on
        (:meth:`_open_feed`)."""
        # A store that is down or misconfigured must stop the engine's start with one line, not surface at the
        # first client: subscribing once (then letting go) reaches the store the way the feed will.
        probe = self.store.watch()
        try:
            async with asyncio.timeout(_START_PROBE_TIMEOUT_S) as deadline:
                await probe.open()
        except TimeoutError:
            if not deadline.expired():
                raise  # the store's own timeout, with its own message
            raise ConnectionError(f"the store did not answer a subscription to its events within "
                                  f"{_START_PROBE_TIMEOUT_S:g} s") from None
        finally:
            await _close_watch(probe)

        # a class per socket, not an attribute set afterwards: connections are accepted (and counted) before
        # serve() returns
        class Accepted(_Accepted):
            """A connection to this socket."""

        Accepted.owner = self
        Accepted.not_upgraded = self._not_upgraded
        self._server = await serve(
            self._serve, self.settings.host, self.settings.port, compression=None, max_size=_MAX_CLIENT_FRAME,
            max_queue=_CLIENT_MESSAGES_QUEUED, create_connection=Accepted,
            process_request=self._process_request, select_subprotocol=self._select_subprotocol,
            # the module's stop closes every client (1001): one peer that never answers must not hold it for 10 s
            close_timeout=CLOSE_TIMEOUT_S,
            logger=quiet_logger(f"{__name__}.websockets"))
        self._bound.take(self._server)  # the module's url still names it after the stop

    async def close(self) -> None:
        """Stop listening, close every client (1001; reset past ``CLOSE_TIMEOUT_S``) and the event subscription."""
        if self._server is not None:
            # websockets' own close first waits, with no deadline, for a client to take what it was sent: one that
            # stopped reading held the stop until the keep-alive gave up (20 s), one already being closed as too
            # slow for slow_close_timeout_ms. Taken before server.close(), whose own close of each takes it out of
            # .connections (open ones only; also missing one whose 101 was sent and whose handler has not begun).
            self._stopping.set()
            peers = {client.ws for client in self._clients} | {
                conn for conn in self._connections if conn.state is State.OPEN}
            # websockets then waits for every connection's handler: one still in its handshake ends only with the
            # handshake, and one that never sends its request ends at open_timeout (10 s), however soon the stop
            handshakes = [conn for conn in self._connections if conn.state is State.CONNECTING]
            self._server.close()  # stops listening; upgrades whose request came get a 503
            await asyncio.gather(*(close_within(ws, 1001, "") for ws in peers),
                                 *(_end_handshake(conn) for conn in handshakes))
            await self._server.wait_closed()
        await self._close_feed(force=True)
        if self._unsubscribing:
            await asyncio.wait(tuple(self._unsubscribing))  # each bounded by _WATCH_CLOSE_TIMEOUT_S
        if self._queued is not None:
            self._queued.close()
        self._failed_joins_log.close()
        self._ignored_log.close()
        self._refused_log.close()
        self._not_upgraded.flush()

    @property
    def following(self) -> bool:
        """Whether the store's event feed is open (exactly while a client is connected)."""
        return self._pump is not None

    async def _open_feed(self) -> None:
        """Open the store's event feed unless it is open; returns once it is subscribed.

        Awaited by a join before its sync read, so every change after that read reaches the client: a change
        before the subscription is in the sync data, one after it comes through the feed (possibly both). The
        opening runs in one task that every waiting join shares (shielded: a join cancelled by its client's
        disconnect or its deadline leaves no half-opened store subscription behind, and no task of its own).
        """
        if self._pump is not None:
            return  # the usual case: set and cleared only under the lock, together with the clients check
        opening = self._opening
        if opening is None or opening.done():
            opening = self._opening = asyncio.get_running_loop().create_task(
                self._start_feed(), name="stream-socket-feed-open")
        await asyncio.shield(opening)

    async def _start_feed(self) -> None:
        async with self._feed_lock:
            try:
                if self._pump is not None:
                    return
                while len(self._unsubscribing) >= _UNSUBSCRIBING_MAX:
                    await asyncio.wait(tuple(self._unsubscribing), return_when=asyncio.FIRST_COMPLETED)
                watch = self.store.watch()
                subscribed = True
                try:
                    await watch.open()
                except asyncio.CancelledError:  # the engine stops (see _close_feed)
                    self._unsubscribe(watch)
                    raise
                except Exception as exc:  # e.g. the store is down: the pump keeps trying, as after losing the feed
                    log.warning("stream socket cannot subscribe to the store's events yet (%r)", exc)
                    subscribed = False
                if self._clients:
                    self._watch = watch
                    self._pump = asyncio.get_running_loop().create_task(self._forward(watch, subscribed),
                                                                        name="stream-socket-events")
                    return
            finally:
                if self._opening is asyncio.current_task():
                    self._opening = None
        # every client went while the store answered: their _close_feed left the closing to us. Out of the lock and
        # no longer the shared opening: a join coming now opens its own feed instead of waiting for this close.
        await self._unsubscribe(watch)

    async def _close_feed(self, *, force: bool = False) -> None:
        """Close the feed once no client is connected (``force``: at shutdown)."""
        opening = self._opening
        if opening is not None and not opening.done():
            if not force:
                # the opening closes what it opened if no client is left then; waiting for the lock here held
                # each leaving client's handler (and the engine's stop) for as long as the store did not answer
                return
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opening
        async with self._feed_lock:
            # checked under the lock: a client that connects after this check opens a fresh feed at its join
            if self._pump is None or (self._clients and not force):
                return
            pump, self._pump = self._pump, None
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            # left by the pump only when it was cancelled before its first step (its finally never ran)
            watch, self._watch = self._watch, None
            if watch is not None:
                self._unsubscribe(watch)

    def _unsubscribe(self, watch: Watch) -> asyncio.Task[None]:
        """Close ``watch`` (an ended feed's) in the background, within ``_WATCH_CLOSE_TIMEOUT_S``; counted
        against ``_UNSUBSCRIBING_MAX`` and waited for by the engine's stop."""
        task = asyncio.get_running_loop().create_task(_close_watch(watch), name="stream-socket-feed-unsubscribe")
        self._unsubscribing.add(task)
        task.add_done_callback(self._unsubscribing.discard)
        return task

    # -- handshake -----------------------------------------------------------------------------------------

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        return offered[0] if offered else None

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if isinstance(connection, _Accepted) and connection.silent_since is not None:
            self._spoke(connection)  # its upgrade request came: the place is its own from now on
        parts = request_target(request.path)
        if parts is None:
            return connection.respond(*BAD_TARGET)
        if parts.path != "/":
            return connection.respond(404, "Not Found\n")
        # refused before the upgrade and the auth call: its connection came with max_clients others open, served or
        # in their handshake (waiting for their auth call: a burst made as many concurrent auth calls as it had
        # connections), and was kept only for this answer
        if isinstance(connection, _Accepted) and connection.place != _CLIENT:
            return connection.respond(503, f"{self._too_many()}\n")
        function_id = self.settings.auth_function
        if not function_id:
            return None
        return await self._authenticate_while_connected(connection, request, function_id)

    async def _authenticate_while_connected(self, connection: ServerConnection, request: Request,
                                            function_id: str) -> Response | None:
        """:meth:`_authenticate`, given up once the client goes: websockets would wait for the auth call (up to
        its 10 s handshake timeout) with the client's place under ``max_clients`` taken, for nobody. Given up too
        when the socket stops, answered 503: a call that never answered held the stop until that timeout."""
        auth = asyncio.ensure_future(self._authenticate(connection, request, function_id))
        gone = asyncio.ensure_future(connection.wait_closed())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait((auth, gone, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            stopping.cancel()
            if not auth.done():  # the client went (or the handshake timed out): its call leaves the pending table
                auth.cancel()
        if gone not in done and self._stopping.is_set():
            # also when the call answered in the same loop turn: a 101 now (websockets refuses one only once its
            # listener is closed, a turn later) would open a connection the stop has already counted out
            return connection.respond(503, "the stream socket is stopping\n")
        if not auth.done():
            # never sent: websockets answers no request whose connection is closed
            return connection.respond(400, "the client went during the auth call\n")
        return auth.result()

    async def _authenticate(self, connection: ServerConnection, request: Request,
                            function_id: str) -> Response | None:
        parts = urlsplit(request.path)
        remote = connection.remote_address
        auth_input = {
            "headers": {name.lower(): value for name, value in request.headers.raw_items()},
            "path": "/",
            "query_params": parse_qs(parts.query, keep_blank_values=True),
            "addr": f"{remote[0]}:{remote[1]}" if remote else "",
        }
        try:
            answer = await self.services.invoke(function_id, auth_input)
        except EngineError as exc:
            log.warning("stream auth function %s failed: %s: %s", function_id, exc.code, exc.message)
            if self.settings.auth_reject:
                return connection.respond(401, "Unauthorized\n")
            answer = None
        if self.settings.auth_reject and JoinLeaveTriggers.refuses(answer):
            return connection.respond(401, "Unauthorized\n")
        self._contexts[connection] = answer.get("context") if isinstance(answer, Mapping) else None
        return None

    # -- connections ---------------------------------------------------------------------------------------

    def _too_many(self) -> str:
        return f"too many stream clients connected (max_clients {self.settings.max_clients})"

    def _admit(self, conn: _Accepted, peer: object) -> None:
        """Place a TCP connection just accepted (``conn.place``): :data:`_CLIENT` (one of ``max_clients``,
        whether it is in its handshake or served), :data:`_REFUSING` (kept only to answer 503 naming the
        setting), or ``None``: closed at once, counted and logged rate-limited. When every place of a kind is
        taken, the connection that has held one longest without sending its upgrade request is closed and
        ``conn`` takes its place.

        Why from the accept: counted once its handshake was done (or its auth call began), a flood of connections
        that never sent their upgrade request held a descriptor each until websockets' 10 s open_timeout, however
        many came. The connections' count now bounds the clients, the upgrades and their auth calls at once.

        Why the oldest silent one gives way: with places held from the accept, max_clients + 4 connections that
        say nothing kept every client out until their open_timeout, and again with each new round. A client
        sends its request as soon as it is connected, so a connection that has sent none while a newer one came
        is the one to close; one that sent its request (upgraded, refused, or waiting for its auth call) is never
        closed for a newer one.
        """
        if self._stopping.is_set():
            # accepted after the stop took its list of handshakes (the listener closes a loop turn after close()):
            # its handler would hold the stop until open_timeout like any silent one
            return
        if self._accepted < self.settings.max_clients:
            self._accepted += 1
            conn.place = _CLIENT
        elif self._evict(_CLIENT, peer):
            conn.place = _CLIENT
        elif self._refusing < _REFUSING_MAX:
            self._refusing += 1
            conn.place = _REFUSING
        elif self._evict(_REFUSING, peer):
            conn.place = _REFUSING
        else:
            self.refused_connections += 1
            self._refused_log.lost("refused", f"a connection from {peer}")
            conn.counted_out = True
            return
        conn.silent_since = asyncio.get_running_loop().time()
        self._silent[conn.place].add(conn)

    def _evict(self, place: str, peer: object) -> bool:
        """Close the oldest connection holding a ``place`` with no upgrade request sent, for one from ``peer``
        to take (whether there was one)."""
        oldest = self._silent[place].pick(self._spoke)
        if oldest is None:
            return False
        assert oldest.silent_since is not None
        silent_for = asyncio.get_running_loop().time() - oldest.silent_since
        self.evicted_connections += 1
        self._refused_log.lost("evicted", f"a connection from {oldest.remote_address} that sent no request in "
                                          f"{silent_for:.1f} s closed for one from {peer}")
        oldest.silent_since = oldest.place = None  # its place is the new one's: counted once
        oldest.counted_out = True
        oldest.tcp.close()  # nothing was sent to it; its handler ends with no request, as on a disconnect
        return True

    def _spoke(self, conn: _Accepted) -> None:
        """``conn``'s upgrade request came: it no longer gives its place to a newer connection."""
        conn.silent_since = None
        if conn.place is not None:
            self._silent[conn.place].discard(conn)

    def _leave(self, conn: _Accepted) -> None:
        """A connection :meth:`_admit` placed is closed: its place is free."""
        assert conn.place is not None
        self._silent[conn.place].discard(conn)
        if conn.place == _CLIENT:
            self._accepted -= 1
        else:
            self._refusing -= 1
        conn.place = conn.silent_since = None

    def _log_refused(self, counts: Mapping[str, int], latest: str | None) -> None:
        latest_text = latest_tail(latest)
        log.warning("%d stream socket connection(s) closed since the last warning (%s, and %d more kept to answer "
                    "503): %d that sent no upgrade request, oldest first, for newer ones, and %d as accepted; %d and "
                    "%d in all%s", sum(counts.values()), self._too_many(), _REFUSING_MAX, counts.get("evicted", 0),
                    counts.get("refused", 0), self.evicted_connections, self.refused_connections, latest_text)

    async def _serve(self, ws: ServerConnection) -> None:
        context = self._contexts.pop(ws, None)
        if self._queued is None:
            self._queued = _QueuedBytes(self.settings.max_queued_bytes, self._clients)
        client = _Client(ws, context, self.settings.client_queue_size, self.settings.slow_close_timeout_ms / 1000,
                         self.settings.client_queue_bytes, self._queued)
        self._clients.add(client)
        writer = asyncio.get_running_loop().create_task(client.write())
        try:
            async for raw in ws:
                await self._on_message(client, raw)
                if client.gone is not None and client.gone.done():
                    break  # messages it sent before it went are still buffered: joins for nobody
        except ConnectionClosed:
            pass
        finally:
            if client.gone is not None:
                client.gone.cancel()
            self._clients.discard(client)
            for group in client.groups():
                self._unwatch(client, group)
            subscriptions = client.unsubscribe_all()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer
            client.drop()
            for sub_id, sub in subscriptions.items():
                self.leave_triggers.run_detached(self._payload(client, sub_id, sub))
            if not self._clients:
                await self._close_feed()

    def _subscribe(self, client: _Client, sub_id: str, sub: Subscription | None) -> None:
        """Set (``None``: remove) one of ``client``'s subscriptions, keeping :attr:`_watchers` in step."""
        old = client.unsubscribe(sub_id) if sub is None else client.subscribe(sub_id, sub)
        if sub is not None:
            self._watchers.setdefault(sub.group, set()).add(client)
        if old is not None and not client.watches(old.group):
            self._unwatch(client, old.group)

    def _unwatch(self, client: _Client, group: _GroupKey) -> None:
        watchers = self._watchers.get(group)
        if watchers is not None:
            watchers.discard(client)
            if not watchers:
                del self._watchers[group]

    @staticmethod
    def _payload(client: _Client, sub_id: str, sub: Subscription) -> dict[str, Any]:
        return {"subscription_id": sub_id, "stream_name": sub.stream_name, "group_id": sub.group_id,
                "id": sub.item_id, "context": client.context}

    async def _on_message(self, client: _Client, raw: str | bytes) -> None:
        if not raw.strip():
            return
        # A message the socket cannot act on is answered with an error event (as a refused join is): ignored in
        # silence, it left the client waiting for a sync that never came.
        try:
            message = loads(raw)
        except ValueError as exc:
            self._ignored("not JSON", f"stream client {client.ws.remote_address} sent a frame that is not JSON")
            # the decoder's reason says where; kept encodable (it may quote a lone surrogate)
            reason = str(exc).encode("utf-8", "backslashreplace").decode()
            self._refuse(client, "invalid_message", None, f"unreadable as JSON ({reason:.200}); expected {_SHAPE}")
            return
        kind = message.get("type") if isinstance(message, Mapping) else None
        if kind not in ("join", "leave"):
            self._ignored("malformed", f"stream client {client.ws.remote_address} sent an unknown or malformed "
                                       f"message: {raw!s:.200}")
            got = (_kind(message) if not isinstance(message, Mapping) else
                   "an object without type" if "type" not in message else
                   f"type {kind!r:.100}" if isinstance(kind, str) else f"an object whose type is {_kind(kind)}")
            self._refuse(client, "invalid_message", message, f"expected {_SHAPE}, got {got}")
            return
        parsed = _join_data(message)
        if isinstance(parsed, str):
            self._ignored("malformed", f"stream client {client.ws.remote_address} sent an unknown or malformed "
                                       f"message: {raw!s:.200}")
            self._refuse(client, f"invalid_{kind}", message, f"{parsed}; {kind} ignored")
            return
        sub_id, stream, group, item = parsed
        sub = Subscription(stream, group, item)
        if kind == "leave":
            joined = client.subscriptions.get(sub_id)
            if joined is None:
                # nothing to leave: firing the leave handlers anyway let one client call them (and take slots of
                # max_fired_calls from every other trigger) once per frame, naming groups it never joined
                self._ignored("leave of nothing", f"stream client {client.ws.remote_address} left subscription "
                                                  f"{sub_id!r:.200}, which it does not have")
                return
            self._subscribe(client, sub_id, None)
            self.leave_triggers.run_detached(self._payload(client, sub_id, joined))
            return
        await self._join(client, sub_id, sub)

    async def _join(self, client: _Client, sub_id: str, sub: Subscription) -> None:
        longest = max(len(sub_id), len(sub.stream_name), len(sub.group_id), len(sub.item_id or ""))
        if longest > MAX_JOIN_NAME:
            # a socket keeps its subscriptions for as long as it lives: 1 MiB names (one frame's worth) held 1 GiB
            # per socket at max_subscriptions_per_client
            self._ignored("name too long", f"stream client {client.ws.remote_address} sent a join with a name of "
                                           f"{longest} characters")
            cut = Subscription(sub.stream_name[:MAX_JOIN_NAME], sub.group_id[:MAX_JOIN_NAME],
                               None if sub.item_id is None else sub.item_id[:MAX_JOIN_NAME])
            client.offer(_error(cut, "name_too_long", f"subscriptionId, streamName, groupId and id are at most "
                                f"{MAX_JOIN_NAME} characters each (got {longest}); join refused"))
            return
        refusal = reserved_name(sub.stream_name)
        if refusal is not None:
            # the engine's own data (the state module's, in a store shared with this one): no join handler hears
            # of it and no sync is read
            self._ignored("reserved name", f"stream client {client.ws.remote_address} joined the reserved stream "
                                           f"{sub.stream_name!r:.200}")
            client.offer(_error(sub, "invalid_join", f"{refusal}; join refused"))
            return
        limit = self.settings.max_subscriptions_per_client
        if sub_id not in client.subscriptions and len(client.subscriptions) >= limit:
            # every join costs an entry here and in the group index for as long as the socket lives
            self._ignored("too many subscriptions", f"stream client {client.ws.remote_address} passed "
                                                    f"max_subscriptions_per_client ({limit})")
            client.offer(_error(sub, "too_many_subscriptions", f"at most {limit} subscriptions per connection; "
                                "leave one first"))
            return
        # The socket reads its next message only once a join is done, so it sees no disconnect meanwhile: a gone
        # client's join handler or sync read that never answered held its slot of max_clients, its queue and its
        # task until join_timeout_ms. The join runs in a task that the disconnect cancels (its calls leave the
        # engine's pending table: their late answers are dropped).
        if not client.watch_gone():
            return  # sent before it went: nobody to join for
        client.joining = task = asyncio.get_running_loop().create_task(self._run_join(client, sub_id, sub))
        try:
            await task  # a cancel of the socket's own task (the engine stops) cancels the join too
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        finally:
            client.joining = None

    async def _run_join(self, client: _Client, sub_id: str, sub: Subscription) -> None:
        # A join handler or a custom sync read that never answers would hold the socket (its next messages wait)
        # for as long as the worker lives.
        timeout_ms = self.settings.join_timeout_ms
        deadline = asyncio.get_running_loop().time() + timeout_ms / 1000
        try:
            async with asyncio.timeout_at(deadline):
                allowed = await self.join_triggers.authorize(self._payload(client, sub_id, sub))
        except JoinFailed as exc:
            self._not_joined(client, sub_id, sub)
            self._join_failed(client, sub, "join_failed", str(exc))
            return
        except TimeoutError:
            self._not_joined(client, sub_id, sub)
            self._join_failed(client, sub, "join_timeout", f"the stream:join handlers did not answer within "
                              f"{timeout_ms} ms (join_timeout_ms); join refused")
            return
        except asyncio.CancelledError:  # the client went (or the engine stops) while the handlers ran
            self._not_joined(client, sub_id, sub)
            raise
        if not allowed:
            client.offer(_frame(sub.stream_name, sub.group_id, sub.item_id, {"type": "unauthorized"}))
            return
        replaced = client.subscriptions.get(sub_id)
        sync: bytes | None = None
        client.hold()  # events from the subscription on wait for the sync (see _Client.hold)
        try:
            sync = await self._subscribe_and_read(client, sub_id, sub, replaced, deadline)
            if sync is not None:
                sync = client.pool.same_sync(sub, sync)
        finally:
            client.release(sync)
        if sync is not None:
            client.pool.keep_sync(sub, sync)

    async def _subscribe_and_read(self, client: _Client, sub_id: str, sub: Subscription,
                                  replaced: Subscription | None, deadline: float) -> bytes | None:
        """Subscribe ``client`` and read the join's sync: its frame, or ``None`` when it failed (told to the client
        by an error frame)."""
        timeout_ms = self.settings.join_timeout_ms
        self._subscribe(client, sub_id, sub)
        if replaced is not None and replaced != sub:
            # the subscription it had under this id is gone: its leave handlers hear of it now, not never (at
            # disconnect they get the new one only)
            self.leave_triggers.run_detached(self._payload(client, sub_id, replaced))
        if self._pump is None:
            # before the sync read: no change falls between the two. Within the join's deadline: a store that does
            # not answer held every join for its own timeout (60 s).
            try:
                async with asyncio.timeout_at(deadline):
                    await self._open_feed()
            except TimeoutError:
                self._join_failed(client, sub, "join_timeout", f"the store's event feed did not open within "
                                  f"{timeout_ms} ms (join_timeout_ms); joined: live events follow once it opens, "
                                  "without a sync")
                return None
        try:
            async with asyncio.timeout_at(deadline):
                if sub.item_id is None:
                    # as text: a 50,000-item group decoded and encoded again held the event loop 95 to 300 ms a join
                    group = await self.functions.read_group_text(sub.stream_name, sub.group_id)
                    return _sync_frame(sub.stream_name, sub.group_id, group)
                data = await self.functions.read_item(sub.stream_name, sub.group_id, sub.item_id)
        except TimeoutError:
            source = self.functions.sync_source(sub.stream_name, sub.item_id)
            self._join_failed(client, sub, "join_timeout", f"the sync read ({source}) did not answer within "
                              f"{timeout_ms} ms (join_timeout_ms); joined: live events follow, without a sync")
            return None
        except EngineError as exc:
            self._join_failed(client, sub, "sync_failed", f"the sync read failed: {exc.code}: {exc.message}; "
                              "joined: live events follow, without a sync")
            return None
        return _frame(sub.stream_name, sub.group_id, sub.item_id, {"type": "sync", "data": data})

    def _not_joined(self, client: _Client, sub_id: str, sub: Subscription) -> None:
        """The ``stream:join`` handlers heard of this join but gave no answer (timed out, or the client went):
        the subscription never came to be, yet a handler may have acted on it (presence), so the leave handlers
        hear of its end now, as they do for every join not refused. Not when it repeats the subscription the
        client has under that id: that one is still live and gets its leave when it ends."""
        if client.subscriptions.get(sub_id) != sub:
            self.leave_triggers.run_detached(self._payload(client, sub_id, sub))

    def _join_failed(self, client: _Client, sub: Subscription, code: str, message: str) -> None:
        self.failed_joins += 1
        self._failed_joins_log.lost(code, f"stream client {client.ws.remote_address}, join of {sub.stream_name:.200}/"
                                          f"{sub.group_id:.200}/{sub.item_id!s:.200}: {code}: {message:.500}")
        client.offer(_error(sub, code, message))

    @staticmethod
    def _refuse(client: _Client, code: str, message: Any, why: str) -> None:
        """Answer a message the socket does not act on with an ``error`` event naming ``why``; the names its
        ``data`` carries as strings are echoed back (the others as null)."""
        data = message.get("data") if isinstance(message, Mapping) else None
        client.offer(_frame(_named(data, "streamName"), _named(data, "groupId"), _named(data, "id"),
                            {"type": "error", "code": code, "message": why}))

    def _ignored(self, kind: str, what: str) -> None:
        self.ignored_messages += 1
        self._ignored_log.lost(kind, what)

    def _log_ignored(self, counts: Mapping[str, int], latest: str | None) -> None:
        by_kind = counts_text(counts)
        latest_text = latest_tail(latest)
        log.info("%d stream client message(s) ignored or refused since the last report (%s), %d in all%s",
                 sum(counts.values()), by_kind, self.ignored_messages, latest_text)

    def _log_failed_joins(self, counts: Mapping[str, int], latest: str | None) -> None:
        by_code = counts_text(counts)
        latest_text = latest_tail(latest)
        log.warning("%d stream socket join(s) failed since the last warning (%s), %d in all%s",
                    sum(counts.values()), by_code, self.failed_joins, latest_text)

    # -- events --------------------------------------------------------------------------------------------

    def _missed(self, what: str, *, quiet_if_none: bool = False) -> None:
        """Events may be lost for every client now connected: each is closed with 1013, to re-sync."""
        # a client with no subscription and no join under way has nothing to re-sync
        clients = [client for client in self._clients if not client.overflowed
                   and (client.subscriptions or (client.joining is not None and not client.joining.done()))]
        if quiet_if_none and not clients:
            return
        log.warning("%s; closing %d stream client(s) with 1013 so they re-join and re-sync", what, len(clients))
        for client in clients:
            client.fall_behind(_MISSED)

    def _fan_out(self, event: StreamEvent) -> None:
        stream, group = event.get("streamName"), event.get("groupId")
        if not (isinstance(stream, str) and isinstance(group, str)):
            return  # no subscription can match it
        watchers = self._watchers.get((stream, group))
        if not watchers:
            return
        frame: bytes | None = None
        for client in tuple(watchers):
            if client.wants(event):
                if frame is None:
                    try:
                        frame = dumps(event).encode()
                    except ValueError as exc:  # e.g. a lone surrogate from a custom store: no UTF-8 form
                        log.warning("stream event on %s/%s not sent to sockets: %s", stream, group, exc)
                        return
                client.offer(frame)

    async def _forward(self, watch: Watch, subscribed: bool = True) -> None:
        """Fan the feed's events out until cancelled; resubscribes after a lag or a lost feed (``subscribed``
        False: ``watch`` is not subscribed yet).

        Whenever events may have been missed (the feed lagged, lost its connection, failed), every connected
        client is closed with 1013 so it reconnects and joins again, getting a fresh sync: before, clients just
        stopped seeing the missed changes, with a warning in the engine's log only.
        """
        loop = asyncio.get_running_loop()
        pause = _FEED_RETRY_S
        opened_at = loop.time()
        try:
            while True:
                if not subscribed:
                    try:
                        await watch.open()
                    except Exception as exc:  # e.g. Redis is down: keep trying, less often the longer it lasts
                        self._missed(f"the stream socket cannot subscribe to the store's events ({exc!r}); "
                                     f"next attempt in {pause:g} s")
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, _FEED_RETRY_MAX_S)
                        continue
                    subscribed, opened_at = True, loop.time()
                    # A client that joined while the feed was not subscribed (the pump's pause, the re-open) read
                    # its sync before the subscription: the changes in between reach it through neither. Closing
                    # clients only when the feed failed let one that joined in that window miss them silently.
                    self._missed("the stream socket subscribed to the store's events again", quiet_if_none=True)
                try:
                    async for event in watch:
                        self._fan_out(event)
                    # ended without an error (its store's reader stopped): returning would leave the feed marked
                    # open and every client without events, silently, until the last one left
                    what = "the store's event feed ended; resubscribing"
                except StreamGapError as exc:  # the same watch reads on: the store's error says what it missed
                    self._missed(f"the store's event feed missed events ({exc})")
                    continue
                except StreamLagError as exc:  # a slow reader, not a failing store: at once
                    self._missed(f"the stream socket fell behind the store's events ({exc}); resubscribing")
                    what = ""
                except Exception as exc:  # e.g. Redis went away: keep trying
                    what = f"the stream socket lost the store's event feed ({exc!r}); resubscribing"
                if what:
                    # A feed that opens and then fails at once, again and again, closed every client each time at
                    # a fixed 0.5 s (a reconnect storm): the pause grows until a feed stays up. Not "until it
                    # delivers": one that passes one event and fails would still close every client twice a second.
                    if loop.time() - opened_at >= _FEED_RETRY_MAX_S:
                        pause = _FEED_RETRY_S
                    self._missed(f"{what} in {pause:g} s")
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, _FEED_RETRY_MAX_S)
                await _close_watch(watch)
                watch = self._watch = self.store.watch()
                subscribed = False
        finally:
            # also when cancelled by _close_feed: the store's subscription goes with it. Taken off self._watch so
            # _close_feed does not start a second close of it (one more task counted against _UNSUBSCRIBING_MAX)
            if self._watch is watch:
                self._watch = None
            self._unsubscribe(watch)
