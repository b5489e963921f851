"""The registry of channels: :class:`ChannelRelay`, what the engine, its listener and its modules call.

It creates channels (``engine::channels::create``), checks upgrades, hands accepted ends to the driver, and owns
the lifetimes: attach deadlines, discard, removal of an owner's unattached channels, shutdown.

Example:
    >>> relay = ChannelRelay()
    >>> refs = relay.create(8, owner="worker-1")
    >>> refs["writer"]["direction"], refs["reader"]["direction"]
    ('write', 'read')
    >>> relay.check(refs["writer"]["channel_id"], refs["reader"]["access_key"], "write")
    (404, 'Channel not found')
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import iii.ws_imports  # isort: skip - websockets loads whole there, under one lock (see there)
from websockets.asyncio.server import ServerConnection

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.channel_end import ChannelCloseCode, ChannelEnd, WebSocketEnd, close_draining
from iii_streams.deadlines import finish_within

from ..closing import CLOSE_TIMEOUT_S
from .driver import Driver, LiveChannel, perform
from .limits import (
    DEFAULT_ATTACH_TIMEOUT_S,
    DEFAULT_BUFFER_SIZE,
    DEFAULT_MAX_HELD_BYTES,
    DEFAULT_MAX_HELD_BYTES_PER_WORKER,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_OPEN_CHANNELS,
    DEFAULT_MAX_OPEN_PER_WORKER,
    DEFAULT_MAX_QUEUED_BYTES,
    ORPHAN_GRACE_S,
    SOCKETS_PER_WORKER_DIVISOR,
    TooManyChannels,
    clamp_buffer_size,
    default_max_sockets,
)
from .local import ChannelRefused, LocalChannelEnd, LocalReader, LocalRelayEnd, Pipe
from .machine import Action, ChannelMachine, Close, HeldBytes, Side
from .policy import policy_for

log = logging.getLogger(__name__)


_ID_BATCH = 256
# Ids and keys made ahead, _ID_BATCH channels' from one urandom call; popped from the end, each handed out once.
_ready_ids: list[tuple[str, str, str]] = []
# A forked child must not hand out the ids its parent has ready too (as the random module reseeds after a fork).
os.register_at_fork(after_in_child=_ready_ids.clear)

# Random bytes become text through one translate each: a byte's low 4 bits pick a hex digit, its low 6 bits one of the
# 64 URL-safe base64 characters (256 is a multiple of both, so every character is equally likely).
_HEX_DIGITS = bytes(b"0123456789abcdef"[b & 15] for b in range(256))
_KEY_CHARS = bytes(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[b & 63] for b in range(256))
# The UUID's variant digit (RFC 4122: 8, 9, a or b), from the hex digit drawn there.
_VARIANT_DIGITS = bytes(b"89ab"[int(chr(b), 16) & 3] if chr(b) in "0123456789abcdef" else 0 for b in range(256))
_UUID_SLOT = 37  # 36 characters, then a space
_KEY_SLOT = 33  # 32 characters (192 bits), then a space


def _make_ids() -> None:
    """Make :data:`_ID_BATCH` channels' ids and keys from one ``os.urandom`` call, in a fixed number of C-level
    passes over the whole batch and none per channel.

    Why: formatting each UUID in Python (slices and an f-string) and base64-encoding the keys made ids and keys the
    largest part of the REST API's per-request channel cost (two channels per request): a channel cost ~5.2k
    instructions in all, ~3.6k with this. Each character comes from its own random byte (:data:`_HEX_DIGITS`,
    :data:`_KEY_CHARS`); the dashes, the version digit (4) and the spaces that ``split`` cuts at are written over
    whole columns of the batch at once.
    """
    count = _ID_BATCH
    raw = os.urandom((_UUID_SLOT + 2 * _KEY_SLOT) * count)
    uuids = bytearray(raw[:_UUID_SLOT * count].translate(_HEX_DIGITS))
    uuids[8::_UUID_SLOT] = uuids[13::_UUID_SLOT] = uuids[18::_UUID_SLOT] = uuids[23::_UUID_SLOT] = b"-" * count
    uuids[14::_UUID_SLOT] = b"4" * count  # version 4
    uuids[19::_UUID_SLOT] = uuids[19::_UUID_SLOT].translate(_VARIANT_DIGITS)
    uuids[36::_UUID_SLOT] = b" " * count
    keys = bytearray(raw[_UUID_SLOT * count:].translate(_KEY_CHARS))
    keys[32::_KEY_SLOT] = b" " * (2 * count)
    ids = uuids.decode().split()
    both = keys.decode().split()
    _ready_ids.extend(zip(ids, both[0::2], both[1::2], strict=True))


def _new_ids() -> tuple[str, str, str]:
    """A random (version 4) UUID for a channel id and two 192-bit URL-safe keys.

    Why made ahead in batches: ``uuid.uuid4()`` plus two ``secrets.token_urlsafe(24)`` cost several times more,
    and even one ``urandom`` call and its formatting per channel was a tenth of the REST API module's own cost per
    request (it creates two channels per request).

    Example:
        >>> import uuid
        >>> channel_id, writer_key, reader_key = _new_ids()
        >>> uuid.UUID(channel_id).version, len(writer_key), len(reader_key), writer_key != reader_key
        (4, 32, 32, True)
    """
    while True:
        # Take first, refill on failure: engines on other threads share the batch, and one could empty it between
        # a check and the take (each list.pop is atomic; a check-then-pop is not).
        try:
            return _ready_ids.pop()
        except IndexError:
            _make_ids()


def _fill_step(chunk_size: int, max_message_size: int) -> int:
    """The message size a filled body is cut into: message boundaries mean nothing in a filled stream, so never
    one the relay's own limit refuses (nor an empty one)."""
    return max(1, min(chunk_size, max_message_size))


class _Reserved:
    """A channel no end has attached to yet (created with ``owner=None``): its ids, keys and settings only.

    Why: the REST API module creates two channels per request and most handlers open neither (a plain JSON
    answer). A reserved channel costs a few slots instead of a machine, queue, signals and their teardown; it
    becomes a :class:`LiveChannel` (:meth:`ChannelRelay._live`) the moment anything attaches, reads its counters or
    waits on it, with the same deadline, keys and limits, so nothing outside can tell the difference. A
    :meth:`ChannelRelay.fill` before that is kept as the bytes to queue then (the writer counts as attached).
    """

    __slots__ = ("capacity", "chunk_size", "fill", "id", "max_bytes", "on_live", "reader_key", "writer_key")

    def __init__(self, channel_id: str, writer_key: str, reader_key: str, capacity: int,
                 max_bytes: int | None, fill: bytes | None = None, chunk_size: int = 0) -> None:
        self.id = channel_id
        self.writer_key = writer_key
        self.reader_key = reader_key
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.fill = fill
        self.chunk_size = chunk_size
        # Called once the channel is live, before the end that made it so attaches (see ChannelRelay.when_live).
        self.on_live: Callable[[], None] | None = None


class _Ended:
    """What is left of a channel whose stream ended before one of its ends attached: the writer failed (aborted,
    dropped, over quota) before any reader came, or the reader left before any writer came. Its keys and what that
    end gets when it attaches (4001 with the writer's reason, 4002), until the channel's attach deadline.

    Why: the live channel kept its queue (up to ``max_queued_bytes``, bytes no reader could ever get whole), its
    machine and its ``max_open`` slot until that deadline (300 s). This record is a few hundred bytes and holds no
    slot; the relay keeps at most ``max_open`` of them, the oldest dropped first (:meth:`ChannelRelay._keep_ended`).
    """

    __slots__ = ("action", "id", "reader_key", "writer_key")

    def __init__(self, channel_id: str, writer_key: str, reader_key: str, action: Action) -> None:
        self.id = channel_id
        self.writer_key = writer_key
        self.reader_key = reader_key
        self.action = action


class SocketSlot:
    """One channel socket's place under :attr:`ChannelRelay.max_sockets` and its creator's
    :attr:`~ChannelRelay.max_sockets_per_worker`: taken by :meth:`ChannelRelay.take_socket` before the upgrade is
    answered, given back by :meth:`release` once the connection is gone (its descriptor with it); a second release
    does nothing.

    Example:
        >>> relay = ChannelRelay(max_sockets=1)
        >>> channel_id = relay.create(None, owner="w")["writer"]["channel_id"]
        >>> slot = relay.take_socket(channel_id)
        >>> relay.take_socket(channel_id)[0]
        503
        >>> slot.release(); slot.release(); relay.socket_stats()["sockets"]
        0
    """

    __slots__ = ("_channel_id", "_creator", "_relay")

    def __init__(self, relay: ChannelRelay, creator: str | None, channel_id: str) -> None:
        self._relay: ChannelRelay | None = relay
        self._creator = creator
        self._channel_id = channel_id

    def release(self) -> None:
        """The socket is closed: its place is free."""
        relay, self._relay = self._relay, None
        if relay is not None:
            relay._socket_gone(self._creator, self._channel_id)


class ChannelRelay:
    """All channels of one engine.

    Args:
        max_message_size: largest message a writer may send; larger closes the writer with 1009 and aborts.
        attach_timeout_s: how long an end may stay unattached before the channel expires (4003).
        orphan_grace_s: how long a channel no end attached to outlives its creator's disconnect (:meth:`drop_owner`).
        max_channel_bytes: default byte quota of a channel (``None``: unlimited); ``create`` may set its own.
        max_queued_bytes: the relay stops reading a writer while this many payload bytes wait for the reader
            (besides ``buffer_size`` messages), so a channel holds at most this plus one message in its queue.
        max_open: channels kept at once; ``create`` past it raises :class:`TooManyChannels` (each channel's
            queue is bounded in bytes, their number is bounded here). A channel whose stream ended before one end
            attached (its writer failed first, or its reader left first) gives its slot back at once; the relay keeps
            at most ``max_open`` small records of those for the late end, the oldest dropped first.
        max_open_per_worker: channels one ``owner`` (the worker that created them) keeps at once, likewise.
        max_held_bytes: payload bytes the queues of all channels hold together; past it writers are not read
            (backpressure: nothing is refused or dropped), except that a channel whose reader is attached still
            takes one message at a time into its empty queue, so a transfer whose reader reads never stalls on
            the bytes other channels hold (:meth:`~.machine.ChannelMachine.room`). Writers waiting go on once the
            total is back under 7/8 of it, or their reader attaches. ``None`` (the default): no engine-wide bound.
        max_held_bytes_per_worker: the same for the channels one ``owner`` created (its parked and queued bytes),
            so one worker cannot take every other worker's room.
        max_sockets: channel sockets attached at once (each holds a descriptor); an upgrade past it is refused with
            HTTP 503 (:meth:`take_socket`). ``None``: a quarter of the process's open-file limit
            (:func:`~.limits.default_max_sockets`), so channel ends cannot take the descriptors workers need to
            connect. In-process ends (:meth:`open_local`) hold none and are not counted.
        max_sockets_per_worker: the same for the channels one worker created (whoever attaches their ends);
            ``None``: a quarter of ``max_sockets``.
        production_mode: behave like the production engine (see :mod:`iii_engine.channels`).

    Example:
        >>> relay = ChannelRelay(attach_timeout_s=60.0)
        >>> ref = relay.create(None, owner=None)["reader"]
        >>> relay.check(ref["channel_id"], ref["access_key"], "read") is None
        True
    """

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        attach_timeout_s: float = DEFAULT_ATTACH_TIMEOUT_S,
        max_channel_bytes: int | None = None,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        max_open: int = DEFAULT_MAX_OPEN_CHANNELS,
        max_open_per_worker: int = DEFAULT_MAX_OPEN_PER_WORKER,
        max_held_bytes: int | None = DEFAULT_MAX_HELD_BYTES,
        max_held_bytes_per_worker: int = DEFAULT_MAX_HELD_BYTES_PER_WORKER,
        production_mode: bool = False,
        orphan_grace_s: float = ORPHAN_GRACE_S,
        max_sockets: int | None = None,
        max_sockets_per_worker: int | None = None,
    ) -> None:
        if max_queued_bytes < 1:
            raise ValueError(f"max_queued_bytes must be >= 1, got {max_queued_bytes}")
        if max_open < 1:
            raise ValueError(f"max_open must be >= 1, got {max_open}")
        if max_open_per_worker < 1:
            raise ValueError(f"max_open_per_worker must be >= 1, got {max_open_per_worker}")
        if max_held_bytes is not None and max_held_bytes < 1:
            raise ValueError(f"max_held_bytes must be >= 1 or None, got {max_held_bytes}")
        if max_held_bytes_per_worker < 1:
            raise ValueError(f"max_held_bytes_per_worker must be >= 1, got {max_held_bytes_per_worker}")
        if max_sockets is not None and max_sockets < 1:
            raise ValueError(f"max_sockets must be >= 1 or None, got {max_sockets}")
        if max_sockets_per_worker is not None and max_sockets_per_worker < 1:
            raise ValueError(f"max_sockets_per_worker must be >= 1 or None, got {max_sockets_per_worker}")
        # Why: each attached end holds a descriptor and max_open_per_worker (20,000 channels, 40,000 ends) passed
        # any usual open-file limit: one worker attaching both ends of idle channels took all 1,024 of an engine's
        # descriptors, and a second worker's connect then failed (accept() got EMFILE).
        self.max_sockets = default_max_sockets() if max_sockets is None else max_sockets
        self.max_sockets_per_worker = (max(1, self.max_sockets // SOCKETS_PER_WORKER_DIVISOR)
                                       if max_sockets_per_worker is None else max_sockets_per_worker)
        self._sockets = 0
        self._sockets_by: dict[str, int] = {}
        #: channel upgrades refused by ``max_sockets`` or ``max_sockets_per_worker``
        self.refused_sockets = 0
        self._sockets_warned = False
        self._workers_warned: set[str] = set()  # creators refused at their bound, warned of once until under 7/8
        self._sockets_of: dict[str, int] = {}  # channel id -> its sockets attached
        # Why bytes across channels: each queue is bounded (max_queued_bytes), their number too (max_open), but not
        # their product: one worker's 40 channels of 16 MiB, written and closed with no reader, held 640 MiB for
        # the attach deadline (300 s), and 20,000 of them could hold 320 GB.
        self.max_held_bytes = max_held_bytes
        self.max_held_bytes_per_worker = max_held_bytes_per_worker
        # counted either way (held_stats); with no engine-wide bound, one never reached
        self._held = HeldBytes(sys.maxsize if max_held_bytes is None else max_held_bytes)
        # Each creator's share, while it has channels open (dropped with its last one).
        self._held_by: dict[str, HeldBytes] = {}
        # The share of the channels no worker created (the REST API's response channels, engine::channels::create
        # called by the engine): before, none, and 60 REST clients not reading their streamed responses held
        # 16 MiB each in the engine (+525 MB) until send_timeout cut them. Request bodies filled in at creation
        # are not counted here: the REST API bounds those itself (max_buffered_bytes).
        self._held_unowned = HeldBytes(max_held_bytes_per_worker)
        self.max_open = max_open
        self.max_open_per_worker = max_open_per_worker
        # Open channels by the worker that created them, whatever the policy (production mode keeps no owner for
        # cleanup, but its channels still count against their creator's bound).
        self._creator: dict[str, str] = {}
        self._open_by: dict[str, int] = {}
        if max_channel_bytes is not None and max_channel_bytes < 0:
            raise ValueError(f"max_channel_bytes must be >= 0 or None, got {max_channel_bytes}")
        self.max_message_size = max_message_size
        self.max_queued_bytes = max_queued_bytes
        self.max_channel_bytes = max_channel_bytes
        self.attach_timeout_s = attach_timeout_s
        self.orphan_grace_s = orphan_grace_s
        # drop_owner's timers, cancelled by close(), and the channels they keep (at most max_open_per_worker)
        self._orphan_timers: set[asyncio.TimerHandle] = set()
        self._orphans_kept = 0
        self.production_mode = production_mode
        self.policy = policy_for(production_mode)
        self._channels: dict[str, LiveChannel] = {}
        # Channels by the worker that created them (only where the policy removes them with it): a disconnect
        # looks at its own channels, not at every channel of the engine.
        self._by_owner: dict[str, dict[str, LiveChannel]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        # Mirrors self._idle, so creating and removing channels touch the Event (a Python call each) only when
        # the relay turns busy or idle, not for every channel.
        self._is_idle = True
        # Attach deadlines: every channel gets the same timeout at creation, so creation order is deadline order
        # and one timer for the oldest serves them all. Why not a loop.call_later per channel: a TimerHandle
        # per create plus its cancel was ~15 % of the REST API's per-request channel cost, and every cancelled
        # handle stays in the loop's heap until it surfaces (the REST API discards its two channels per request
        # long before the 300 s deadline). Entries leave with the channel (_forget); a channel whose ends both
        # attached stays until its deadline passes and is then dropped from here, untouched.
        self._pending: dict[str, tuple[float, LiveChannel | _Reserved | _Ended]] = {}
        # Channels created with owner=None that no end attached to yet (see _Reserved); ids are in one of the three.
        self._reserved: dict[str, _Reserved] = {}
        # Channels that ended before one end attached (see _Ended), oldest first; not counted as open channels.
        self._ended: dict[str, _Ended] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._driver = Driver(self._spawn, self._finished, self._keep_ended)
        self._stopping = False  # the engine's stop began (stopping()): an end that attaches now is closed at once

    # ------------------------------------------------------------------ creation and lookup

    def create(self, buffer_size: int | None, owner: str | None, max_bytes: int | None = None) -> dict[str, Any]:
        """``engine::channels::create``: ``{"writer": ref, "reader": ref}`` (docs/protocol.md#channels,
        docs/protocol.md#channel-improvements C6/C7).

        ``max_bytes`` caps the bytes the writer may send over the channel (docs/protocol.md#channel-improvements C8;
        the relay's
        ``max_channel_bytes`` when ``None``); going past it closes the writer with 1009 and aborts the reader.
        """
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        if len(self._channels) + len(self._reserved) >= self.max_open:
            raise TooManyChannels(f"too many open channels (channels.max_open {self.max_open})")
        if owner is not None and self._open_by.get(owner, 0) >= self.max_open_per_worker:
            raise TooManyChannels(f"too many open channels created by this worker "
                                  f"(channels.max_open_per_worker {self.max_open_per_worker})")
        policy = self.policy
        channel_id, writer_key, reader_key = _new_ids()
        if not policy.separate_keys:
            reader_key = writer_key
        if owner is None:
            reserved = _Reserved(channel_id, writer_key, reader_key, clamp_buffer_size(buffer_size),
                                 self.max_channel_bytes if max_bytes is None else max_bytes)
            self._reserved[channel_id] = reserved
            if self._is_idle:
                self._busy()
            self._arm_deadline(reserved)
            return {
                "writer": {"channel_id": channel_id, "access_key": writer_key, "direction": "write"},
                "reader": {"channel_id": channel_id, "access_key": reader_key, "direction": "read"},
            }
        share = self._held_by.get(owner)
        if share is None:
            share = self._held_by[owner] = HeldBytes(self.max_held_bytes_per_worker)
        machine = ChannelMachine(
            channel_id, capacity=clamp_buffer_size(buffer_size), max_queued_bytes=self.max_queued_bytes,
            max_message_size=self.max_message_size,
            max_bytes=self.max_channel_bytes if max_bytes is None else max_bytes, policy=policy,
            held=(self._held, share))
        channel = LiveChannel(machine, writer_key, reader_key, owner if policy.owner_cleanup else None)
        self._channels[channel_id] = channel
        if owner is not None:
            self._creator[channel_id] = owner
            self._open_by[owner] = self._open_by.get(owner, 0) + 1
        if channel.owner is not None:
            self._by_owner.setdefault(channel.owner, {})[channel_id] = channel
        if self._is_idle:
            self._busy()
        self._arm_deadline(channel)
        return {
            "writer": {"channel_id": channel_id, "access_key": writer_key, "direction": "write"},
            "reader": {"channel_id": channel_id, "access_key": reader_key, "direction": "read"},
        }

    def reserve_pair(self, body: bytes | bytearray,
                     chunk_size: int) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
        """Two channels at once, as two ``create(None, owner=None)`` would make them, the first one's stream
        written as ``fill(.., body, chunk_size)`` would (ours; the REST API module's request body and response
        channels): ``((channel_id, writer_key, reader_key), (channel_id, writer_key, reader_key))``.

        Why: the REST API makes both for every request and most handlers open neither. One call takes both ids,
        one clock reading gives both their (identical) deadlines, and no ref dicts are built: the module builds
        only the two refs it hands its handler.

        Raises:
            TooManyChannels: fewer than two channels left under ``max_open`` (neither is made).

        Example:
            >>> relay = ChannelRelay()
            >>> (body_id, _, _), (response_id, _, _) = relay.reserve_pair(b"abc", chunk_size=2)
            >>> relay.stats(body_id)["queued"], len(relay)
            (2, 2)
        """
        reserved = self._reserved
        if len(self._channels) + len(reserved) + 2 > self.max_open:
            raise TooManyChannels(f"too many open channels (channels.max_open {self.max_open})")
        while True:  # as _new_ids: take first, refill on failure (an id taken and lost is merely unused)
            try:
                first = _ready_ids.pop()
                second = _ready_ids.pop()
                break
            except IndexError:
                _make_ids()
        policy = self.policy
        if not policy.separate_keys:
            first = (first[0], first[1], first[1])
            second = (second[0], second[1], second[1])
        max_bytes = self.max_channel_bytes
        quota = max_bytes if policy.quotas else None
        if quota is None:
            fill = bytes(body)
        else:  # only what _queue_all would feed the machine (see fill)
            step = _fill_step(chunk_size, self.max_message_size)
            fill = bytes(memoryview(body)[:(quota // step + 1) * step])
        body_channel = _Reserved(first[0], first[1], first[2], DEFAULT_BUFFER_SIZE, max_bytes, fill, chunk_size)
        response_channel = _Reserved(second[0], second[1], second[2], DEFAULT_BUFFER_SIZE, max_bytes)
        reserved[first[0]] = body_channel
        reserved[second[0]] = response_channel
        if self._is_idle:
            self._busy()
        if self.attach_timeout_s > 0:  # _arm_deadline, for both
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # created outside a loop (doctest, sync setup): no deadline
                return first, second
            deadline = loop.time() + self.attach_timeout_s
            pending = self._pending
            pending[first[0]] = (deadline, body_channel)
            pending[second[0]] = (deadline, response_channel)
            if self._sweep is None:
                self._sweep = loop.call_at(deadline, self._expire_due)
        return first, second

    def check(self, channel_id: str, key: str | None, direction: str | None) -> tuple[int, str] | None:
        """``(status, body)`` to refuse the upgrade with, or ``None`` to accept it."""
        if key is None or direction not in ("read", "write"):
            return (400, "Invalid channel request: need key and dir=read|write")
        channel: LiveChannel | _Reserved | _Ended | None = self._channels.get(channel_id)
        if channel is None:
            channel = self._reserved.get(channel_id) or self._ended.get(channel_id)
            if channel is None:
                return (404, "Channel not found")
        expected = channel.writer_key if direction == "write" else channel.reader_key
        if not hmac.compare_digest(key.encode(), expected.encode()):
            return (404, "Channel not found")
        return None

    def take_socket(self, channel_id: str) -> SocketSlot | tuple[int, str]:
        """A place for a channel socket about to be accepted (the listener calls it once :meth:`check` passed,
        before the 101, and releases the slot once the connection is lost), or the ``(503, body)`` refusing it:
        :attr:`max_sockets` sockets are attached, or :attr:`max_sockets_per_worker` for the channels the worker
        that created this one made. The body names the bound; the client may try again once ends are closed."""
        if self._sockets >= self.max_sockets:
            return self._refuse_socket(f"too many channel sockets attached to this engine "
                                       f"(ChannelRelay.max_sockets {self.max_sockets}); try again later")
        creator = self._creator.get(channel_id)
        # The second end of a channel whose first is attached passes its creator's bound: it lets the channel's
        # bytes move and both places go back (refused, channels half attached held every place and waited for the
        # attach deadline: fan-out wider than half the bound stalled 5 minutes, then failed)
        peer_attached = channel_id in self._sockets_of
        if creator is not None:
            held = self._sockets_by.get(creator, 0)
            if held >= self.max_sockets_per_worker and not peer_attached:
                return self._refuse_socket(f"too many channel sockets attached for the channels worker {creator} "
                                           f"created (ChannelRelay.max_sockets_per_worker "
                                           f"{self.max_sockets_per_worker}); try again later", creator)
            self._sockets_by[creator] = held + 1
        self._sockets += 1
        self._sockets_of[channel_id] = self._sockets_of.get(channel_id, 0) + 1
        return SocketSlot(self, creator, channel_id)

    def _refuse_socket(self, why: str, creator: str | None = None) -> tuple[int, str]:
        self.refused_sockets += 1
        # once per bound until its sockets are back under 7/8 of it (the engine's, and each worker's: one flag for
        # both was armed again by any socket's close, a line per refusal of a worker at its bound)
        if creator is None:
            warn = not self._sockets_warned
            self._sockets_warned = True
        else:
            warn = creator not in self._workers_warned
            self._workers_warned.add(creator)
        if warn:
            log.warning("refusing channel upgrades with HTTP 503: %s (%d refused so far)", why, self.refused_sockets)
        return (503, why + "\n")

    def _socket_gone(self, creator: str | None, channel_id: str) -> None:
        self._sockets -= 1
        left_of = self._sockets_of[channel_id] - 1
        if left_of:
            self._sockets_of[channel_id] = left_of
        else:
            del self._sockets_of[channel_id]
        if creator is not None:
            left = self._sockets_by[creator] - 1
            if left:
                self._sockets_by[creator] = left
            else:
                del self._sockets_by[creator]
            if (creator in self._workers_warned
                    and left <= self.max_sockets_per_worker - self.max_sockets_per_worker // 8):
                self._workers_warned.discard(creator)
        if self._sockets_warned and self._sockets <= self.max_sockets - self.max_sockets // 8:
            self._sockets_warned = False

    def socket_stats(self) -> dict[str, Any]:
        """Channel sockets as they stand (ours; for tests and monitoring): ``sockets`` attached, ``max_sockets``,
        ``max_sockets_per_worker``, ``by_worker`` (sockets per creator) and ``refused`` (upgrades refused so far).

        Example:
            >>> ChannelRelay(max_sockets=8).socket_stats()
            {'sockets': 0, 'max_sockets': 8, 'max_sockets_per_worker': 2, 'by_worker': {}, 'refused': 0}
        """
        return {"sockets": self._sockets, "max_sockets": self.max_sockets,
                "max_sockets_per_worker": self.max_sockets_per_worker, "by_worker": dict(self._sockets_by),
                "refused": self.refused_sockets}

    async def wait_full(self, channel_id: str) -> None:
        """Wait until the channel's queue is full (``buffer_size`` messages, or ``max_queued_bytes`` bytes) and the
        relay has stopped reading its writer (ours; lets tests observe backpressure without polling).

        Raises:
            KeyError: no such channel.
        """
        ch = self._live(channel_id)
        if ch.machine.full:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ch.full_waiters.append(waiter)
        await waiter

    def stats(self, channel_id: str) -> dict[str, int | None]:
        """Counters of a live channel (ours; for tests and monitoring).

        ``queued``/``capacity``/``peak``: messages in the queue, its limit, the most it ever held;
        ``queued_bytes``/``peak_bytes``/``max_queued_bytes``: the same in payload bytes; ``socket_bytes``: bytes
        received from the writer socket (or waiting in a local writer end) but not yet taken by the relay;
        ``bytes_in``/``max_bytes``: the lifetime byte count and quota (``bytes_in`` is only counted under a quota).

        Raises:
            KeyError: no such channel, or it ended before one of its ends attached (nothing is left to count).
        """
        ch = self._live(channel_id)
        m = ch.machine
        socket_bytes = ch.writer_end.unread_bytes() if ch.writer_end is not None else 0
        return {"queued": len(m.items), "capacity": m.capacity, "peak": m.peak_items,
                "queued_bytes": m.queued_bytes, "peak_bytes": m.peak_bytes,
                "max_queued_bytes": self.max_queued_bytes, "socket_bytes": socket_bytes,
                "bytes_in": m.bytes_in, "max_bytes": m.max_bytes}

    def held_bytes(self) -> int:
        """Payload bytes the relay holds for all its channels: their queues and the reserved channels' filled
        streams (ours; for tests and monitoring). Costs O(channels).

        Example:
            >>> relay = ChannelRelay()
            >>> ref = relay.create(None, owner=None)["writer"]
            >>> relay.fill(ref["channel_id"], ref["access_key"], b"abc", chunk_size=2)
            >>> relay.held_bytes()
            3
        """
        held = sum(ch.machine.queued_bytes for ch in self._channels.values())
        return held + sum(len(reserved.fill) for reserved in self._reserved.values() if reserved.fill is not None)

    def held_stats(self) -> dict[str, Any]:
        """The held-bytes bounds as they stand (ours; for tests and monitoring): ``held_bytes`` and
        ``peak_held_bytes`` of every live channel's queue (a reserved channel's filled stream counts once it is
        live), ``max_held_bytes``, ``max_held_bytes_per_worker``, ``by_worker`` (bytes held per creator), and
        ``unowned`` and ``peak_unowned`` (those of the channels no worker created, against one
        ``max_held_bytes_per_worker``).

        Example:
            >>> relay = ChannelRelay(max_held_bytes_per_worker=1024)
            >>> refs = relay.create(None, owner="w")
            >>> relay.held_stats()["by_worker"], relay.held_stats()["max_held_bytes_per_worker"]
            ({'w': 0}, 1024)
        """
        return {"held_bytes": self._held.held, "peak_held_bytes": self._held.peak,
                "max_held_bytes": self.max_held_bytes, "max_held_bytes_per_worker": self.max_held_bytes_per_worker,
                "by_worker": {worker: share.held for worker, share in self._held_by.items()},
                "unowned": self._held_unowned.held, "peak_unowned": self._held_unowned.peak}

    def discard(self, channel_id: str) -> None:
        """Drop a channel now, whatever its state (ours; the REST API module calls it after each request).

        An attached writer is closed with 4002, an attached reader with 4001 (reason "channel discarded"); queued
        messages are dropped and the ids stop resolving. Unknown or already removed ids are ignored.

        Example:
            >>> relay = ChannelRelay()
            >>> channel_id = relay.create(None, owner=None)["reader"]["channel_id"]
            >>> relay.discard(channel_id); relay.discard(channel_id); len(relay)
            0
        """
        if channel_id in self._reserved:  # nothing attached, nothing to tell (the REST API's usual case)
            self._forget(channel_id)
            return
        ch = self._channels.get(channel_id)
        if ch is None:
            if channel_id in self._ended:
                self._forget(channel_id)
            return
        ch.cancel_deadline()
        for action in ch.machine.discard():
            self._driver.act_later(ch, action)
        ch.wake()
        self._forget(channel_id)

    async def wait_idle(self) -> None:
        """Wait until no channel is left (ours; tests await it to check that finished channels are removed)."""
        await self._idle.wait()

    def __len__(self) -> int:
        """Number of live channels (ours; tests use it to check removal); a channel that ended before one end
        attached is not one any more."""
        return len(self._channels) + len(self._reserved)

    def __contains__(self, channel_id: object) -> bool:
        return channel_id in self._channels or channel_id in self._reserved

    def when_live(self, channel_id: str, callback: Callable[[], None]) -> bool:
        """Call ``callback`` once, as soon as anything attaches to the channel (or reads its counters), before that
        end is attached; ``False`` (and no call) when the channel is already live or unknown (ours; the REST API
        module opens its response end then, and not at all for a handler that only returns a result).

        A callback must not raise. It is dropped with the channel.

        Example:
            >>> relay = ChannelRelay()
            >>> refs = relay.create(None, owner=None)
            >>> seen = []
            >>> relay.when_live(refs["reader"]["channel_id"], lambda: seen.append(1))
            True
            >>> _ = relay.stats(refs["reader"]["channel_id"]); seen
            [1]
        """
        reserved = self._reserved.get(channel_id)
        if reserved is None:
            return False
        reserved.on_live = callback
        return True

    def _live(self, channel_id: str) -> LiveChannel:
        """The channel as a :class:`LiveChannel`, made live now if it was only reserved.

        Raises:
            KeyError: no such channel.
        """
        ch = self._channels.get(channel_id)
        if ch is not None:
            return ch
        reserved = self._reserved.pop(channel_id)
        machine = ChannelMachine(
            channel_id, capacity=reserved.capacity, max_queued_bytes=self.max_queued_bytes,
            max_message_size=self.max_message_size, max_bytes=reserved.max_bytes, policy=self.policy,
            held=(self._held,) if reserved.fill is not None else (self._held, self._held_unowned))
        ch = LiveChannel(machine, reserved.writer_key, reserved.reader_key, None)
        if reserved.fill is not None:
            # Before the channel is registered: a stream over quota stays a live channel here (an end is attaching
            # to it) rather than become an _Ended record under the caller's feet.
            refusal = self._driver.attach(ch, Side.WRITER)
            assert refusal is None, "a new channel's write end is free"
            self._queue_all(ch, reserved.fill, reserved.chunk_size)
        self._channels[channel_id] = ch
        entry = self._pending.get(channel_id)
        if entry is not None:  # same place in the deadline order
            self._pending[channel_id] = (entry[0], ch)
        if reserved.on_live is not None:
            reserved.on_live()
        return ch

    # ------------------------------------------------------------------ serving one end

    async def serve(self, ws: ServerConnection, channel_id: str, key: str, direction: str) -> None:
        """Run one accepted channel end until it is done."""
        await self._serve_end(WebSocketEnd(ws), channel_id, key, direction)

    def open_local(self, channel_id: str, key: str, direction: str) -> LocalChannelEnd:
        """Attach an engine-internal end to a channel without a socket (ours; the REST API module uses it).

        The end goes through the same queue, backpressure, close codes and cleanup as a socket end; only the
        WebSocket handshake and framing are skipped. Remote workers keep using sockets.

        Raises:
            ChannelRefused: the key, direction or channel is wrong (the HTTP status a socket would have got).

        Example:
            >>> refs = relay.create(8, owner=None)  # doctest: +SKIP
            >>> reader = relay.open_local(**refs["reader"])  # doctest: +SKIP
            >>> [message async for message in reader]  # doctest: +SKIP
            [b'chunk']
        """
        refused = self.check(channel_id, key, direction)
        if refused is not None:
            raise ChannelRefused(*refused)
        if direction == "read":
            ended = self._ended.get(channel_id)
            if ended is not None:
                action = self._attach_ended(ended, Side.READER)
                return LocalReader.refused(action.code if isinstance(action, Close) else None,
                                           action.reason if isinstance(action, Close) else "")
            return self._open_reader(self._live(channel_id))
        pipe = Pipe()
        end = LocalRelayEnd(pipe, writes=direction == "write")
        task: asyncio.Task[None] = asyncio.ensure_future(self._serve_end(end, channel_id, key, direction))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Like a server connection whose handler returned, died or was cancelled (even before it started, at
        # shutdown): the local side must not wait forever. A no-op when the relay already closed the end.
        task.add_done_callback(lambda _: end.abort())
        return LocalChannelEnd(channel_id, direction, pipe)

    def _open_reader(self, ch: LiveChannel) -> LocalReader:
        """A :class:`LocalReader` for ``ch``: attached now, served by whoever reads it (no task)."""
        refusal = self._driver.attach(ch, Side.READER)
        if refusal is not None:
            return LocalReader.refused(refusal.code, refusal.reason)
        return LocalReader(ch, lambda: self._driver.reader_detached(ch))

    def fill(self, channel_id: str, key: str, data: bytes | bytearray, chunk_size: int) -> None:
        """Attach the write end in-process and write ``data`` as the channel's whole stream, ended normally, at once
        (ours; the REST API module writes each request body with it).

        The messages are ``chunk_size`` bytes each, at most the relay's ``max_message_size`` (none for an empty
        ``data``). No task runs and the queue holds them all: the caller already holds the bytes, so there is
        nothing to push back on. The channel's byte quota still applies (exhausted, it aborts the stream for the
        reader).

        Raises:
            ChannelRefused: the key or channel is wrong, or the write end is already attached.

        Example:
            >>> relay = ChannelRelay()
            >>> ref = relay.create(None, owner=None)["writer"]
            >>> relay.fill(ref["channel_id"], ref["access_key"], b"abc", chunk_size=2)
            >>> relay.stats(ref["channel_id"])["queued"]
            2
        """
        refused = self.check(channel_id, key, "write")
        if refused is not None:
            raise ChannelRefused(*refused)
        reserved = self._reserved.get(channel_id)
        if reserved is not None:  # kept until the channel is live: a reader may never come
            if reserved.fill is not None:
                raise ChannelRefused(409, "channel write end is already attached")
            quota = reserved.max_bytes if self.policy.quotas else None
            if quota is not None:
                # Only what _queue_all would feed the machine: every message up to the one crossing the quota
                # (it aborts the stream there). Keeping the rest would hold up to max_body_bytes past the quota.
                step = _fill_step(chunk_size, self.max_message_size)
                reserved.fill = bytes(memoryview(data)[:(quota // step + 1) * step])
            else:
                reserved.fill = bytes(data)
            reserved.chunk_size = chunk_size
            return
        ended = self._ended.get(channel_id)
        if ended is not None:
            if ended.action.side is not Side.WRITER:  # kept for the reader: a write end was attached and failed
                raise ChannelRefused(409, "channel write end is already attached")
            # Kept for this write end: its reader left. The stream goes nowhere, as on a live channel whose reader
            # left; the end is told (here: nothing to tell) and the record goes, as _attach_ended does.
            self._forget(ended.id)
            return
        ch = self._channels[channel_id]
        if self._driver.attach(ch, Side.WRITER) is not None:
            raise ChannelRefused(409, "channel write end is already attached")
        self._queue_all(ch, data, chunk_size)

    def _queue_all(self, ch: LiveChannel, data: bytes | bytearray, chunk_size: int) -> None:
        """Write ``data`` from the (just attached) write end as the whole stream, and detach it."""
        machine = ch.machine
        chunk_size = _fill_step(chunk_size, machine.max_message_size)
        view = memoryview(data)
        for start in range(0, len(data), chunk_size):
            if machine.writer_message(False, bytes(view[start:start + chunk_size])) is not None:
                break  # the machine recorded the failure the reader will see
        else:
            machine.writer_closed(ChannelCloseCode.NORMAL, "")
        self._driver.writer_detached(ch)

    async def _serve_end(self, end: ChannelEnd, channel_id: str, key: str, direction: str) -> None:
        if self._stopping:
            await perform(end, Close(Side(direction), self.policy.wire_code(ChannelCloseCode.GOING_AWAY),
                                     "engine shutting down"))
            return
        refused = self.check(channel_id, key, direction)  # a reserved channel passes as a live one would
        channel = self._channels.get(channel_id)
        if channel is None and refused is None:
            if channel_id in self._reserved:
                channel = self._live(channel_id)
            elif channel_id in self._ended:
                await self._serve_ended(self._ended[channel_id], end, Side(direction))
                return
        if channel is None or refused is not None:
            # The channel expired or was removed between check() and the upgrade.
            await perform(end, Close(Side(direction), self.policy.wire_code(ChannelCloseCode.EXPIRED),
                                     "channel no longer exists"))
            return
        await self._driver.serve(channel, end, Side(direction))

    def _attach_ended(self, ended: _Ended, side: Side) -> Action:
        """``side`` attaches to a channel that ended before it came: what to do with that end. The end it was kept
        for is told once, and the record goes (a later connection finds no channel, as after a finished one); the
        other end is a second connection of an end that was attached (4009)."""
        if side is not ended.action.side:
            return Close(side, self.policy.wire_code(ChannelCloseCode.IN_USE),
                         f"channel {side.value} end is already attached")
        self._forget(ended.id)
        return ended.action

    async def _serve_ended(self, ended: _Ended, end: ChannelEnd, side: Side) -> None:
        action = self._attach_ended(ended, side)
        if side is Side.WRITER and isinstance(action, Close):
            # A writer may be streaming already: its messages are read and dropped until its Close reply.
            await close_draining(end, perform(end, action))
        else:
            await perform(end, action)

    # ------------------------------------------------------------------ lifetime

    def _arm_deadline(self, ch: LiveChannel | _Reserved) -> None:
        if self.attach_timeout_s <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # created outside a loop (doctest, sync setup): no deadline
            return
        deadline = loop.time() + self.attach_timeout_s
        self._pending[ch.id] = (deadline, ch)
        if self._sweep is None:
            self._sweep = loop.call_at(deadline, self._expire_due)

    def _expire_due(self) -> None:
        """The oldest pending deadline came: expire every channel whose deadline passed, re-arm for the next."""
        self._sweep = None
        pending = self._pending
        now = asyncio.get_running_loop().time()
        while pending:
            channel_id = next(iter(pending))
            deadline, ch = pending[channel_id]
            if deadline > now:
                self._sweep = asyncio.get_running_loop().call_at(deadline, self._expire_due)
                return
            del pending[channel_id]
            self._expire(ch)

    def _expire(self, ch: LiveChannel | _Reserved | _Ended) -> None:
        if isinstance(ch, _Ended):  # the late end never came
            self._forget(ch.id)
            return
        if isinstance(ch, _Reserved):  # nothing attached: nothing to tell
            log.info("channel %s expired (writer %s, reader new)", ch.id, "new" if ch.fill is None else "done")
            self._forget(ch.id)
            return
        m = ch.machine
        expired, action = m.expire()
        if not expired:  # both ends attached in time
            return
        log.info("channel %s expired (writer %s, reader %s)", ch.id, m.writer_state.value, m.reader_state.value)
        ch.wake()
        self._driver.act_later(ch, action)
        self._forget(ch.id)

    def _finished(self, ch: LiveChannel) -> None:
        ch.cancel_deadline()
        self._forget(ch.id)

    def _keep_ended(self, ch: LiveChannel, action: Action) -> None:
        """``ch``'s stream ended before one end attached (the driver's ``ended_early``): replace the live channel
        with an :class:`_Ended` record at the same place in the deadline order, giving back its slot; past
        ``max_open`` records, the oldest goes (its late end then finds no channel, as after its deadline)."""
        channel_id = ch.id
        if self._channels.get(channel_id) is not ch:  # already discarded or expired, or not registered yet
            return
        ch.cancel_deadline()
        self._drop_live(channel_id)
        ended = self._ended
        if len(ended) >= self.max_open:
            oldest = next(iter(ended))
            del ended[oldest]
            self._pending.pop(oldest, None)
        record = ended[channel_id] = _Ended(channel_id, ch.writer_key, ch.reader_key, action)
        entry = self._pending.get(channel_id)
        if entry is not None:  # same key, same place: the deadline order holds
            self._pending[channel_id] = (entry[0], record)
        if not self._channels and not self._reserved and not self._is_idle:
            self._became_idle()

    def _forget(self, channel_id: str) -> None:
        self._pending.pop(channel_id, None)
        # An id is either reserved (no owner, no creator: channels with an owner are made live), live or ended.
        if self._reserved.pop(channel_id, None) is None and self._ended.pop(channel_id, None) is None:
            self._drop_live(channel_id)
        if not self._channels and not self._reserved and not self._is_idle:
            self._became_idle()

    def _drop_live(self, channel_id: str) -> None:
        """Remove a live channel from the registry and from its creator's and owner's counts; what its queue still
        holds (nothing reaches its reader any more) goes back to the held-bytes bounds."""
        ch = self._channels.pop(channel_id, None)
        if ch is not None:
            ch.machine.drop_queue()
        creator = self._creator.pop(channel_id, None)
        if creator is not None:
            left = self._open_by[creator] - 1
            if left:
                self._open_by[creator] = left
            else:
                del self._open_by[creator]
                self._held_by.pop(creator, None)
        if ch is not None and ch.owner is not None:
            owned = self._by_owner.get(ch.owner)
            if owned is not None:
                owned.pop(channel_id, None)
                if not owned:
                    del self._by_owner[ch.owner]

    def _busy(self) -> None:
        self._is_idle = False
        self._idle.clear()

    def _became_idle(self) -> None:
        self._is_idle = True
        self._idle.set()

    def drop_owner(self, worker_id: str) -> None:
        """The worker that created channels disconnected: its channels that no end attached to go
        :attr:`orphan_grace_s` later (at once when it is 0 or there is no running loop), unless an end attaches
        meanwhile.

        Why a grace: the workers a channel's refs were handed to may attach after its creator left, which the
        reference SDK's ``create_channel`` shows (a script creates a channel for two workers, hands them the refs and
        exits) and production allows; removed at once, their ends got 404 and nothing was carried. Bounded: the
        channels still count against ``max_open`` until they go, and at most ``max_open_per_worker`` are kept so
        across all creators (past that, a disconnect's go at once, as before).

        Costs O(the worker's own live channels), whatever the number of other channels.
        """
        owned = self._by_owner.get(worker_id)
        if owned is None:
            return
        orphans = [ch.id for ch in owned.values() if ch.machine.unattached]
        if not orphans:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if (loop is None or self.orphan_grace_s <= 0
                or self._orphans_kept + len(orphans) > self.max_open_per_worker):
            # Past one worker's share kept so, they go at once: worker ids are per connection, so a creator that
            # reconnects in a loop kept 10,000s of orphans and filled max_open for everyone for the whole grace
            self._drop_orphans(worker_id, orphans)
            return
        timers = self._orphan_timers
        self._orphans_kept += len(orphans)

        def due() -> None:
            timers.discard(handle)
            self._orphans_kept -= len(orphans)
            self._drop_orphans(worker_id, orphans)

        handle = loop.call_later(self.orphan_grace_s, due)
        timers.add(handle)

    def _drop_orphans(self, worker_id: str, channel_ids: list[str]) -> None:
        """Remove those of ``channel_ids`` (created by ``worker_id``) that still have no attached end."""
        owned = self._by_owner.get(worker_id)
        if owned is None:
            return
        for channel_id in channel_ids:
            ch = owned.get(channel_id)
            if ch is not None and ch.machine.unattached:
                ch.cancel_deadline()
                self._forget(ch.id)

    def stopping(self) -> None:
        """The engine's stop begins, before its listener closes the sockets: every channel ends now, its attached
        ends closed with 1001 (no code in ``production_mode``) in the background, its queue dropped, and an end
        that attaches from now on is closed the same way. Why: a loop waiting on the other end (a writer on a full
        queue whose reader never came, a reader with no writer) never noticed the listener's close of its socket
        and held the listener's close, so the engine's stop, until the channel's attach deadline (300 s).

        Example:
            >>> relay = ChannelRelay()
            >>> channel_id = relay.create(4, owner="w")["writer"]["channel_id"]
            >>> relay.stopping(); relay._channels[channel_id].machine.stopped
            True
        """
        self._stopping = True
        driver = self._driver
        for ch in list(self._channels.values()):
            ch.cancel_deadline()
            for action in ch.machine.shutdown():
                driver.act_later(ch, action)
            ch.wake()

    async def close(self) -> None:
        """Engine shutdown: close every channel socket and forget every channel (see :meth:`stopping`, which
        the engine calls first). The closes (these and those :meth:`stopping` began) and the channels' tasks get
        :data:`~iii_engine.closing.CLOSE_TIMEOUT_S` together, then every end is dropped (a no-op for one closed):
        a close waits for its socket to drain, and a reader that never reads held it for good (a relay served on its
        own; the engine's stop had aborted its sockets already). So does a cancel of this close."""
        closing: list[Coroutine[Any, Any, None]] = []
        ends: list[ChannelEnd] = []
        for ch in list(self._channels.values()):
            ch.cancel_deadline()
            for action in ch.machine.shutdown():
                end = ch.end(action.side)
                if end is not None:
                    closing.append(perform(end, action))
            ends.extend(end for end in (ch.writer_end, ch.reader_end) if end is not None)
            ch.wake()
        self._channels.clear()
        self._reserved.clear()
        self._ended.clear()
        self._by_owner.clear()
        for timer in self._orphan_timers:
            timer.cancel()
        self._orphan_timers.clear()
        self._orphans_kept = 0
        self._creator.clear()
        self._open_by.clear()
        self._held_by.clear()
        self._held.waiting.clear()
        self._pending.clear()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._became_idle()
        pending = [*closing, *self._tasks]
        try:
            if pending:
                await finish_within(asyncio.gather(*pending, return_exceptions=True), CLOSE_TIMEOUT_S,
                                    "the channel sockets' closes", log)
        finally:
            for end in ends:
                end.abort()
        for task in list(self._tasks):
            task.cancel()
        self._stopping = False  # an engine started again serves channels again

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


__all__ = ["ChannelRelay", "SocketSlot"]
