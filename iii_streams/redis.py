"""``RedisStream``: the production engine's Redis layout, so our workers and a production engine can share one Redis.

Layout (docs/guides/streams.md#redis): one hash ``stream:<stream_name>:<group_id>`` per group, field = item id,
value = compact JSON text (key order, arrays and big integers preserved). Change events are published on the
channel ``stream::events`` in the production wrapper shape. ``set`` and ``delete`` run as a script (read old value,
write, publish) and ``list_groups`` uses ``SCAN`` (of hashes), never ``KEYS``.

``update`` applies :func:`iii.stream_ops.apply_ops` in Python (so JSON stays exact, big integers included) between
an ``HMGET`` of the items and a compare-and-set script that writes them, and publishes the events, only if every
item still holds the text read. The writes of one hash from one process (set, delete and update) are
group-committed (:class:`~iii_streams.batching.KeyedBatcher`): they queue, in the order they were made, and each
run of waiting sets and deletes goes out as one script, each run of updates as one read and one script covering
every item they touch, so callers in one process never race each other and the writes of one item keep their
order (each answer's old value is the one the write before it left, as on the other stores). Processes that do
race (an item written between the read and the script) back off with full jitter (capped exponential) before
retrying; ``update_conflicts`` counts the lost races. ``publish`` calls go out through one queue too, pipelined on
one connection, so events published in order reach Redis (and every subscriber) in that order.

Names are escaped so no two (stream, group) pairs share a hash (issue #8): in the stream name, ``%`` becomes
``%25`` and ``:`` becomes ``%3A``; the group id is the last part and is kept as it is. Names without ``:`` and
``%`` (and every group id) give production's keys byte for byte; a stream named ``a:b`` is ``stream:a%3Ab:<group>``
here, so ``list_groups("a")`` is exact (production's ``stream:a:b:<group>`` hashes read as stream ``a``).
SCAN patterns escape the glob characters of names.

:meth:`RedisStream.from_url` opens a blocking pool (``max_connections``, default 50): more callers than
connections wait for one, each within its operation's own time limit (a ``pool_timeout`` given ends the wait sooner,
with :class:`~iii_streams.errors.PoolExhaustedError`). ``max_connections`` bounds the command connections alone: a
store's watches share one pub/sub connection made outside that pool (a pool of its own, same URL and options,
made by the first watch and closed with the store), held while any of them is open, read by one task into each
watcher's bounded queue. A store on a client you pass makes it the same way, like that client's connections, never
from that client's pool. Redis errors surface as :class:`~iii_streams.errors.StreamError` subclasses
(``StreamUnavailableError`` while the server is unreachable), the redis-py exception kept as ``__cause__``.

Other key layouts are chosen with a :class:`KeyLayout`: :data:`STATE_LAYOUT` is the production state adapter's
``state:<scope>`` (one namespace, the stream name is ignored), which the engine's state module uses.

Example:
    >>> import asyncio, fakeredis
    >>> async def demo():
    ...     async with RedisStream(fakeredis.FakeAsyncRedis()) as s:
    ...         await s.set(StreamSetInput(stream_name="s", group_id="g", item_id="1", data={"big": 2**70}))
    ...         return await s.get(StreamGetInput(stream_name="s", group_id="g", item_id="1"))
    >>> asyncio.run(demo())
    {'big': 1180591620717411303424}
"""

from __future__ import annotations

import asyncio
import builtins
import codecs
import contextlib
import dataclasses
import functools
import logging
import random
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote, unquote_plus, urlparse

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    MaxConnectionsError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.loss_log import LossLog, latest_tail
from iii.stream import (
    StreamDeleteInput,
    StreamDeleteResult,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamSetResult,
    StreamUpdateResult,
)
from iii.stream_ops import Op, apply_update
from iii.wire import dumps, loads

from .base import DEFAULT_TIMEOUT, FieldUpdates, SetResult, UpdateResult, WriteProgress
from .batching import KeyedBatcher, fail_futures
from .close_once import CloseOnce
from .coalescing import ReadCoalescer, stored_size
from .deadlines import finish_within
from .errors import (
    SEND_ROOM,
    PoolExhaustedError,
    StreamBackendError,
    StreamClosedError,
    StreamDataError,
    StreamError,
    StreamTimeoutError,
    StreamTooLargeError,
    StreamUnavailableError,
    UpdateConflictError,
    check_list_bytes,
    check_names,
    check_timeout,
    check_value_bytes,
    closed_unapplied,
    json_text,
    utf8_size,
    why_unreadable,
)
from .events import (
    StreamEvent,
    StreamGapError,
    StreamLagError,
    Watch,
    check_queue_size,
    custom_event,
    event_json_parts,
    retry_until_closed,
    wake,
)
from .known_texts import KnownTexts
from .messages import mask_passwords
from .redis_internals import (
    RAW_REPLY,
    give_back_plain,
    like_pool_options,
    notify_one,
    one_shot,
    raw_reply,
    take_plain,
)

__all__ = [
    "EVENTS_CHANNEL",
    "STATE_LAYOUT",
    "STORE_URL_OPTIONS",
    "STREAM_LAYOUT",
    "KeyLayout",
    "PoolExhaustedError",
    "RedisStream",
    "StreamDataError",
    "StreamGapError",
    "StreamTooLargeError",
    "UpdateConflictError",
    "check_reachable",
    "check_redis_url",
    "redis_address",
    "store_url_options",
    "subscriber_client",
    "waiting_client",
]

log = logging.getLogger(__name__)

EVENTS_CHANNEL: Final = "stream::events"

# A group's values (HVALS) only when their bytes, with the array's brackets and commas, are at most ARGV[1];
# otherwise a byte count they reach at least. Summed in Redis (HSTRLEN): a group far over the bound is never sent to
# be refused. A script blocks every client of the server while it runs, so it stops as soon as it knows: a group of
# n items is at least 2n + 1 bytes (each JSON value one byte or more, n + 1 brackets and commas), refused from HLEN
# alone, and past its first ARGV[2] items (whose sum is exact, so a small group's error names its size) the sum
# stops once over the bound. Before, 1,000,000 small items under a 1 MiB bound took 3.4-3.8 s of HKEYS and HSTRLEN
# to refuse, every other client waiting, and 1,700,000 made them fail with BUSY.
_BOUNDED_HVALS_SCRIPT: Final = """
local bound = tonumber(ARGV[1])
local exact = tonumber(ARGV[2])
local n = redis.call('HLEN', KEYS[1])
if 2 * n + 1 > bound then return 2 * n + 1 end
local fields = redis.call('HKEYS', KEYS[1])
local total = n + 1
for i = 1, #fields do
  total = total + redis.call('HSTRLEN', KEYS[1], fields[i])
  if total > bound and i >= exact then return total end
end
if total > bound then return total end
return redis.call('HVALS', KEYS[1])
"""
_EXACT_ITEMS: Final = 1024  # a group's items summed whole before the bounded script may stop early (about 1 ms)

# Old value read, new value written and the change event published in one atomic step; the event text is
# assembled server-side so the value is encoded once.
_SET_SCRIPT: Final = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then
  local kind = 'update'
  if (not old) or old == 'null' then kind = 'create' end
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. kind .. '","data":' .. ARGV[2] .. ARGV[5])
end
return old
"""

#: An update batch's check, writes and events in one atomic command. ``ARGV`` = channel, field count n, n flags
#: (``1``: the field was absent when read), n triples (field, text read or ``""``, new text), then the events in
#: order joined by newlines (``""``: none). Returns 0, writing nothing, when a field no longer holds what the batch
#: read (another process won the race), else 1. One command and one reply per batch where WATCH/MULTI/EXEC took
#: four, and one argument for all events instead of one each: redis-py packs a command's small arguments by
#: re-joining its growing buffer per argument (2.8 µs per event at 256 events, 0.16 µs joined). An event is
#: compact JSON, which holds no raw newline (JSON escapes control characters in strings), so the newlines split
#: them exactly.
_CHECK_WRITE_PUBLISH_SCRIPT: Final = """
local last = 3 + 3 * tonumber(ARGV[2])
for i = 4, last, 3 do
  local now = redis.call('HGET', KEYS[1], ARGV[i])
  local k = (i - 1) / 3
  if string.sub(ARGV[3], k, k) == '1' then
    if now then return 0 end
  elseif now ~= ARGV[i + 1] then
    return 0
  end
end
for i = 4, last, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
end
local events = ARGV[last + 1]
if events == '' then return 1 end
local start = 1
while true do
  local stop = string.find(events, '\\n', start, true)
  if not stop then
    redis.call('PUBLISH', ARGV[1], string.sub(events, start))
    return 1
  end
  redis.call('PUBLISH', ARGV[1], string.sub(events, start, stop - 1))
  start = stop + 1
end
"""

_DELETE_SCRIPT: Final = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if ARGV[2] ~= '' then
    redis.call('PUBLISH', ARGV[2], ARGV[3] .. 'delete","data":' .. old .. ARGV[4])
  end
end
return old
"""

#: Several sets and deletes of one hash in one atomic command, in order, each as ``_SET_SCRIPT`` or
#: ``_DELETE_SCRIPT`` would run it. ``ARGV`` = channel (``""``: no events), then per write five arguments: ``s``
#: (set) or ``d`` (delete), field, new text (``""`` for a delete), event head, event tail. Returns each write's old
#: text in order (nil where the field was absent: Lua ``false``, as a table cannot hold nil).
_WRITES_SCRIPT: Final = """
local channel = ARGV[1]
local olds = {}
for i = 2, #ARGV, 5 do
  local field = ARGV[i + 1]
  local old = redis.call('HGET', KEYS[1], field)
  if ARGV[i] == 's' then
    redis.call('HSET', KEYS[1], field, ARGV[i + 2])
    if channel ~= '' then
      local kind = 'update'
      if (not old) or old == 'null' then kind = 'create' end
      redis.call('PUBLISH', channel, ARGV[i + 3] .. kind .. '","data":' .. ARGV[i + 2] .. ARGV[i + 4])
    end
  elseif old then
    redis.call('HDEL', KEYS[1], field)
    if channel ~= '' then
      redis.call('PUBLISH', channel, ARGV[i + 3] .. 'delete","data":' .. old .. ARGV[i + 4])
    end
  end
  olds[#olds + 1] = old
end
return olds
"""

_OWN_OPTIONS: Final = ("publish_events", "channel", "max_update_attempts", "layout", "timeout", "report_watch_gaps",
                       "watch_queue_size")
_GLOB_SPECIAL: Final = re.compile(r"([\\*?\[\]])")
_ESCAPED: Final = re.compile(r"%(25|3A)")
DEFAULT_MAX_CONNECTIONS: Final = 50
DEFAULT_POOL_TIMEOUT: Final = 30.0
# full-jitter backoff after a lost race: sleep uniform(0, d), d doubling from the first to the cap
_BACKOFF_FIRST: Final = 0.001
_BACKOFF_CAP: Final = 0.05
_MAX_BATCH: Final = 256  # writes per batch of a hash (one read and compare-and-set script, or one writes script)
# the values one writes script carries at most (it holds at least one write): Redis closes a client whose command is
# over client-query-buffer-limit (1 GiB), and 256 sets of 5 MB values in one command would be
_MAX_SCRIPT_BYTES: Final = 8 * 1024 * 1024
_WITHDRAWN: Final = StreamClosedError("the caller withdrew this write before it was sent")
# an update left out of its run's compare-and-set, past about _MAX_SCRIPT_BYTES of texts and events: the next run
# takes it first (before, 256 increments of a 2.2 MB item joined 563 MB of events into one argument, over Redis's
# 512 MB proto-max-bulk-len: every one failed "unreachable", applied=None, the process at 3.3 GB)
_LATER: Final = StreamClosedError("this update is left for the next run of its hash (not sent)")
# what _run_once returns when its pick found nothing left to send (every write of it given up meanwhile)
_NOT_SENT: Final = object()


def _refusal(result: object) -> bool:
    """Whether ``result`` (one of :meth:`RedisStream._apply_batch`'s) refuses its update, rather than withdrawing it
    or leaving it for the next run."""
    return isinstance(result, BaseException) and result is not _WITHDRAWN and result is not _LATER


def _pack_evalsha(conn: Any, sha: str, key: str, args: Sequence[Any]) -> bytes:
    """``EVALSHA sha 1 key *args`` as one RESP command, byte for byte what redis-py's ``pack_command`` sends:
    ``str``, ``bytes`` and ``int`` (what the write scripts take) directly, encoded as ``conn``'s encoder encodes
    text, and any other argument (a ``str`` subclass such as an enum's item id) through that encoder.

    redis-py's ``pack_command`` checks every argument's type through its encoder and joins a growing buffer
    per argument; here each is one ``encode`` and the command one ``join`` (an update batch sends 7 + 3 per item).

    Example:
        >>> class Conn:
        ...     class encoder:
        ...         encoding, encoding_errors = "utf-8", "strict"
        >>> _pack_evalsha(Conn(), "ab", "k", ["é", b"x", 2])
        b'*7\\r\\n$7\\r\\nEVALSHA\\r\\n$2\\r\\nab\\r\\n$1\\r\\n1\\r\\n$1\\r\\nk\\r\\n$2\\r\\n\\xc3\\xa9\\r\\n$1\\r\\nx\\r\\n$1\\r\\n2\\r\\n'
    """
    encoding, errors = conn.encoder.encoding, conn.encoder.encoding_errors
    parts = [b"*%d\r\n$7\r\nEVALSHA\r\n" % (len(args) + 4)]
    for arg in (sha, "1", key, *args):
        if type(arg) is str:
            data = arg.encode(encoding, errors)
        elif type(arg) is bytes:
            data = arg
        elif type(arg) is int:
            data = b"%d" % arg
        else:  # a subclass (a StrEnum item id), a float, a memoryview: as redis-py encodes it, or its DataError
            data = conn.encoder.encode(arg)
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


async def _send(conn: Any, packed: bytes | Sequence[bytes], bounded: bool,
                progress: WriteProgress | None = None) -> None:
    """``conn.send_packed_command(packed)`` without its socket timeout on the write when ``bounded`` (a deadline
    of the store bounds the caller).

    With a socket timeout (redis-py's default is 5 s) every send runs in ``asyncio.wait_for``: a task, a timer
    and one more event-loop turn per command, for a write that almost always goes straight into the socket. The
    write scripts run inside the store's deadline (``StoreDeadline``, or the caller's guard), which bounds a
    send that blocks; the reply is still read under the socket timeout. A store with no limit (``timeout=None``)
    keeps the socket timeout on the send: nothing else would end a send that Redis no longer reads.

    The connection's health check (a ``PING`` once it was idle for ``health_check_interval``) runs first, under
    the socket timeout: inside ``send_packed_command`` its reply would be read with no timeout at all.

    ``progress`` is marked sent once the connection is up and checked, just before ``packed`` is written: a
    connection lost before that (a refused reconnect, a failed health check) lost a command that was never sent.
    """
    if not conn.is_connected:
        await conn.connect()
    await conn.check_health()
    if progress is not None:
        progress.sent = True
    timeout = conn.socket_timeout
    if not timeout or not bounded:
        await conn.send_packed_command(packed, check_health=False)
        return
    conn.socket_timeout = None
    try:
        await conn.send_packed_command(packed, check_health=False)
    finally:
        if conn.socket_timeout is None:  # unless something set a timeout of its own meanwhile
            conn.socket_timeout = timeout


async def _script_load(conn: Any, text: Any) -> str:
    """``SCRIPT LOAD text`` on ``conn``, a connection the caller holds: the script's SHA1.

    Not ``client.script_load``: that takes a second connection of the pool, and after a Redis restart every
    writer holding one met ``NOSCRIPT`` at once, so ``max_connections`` concurrent writes each waited for a
    connection the others held, and all failed with ``PoolExhaustedError`` after ``pool_timeout``.
    """
    await conn.send_command("SCRIPT", "LOAD", text)
    sha = await conn.read_response()
    return sha.decode() if isinstance(sha, bytes) else str(sha)


def _check_encoding(client: aioredis.Redis) -> None:
    """Refuse a client whose text encoding is not UTF-8: values are JSON text written as UTF-8 and read back as
    UTF-8 (and by other processes and the production engine), so another encoding would store mangled values or
    misread them. ``decode_responses=True`` is fine: it decodes with that same encoding.

    Example:
        >>> _check_encoding(aioredis.Redis(encoding="latin-1"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: RedisStream needs a Redis client with encoding='utf-8' ... got encoding='latin-1'; ...
    """
    pool = getattr(client, "connection_pool", None)
    options = getattr(pool, "connection_kwargs", {})
    encoding = options.get("encoding", "utf-8")
    try:
        utf8 = codecs.lookup(encoding).name == "utf-8"
    except (LookupError, TypeError):
        utf8 = False
    if not utf8:
        raise ValueError(f"RedisStream needs a Redis client with encoding='utf-8' (stored values are UTF-8 JSON "
                         f"text), got encoding={encoding!r}; leave the client's encoding at its default")
    errors = options.get("encoding_errors", "strict")
    if options.get("decode_responses") and errors != "strict":
        # 'replace' or 'ignore' would read a value that is not UTF-8 as other text: returned mangled, written
        # back mangled by an update, and an update's compare-and-set would never match what is stored
        raise ValueError(f"RedisStream needs a Redis client that decodes responses with encoding_errors='strict', "
                         f"got encoding_errors={errors!r}; leave the client's encoding_errors at its default")


def _glob_escape(text: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def escape_name(text: str) -> str:
    """A key component without ``:``: ``%`` → ``%25``, ``:`` → ``%3A`` (other text unchanged, so injective).

    Example:
        >>> escape_name("a:b"), escape_name("50%"), escape_name("plain")
        ('a%3Ab', '50%25', 'plain')
    """
    return text.replace("%", "%25").replace(":", "%3A")  # '%' first, so the escapes' own '%' stays


def _unescape_name(text: str) -> str:
    """The inverse of :func:`escape_name`; a ``%`` that starts no escape is kept literally (foreign keys).

    Example:
        >>> _unescape_name(escape_name("a:50%")), _unescape_name("100%off")
        ('a:50%', '100%off')
    """
    return _ESCAPED.sub(lambda m: "%" if m.group(1) == "25" else ":", text) if "%" in text else text


class _WaitingPool(aioredis.BlockingConnectionPool):
    """A blocking pool whose timeout says what happened (redis-py reports "No connection available."), and whose
    connections are taken and given back plainly while nothing contends for them.

    Why: redis-py 8's blocking pool takes its condition, a timer and its lock, records four pool metrics (even
    when they are off) and dispatches a release event for every command; about 11 µs per take and give-back, 12 %
    of the engine's CPU per ``stream::update`` on Redis one at a time. While no caller waits in or holds the pool
    (:func:`~iii_streams.redis_internals.pool_idle`: its condition and lock free, no take of ours under way, no
    maintenance, metrics known off) an available connection is taken as redis-py takes it (the last one given
    back, checked by :meth:`ensure_connection`), and given back as redis-py gives it back when that does nothing
    more (:func:`~iii_streams.redis_internals.plain_give_back`: not marked to reconnect, no re-auth waiting, no
    other release listener). Anything else goes redis-py's way: a new connection, a wait, a waiter to wake.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._taking = 0  # takes under way through redis-py's get_connection (waiting for a connection, maybe)
        # connections handed out and not given back (the timeout's note; redis-py 8.0 has no public count of them)
        self._held: set[Any] = set()
        # the tasks in such a take, and those of them whose wait close_waits() ended
        self._waiting: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        # tasks whose wait at a full pool was cancelled (their time ran out, most often), and when: a timeout's
        # message in the same moment names the pool
        self._gave_up: weakref.WeakKeyDictionary[asyncio.Task[Any], float] = weakref.WeakKeyDictionary()
        self._wakes: set[asyncio.Task[None]] = set()  # notifies of waiters whose wake-up a cancel took (_wake_next)
        self._refusing = False

    async def ensure_connection(self, connection: Any) -> None:
        """Connect ``connection``, or reconnect it when the server closed it (or it holds unread data) while idle.

        redis-py skips that check while maintenance notifications are enabled (``"auto"``, its default), and then
        hands out a pooled connection the server ended (a restart, ``CLIENT KILL``, a ``timeout`` setting): the
        next command on it failed with "Connection closed by server" although Redis was up. The check reads no
        socket (a buffered EOF or bytes), and this store uses no notification an idle connection could hold.
        """
        await connection.connect()
        try:
            stale = await connection.can_read()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            stale = True
        if stale:
            await connection.disconnect()
            await connection.connect()
            if await connection.can_read():
                raise RedisConnectionError("a new Redis connection had data before any command was sent")

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._refusing:
            raise _closed_at_pool()
        if not args and not kwargs and not self._taking:
            connection = take_plain(self)
            if connection is not None:
                self._held.add(connection)
                try:
                    await self.ensure_connection(connection)
                except BaseException:
                    await self.release(connection)
                    raise
                return await self._unless_closed(connection)
        task = asyncio.current_task()
        self._taking += 1
        if task is not None:
            self._waiting.add(task)
        try:
            connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except asyncio.CancelledError:
            if self._taking > 1 and len(self._held) < self.max_connections:
                # Python 3.11's Condition loses a notify whose waiter is cancelled before it wakes: another take
                # waited on with a connection free (forever with no time limit); none is lost while all are held
                self._wake_next()
            if task is None:
                raise
            if task in self._cut:
                self._cut.discard(task)
                if task.uncancel() == 0:  # (a cancel of the caller's own as well: that one wins)
                    raise _closed_at_pool() from None
            elif len(self._held) >= self.max_connections:
                self._gave_up[task] = asyncio.get_running_loop().time()
            raise
        except RedisConnectionError as exc:
            if not isinstance(exc.__cause__, asyncio.TimeoutError | TimeoutError):
                raise
            raise PoolExhaustedError(self._exhausted()) from None
        finally:
            self._taking -= 1
            self._waiting.discard(task)
        self._held.add(connection)
        return await self._unless_closed(connection)

    async def _unless_closed(self, connection: Any) -> Any:
        """``connection``, unless :meth:`close_waits` ran while it was taken (its connect, or a reconnect of one the
        server had ended, outlasted the store's close): given back unused, nothing sent. Handed out, it ran a write
        after ``aclose()`` returned, on a connection nothing closed (13 of 30 rounds in an attack)."""
        if not self._refusing:
            return connection
        with contextlib.suppress(Exception):
            await connection.disconnect()
        await self.release(connection)
        raise _closed_at_pool()

    def _wake_next(self) -> None:
        waking = asyncio.ensure_future(notify_one(self))
        self._wakes.add(waking)
        waking.add_done_callback(self._wakes.discard)

    async def release(self, connection: Any) -> None:
        self._held.discard(connection)
        # a take under way through redis-py may be waiting on the pool's condition (which it unlocks while it
        # waits): only redis-py's give-back notifies it
        if self._taking or not give_back_plain(self, connection):
            await super().release(connection)

    def close_waits(self) -> None:
        """End every take still waiting for a connection, and refuse those to come, with
        :class:`~iii_streams.errors.StreamClosedError` (``applied`` ``False``: nothing of them was sent). Called by
        the store that made this pool when it closes, once its batches had their time to finish: a wait bounded
        only by its caller's time limit (or none) would otherwise outlive the store, then reconnect a connection
        of the closed pool.

        Example:
            >>> pool = _WaitingPool(host="example.invalid", max_connections=1, timeout=None)
            >>> pool.close_waits()
            >>> try:
            ...     asyncio.run(pool.get_connection())
            ... except StreamClosedError as exc:
            ...     print(exc.applied, exc)
            False the Redis store was closed while this operation waited for a pooled connection (nothing was sent)
        """
        self._refusing = True
        for task in self._waiting:
            if not task.done() and task not in self._cut:  # (once: a second cancel would not be undone)
                self._cut.add(task)
                task.cancel()

    def exhausted_note(self, *, shared: bool = False) -> str:
        """``"; waiting for a Redis connection: …"`` for a timeout whose task's wait at a full pool was just cut
        (:data:`_NOTE_FRESH_S`), or, ``shared`` (a get, read together with others by one task), while the pool is full
        and takes wait; ``""`` otherwise: a task whose write batch waits for it, or whose wait some other limit ended
        earlier, is not told it waited.

        Example:
            >>> _WaitingPool(host="example.invalid", max_connections=3).exhausted_note(shared=True)
            ''
        """
        task = asyncio.current_task() if self._gave_up else None
        cut_at = self._gave_up.pop(task, None) if task is not None else None
        if cut_at is None or asyncio.get_running_loop().time() - cut_at > _NOTE_FRESH_S:
            # a get waits on the one task reading for it and the gets beside it: that task's wait is theirs
            if not (shared and self._taking and len(self._held) >= self.max_connections):
                return ""
        return (f"; waiting for a Redis connection: all {self.max_connections} were in use (raise max_connections: "
                "the URL option ?max_connections=N or the keyword argument; or find what holds them)")

    def _exhausted(self) -> str:
        # an engine's store URL or redis_url sets them as URL options (redis-py's parser reads ?timeout= as the
        # pool's wait; ?pool_timeout= would reach every connection as an unknown option); code may pass keywords
        return (f"Redis connection pool exhausted: all {self.max_connections} connections stayed busy for "
                f"{self.timeout:g} s (raise the pool's size or its wait: the URL options ?max_connections=N and "
                "?timeout=SECONDS, or the keyword arguments max_connections and pool_timeout; or find what holds "
                "them)")


_NOTE_FRESH_S: Final = 0.05  # a wait cut longer ago than this is not what a timeout's message reports (a cut
# by the caller's own timer reaches its message in the same loop turn or the next few)


def _closed_at_pool() -> StreamClosedError:
    """The error of an operation whose wait for a pooled connection its store's close ended (nothing was sent)."""
    error = StreamClosedError("the Redis store was closed while this operation waited for a pooled connection "
                              "(nothing was sent)")
    error.applied = False
    return error


_DB_NUMBER: Final = re.compile(r"[0-9]+")


def _quoted_part(part: str) -> str:
    """A part of a Redis URL (its path, a ``?db=`` value) as an error quotes it; not shown where it may hold part of
    a password: a password with an unencoded ``/``, ``?`` or ``#`` ends the URL's host there, and what follows, the
    rest of the password and the ``@``, is read as the path or the query (an error quoted it beside the masked URL).

    Example:
        >>> _quoted_part("/l"), _quoted_part("/SECRETtail9+w=@127.0.0.1:6379/0")[:52]
        ("'/l'", 'a part holding an @ (not shown: a password with an u')
    """
    if "@" in part:
        return ("a part holding an @ (not shown: a password with an unencoded '/', '?' or '#' ends the host there; "
                "percent-encode them in a password: %2F, %3F, %23)")
    return repr(part[:40]) + ("…" if len(part) > 40 else "")


def check_redis_url(url: str) -> int:
    """The database number of a ``redis://``, ``rediss://`` or ``unix://`` URL, or a :class:`ValueError` naming the
    URL (its password masked) when that number is not plainly written. Every client this package makes from a URL
    (:func:`waiting_client`: the stream and state stores, and the engine's queue, pub/sub and cron lock) is checked
    by it before anything connects.

    redis-py reads a URL's path as ``int(path.replace("/", ""))`` and, when that fails, uses database 0 without a
    word: ``redis://cache:6379/l`` (a typo of ``/1``) wrote to database 0 and ``redis://cache:6379/1/5`` to
    database 15. Here the path must be empty, ``/`` (database 0) or ``/`` and ASCII digits; a ``?db=`` (the only
    way for a ``unix://`` socket) must be ASCII digits too, and given both ways they must agree (redis-py would let
    the query win, whatever the path says).

    Example:
        >>> check_redis_url("redis://cache:6379"), check_redis_url("rediss://cache/"), check_redis_url("redis://cache/12")
        (0, 0, 12)
        >>> check_redis_url("unix:///run/redis.sock?db=3"), check_redis_url("redis://cache/3?db=3")
        (3, 3)
        >>> check_redis_url("redis://:hunter2@cache:6379/l")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the database of Redis URL 'redis://:***@cache:6379/l' must be a number ..., got '/l' ...
        >>> check_redis_url("redis://cache/1?db=2")
        Traceback (most recent call last):
        ...
        ValueError: Redis URL 'redis://cache/1?db=2' names database 1 in its path and 2 in ?db=: keep one of them
    """
    shown = mask_passwords(url)
    parsed = urlparse(url)
    if "@" in parsed.fragment:  # (redis-py would connect to the host before the '#', or to localhost)
        # (not shown: what comes before the '#' may be the start of the password, with no '@' to mask it by)
        raise ValueError(f"a {parsed.scheme}:// Redis URL cannot be read: after its '#', "
                         f"{_quoted_part(parsed.fragment)}")
    db: int | None = None
    if parsed.scheme in ("redis", "rediss"):
        path = unquote(parsed.path)
        if path not in ("", "/"):
            if not path.startswith("/") or not _DB_NUMBER.fullmatch(path[1:]):
                try:  # what redis-py makes of it
                    read = f"would read it as database {int(path.replace('/', ''))}"
                except ValueError:
                    read = "would silently use database 0 for it"
                raise ValueError(f"the database of Redis URL {shown!r} must be a number after one '/' (such as /0 "
                                 f"or /1), got {_quoted_part(path)} (redis-py {read})")
            db = int(path[1:])
    in_query = parse_qs(parsed.query, keep_blank_values=True).get("db", [])
    for value in in_query:
        if not _DB_NUMBER.fullmatch(value):
            raise ValueError(f"the ?db= of Redis URL {shown!r} must be a database number (0, 1, ...), got "
                             f"{_quoted_part(value)}")
    if len(set(map(int, in_query))) > 1:
        raise ValueError(f"Redis URL {shown!r} gives ?db= more than once, with different numbers: keep one")
    if in_query:
        if db is not None and db != int(in_query[0]):
            raise ValueError(f"Redis URL {shown!r} names database {db} in its path and {int(in_query[0])} in ?db=: "
                             "keep one of them")
        db = int(in_query[0])
    return 0 if db is None else db


def waiting_client(url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                   pool_timeout: float | None = DEFAULT_POOL_TIMEOUT, **options: Any) -> aioredis.Redis:
    """A ``redis.asyncio`` client for ``url`` on a blocking pool: at most ``max_connections`` connections, and a
    caller finding them all busy waits for one, up to ``pool_timeout`` seconds, then gets
    :class:`~iii_streams.errors.PoolExhaustedError` (``None``: as long as the caller's own time limit allows, as
    :meth:`RedisStream.from_url` waits by default). A client of ``Redis.from_url`` fails at once past its pool's
    size instead ("Too many connections": 1,900 of 2,000 concurrent publishes failed, though Redis was fine).

    The URL's ``?max_connections=`` and ``?timeout=`` (the wait) win over the arguments, as redis-py's URL options
    do; the other ``options`` go to the connections (``socket_timeout``, ``socket_connect_timeout``, ``retry``).
    Closing the client closes its pool. :func:`check_reachable` checks the server answers.

    Example:
        >>> client = waiting_client("redis://localhost:6379/0?max_connections=7", pool_timeout=3.0, socket_timeout=5)
        >>> pool = client.connection_pool
        >>> pool.max_connections, pool.timeout, pool.connection_kwargs["socket_timeout"]
        (7, 3.0, 5)
        >>> waiting_client("redis://localhost:6379/0?max_connections=0")
        Traceback (most recent call last):
        ...
        ValueError: the Redis pool's max_connections must be a positive integer, got 0
    """
    check_redis_url(url)  # redis-py takes a database it cannot read for 0
    in_url = parse_url(url)  # checked here: redis-py takes a max_connections of 0 for no limit at all
    size, wait = in_url.get("max_connections", max_connections), in_url.get("timeout", pool_timeout)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"the Redis pool's max_connections must be a positive integer, got {size!r}")
    if wait is not None and (
            isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 < wait < float("inf")):
        raise ValueError(f"the Redis pool_timeout must be a positive number of seconds (a URL's ?timeout=), or "
                         f"None for the caller's own time limit, got {wait!r}")
    return aioredis.Redis.from_pool(_WaitingPool.from_url(url, max_connections=size, timeout=wait, **options))


def subscriber_client(client: aioredis.Redis) -> aioredis.Redis:
    """A client for long-lived pub/sub connections beside ``client``: a pool of its own (2 connections; a third
    caller waits up to 30 s for one), making its connections as ``client``'s pool does (address, TLS, credentials,
    ``client_name``), so that a subscriber never holds one of ``client``'s ``max_connections``. ``client`` itself
    where its pool's connections cannot be copied (a cluster or Sentinel client). Close it as well as ``client``
    when it is another client.

    Why: a pub/sub connection taken from the pool of the commands is held for good; with ``?max_connections=1``
    nothing else ever got a connection (every publish of the engine's pubsub module failed after its 10 s).

    Example:
        >>> client = aioredis.Redis(host="example.invalid", client_name="app", max_connections=1)
        >>> subscriber = subscriber_client(client)
        >>> pool = subscriber.connection_pool
        >>> subscriber is client, pool.max_connections, pool.connection_kwargs["client_name"]
        (False, 2, 'app')
    """
    pool = _WatchPool.like(client)
    return client if pool is None else aioredis.Redis.from_pool(pool)


def redis_address(client: aioredis.Redis) -> str:
    """Where ``client`` connects, as a URL without credentials (for messages: nothing to mask).

    Example:
        >>> redis_address(aioredis.Redis.from_url("rediss://app:secret@cache:6380/2"))
        'rediss://cache:6380/2'
        >>> redis_address(aioredis.Redis.from_url("unix:///run/redis.sock?db=1"))
        'unix:///run/redis.sock?db=1'
    """
    pool = getattr(client, "connection_pool", None)
    options = getattr(pool, "connection_kwargs", {})
    db = options.get("db", 0)
    if "path" in options:
        return f"unix://{options['path']}?db={db}"
    scheme = "rediss" if issubclass(getattr(pool, "connection_class", object), aioredis.SSLConnection) else "redis"
    return f"{scheme}://{options.get('host', 'localhost')}:{options.get('port', 6379)}/{db}"


async def check_reachable(client: aioredis.Redis, *, timeout: float) -> None:
    """A ``PING`` within ``timeout`` seconds, so a module on a Redis that is down fails its start in one line naming
    the server (:func:`redis_address`), instead of starting and failing every call.

    Raises:
        StreamUnavailableError: unreachable (or every pooled connection busy); StreamTimeoutError: no answer in
            time; StreamBackendError: Redis refused the credentials or the ``PING``.

    Example:
        >>> import asyncio, fakeredis
        >>> asyncio.run(check_reachable(fakeredis.FakeAsyncRedis(), timeout=1))
        >>> asyncio.run(check_reachable(aioredis.Redis(port=1), timeout=5))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        iii_streams.errors.StreamUnavailableError: Redis at redis://localhost:1/0 unreachable: Error 111 connecting ...
    """
    where = f"Redis at {redis_address(client)}"
    try:
        async with asyncio.timeout(timeout):
            await client.ping()
    except RedisTimeoutError:
        # the connection's own timeouts, often shorter: one was said as the check's bound (5 s as "10 s")
        kwargs = client.connection_pool.connection_kwargs
        own = [f"{name} {value:g} s" for name in ("socket_connect_timeout", "socket_timeout")
               if isinstance(value := kwargs.get(name), int | float)]
        within = f"the connection's own timeout ({', '.join(own)})" if own else f"{timeout:g} s"
        raise StreamTimeoutError(f"{where}: no answer within {within}") from None
    except TimeoutError:
        raise StreamTimeoutError(f"{where}: no answer within {timeout:g} s") from None
    except PoolExhaustedError:
        raise
    except AuthenticationError as exc:  # a ConnectionError to redis-py, but the server answered
        raise StreamBackendError(f"{where} refused the credentials: {exc}") from None
    except (RedisConnectionError, OSError) as exc:
        raise StreamUnavailableError(f"{where} unreachable: {exc}") from None
    except RedisError as exc:
        raise StreamBackendError(f"{where} refused a PING: {type(exc).__name__}: {exc}") from None


_WATCH_CONNECTIONS: Final = 2
"""A store's watch pool: the shared pub/sub connection, and its successor subscribing while a stopped subscriber
still closes its own. A third caller waits for one of them (a reader that never ended holds one for good)."""
_WATCH_POOL_TIMEOUT: Final = DEFAULT_POOL_TIMEOUT  # the longest such a wait; then PoolExhaustedError


class _WatchPool(_WaitingPool):
    """The pool of a store's watch connection, the store's own (closed by its ``aclose()``): the connection options
    of the URL or of the client passed, never their pool options (``?max_connections=``, ``?timeout=``). Taken as
    its own, a URL's ``timeout`` (the blocking pool's wait) went to every connection, and each watch failed with a
    TypeError. At most :data:`_WATCH_CONNECTIONS`; one more caller waits up to :data:`_WATCH_POOL_TIMEOUT` s, then
    gets :class:`~iii_streams.errors.PoolExhaustedError` (a plain pool of 1 failed a watch opened while the last
    one closed at once: "Too many connections").

    Example:
        >>> pool = _WatchPool.from_url("redis://localhost:6379/0?max_connections=7&timeout=3", client_name="w")
        >>> pool.max_connections, pool.timeout, pool.connection_kwargs["client_name"]
        (2, 30.0, 'w')
    """

    def __init__(self, *, max_connections: int | None = None, timeout: float | None = None,
                 **connection_kwargs: Any) -> None:
        del max_connections, timeout
        super().__init__(max_connections=_WATCH_CONNECTIONS, timeout=_WATCH_POOL_TIMEOUT, **connection_kwargs)

    @classmethod
    def like(cls, client: aioredis.Redis) -> _WatchPool | None:
        """A pool making connections as ``client``'s pool makes them (its connection class and options: address,
        TLS, credentials, ``client_name``, ``decode_responses``), or ``None`` for a client without one (a cluster
        client) or whose connections are bound to its pool (a Sentinel client): ``like_pool_options``.

        Example:
            >>> pool = _WatchPool.like(aioredis.Redis(host="example.invalid", client_name="app", max_connections=10))
            >>> pool.max_connections, pool.connection_kwargs["host"], pool.connection_kwargs["client_name"]
            (2, 'example.invalid', 'app')
        """
        options = like_pool_options(getattr(client, "connection_pool", None))
        return None if options is None else cls(**options)

    def _exhausted(self) -> str:
        return (f"Redis watch connections exhausted: the store's {self.max_connections} watch connections stayed busy "
                f"for {self.timeout:g} s (a watch reader that never ended holds one: see the log)")


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """How a :class:`RedisStream` names the hash of a group.

    ``per_stream=True`` (the stream layout): ``<prefix>:<stream_name>:<group_id>`` with the stream name escaped
    by :func:`escape_name` (so it holds no ``:`` and the first ``:`` after it ends it: no two pairs share a key).
    ``per_stream=False`` (one namespace, as production's state adapter): ``<prefix>:<group_id>`` whatever the
    stream name, and ``list_all`` reports the groups under the stream name ``prefix``.

    Example:
        >>> STREAM_LAYOUT.key("todos", "user:1"), STREAM_LAYOUT.key("a:b", "c"), STATE_LAYOUT.key("x", "user:1")
        ('stream:todos:user:1', 'stream:a%3Ab:c', 'state:user:1')
    """

    prefix: str = "stream"
    per_stream: bool = True

    def __post_init__(self) -> None:
        if not self.prefix:
            raise ValueError("KeyLayout.prefix must be a non-empty string")

    def key(self, stream_name: str, group_id: str) -> str:
        """The hash holding the items of one group.

        Example:
            >>> KeyLayout().key("todos", "work"), KeyLayout(prefix="state", per_stream=False).key("todos", "work")
            ('stream:todos:work', 'state:work')
        """
        if self.per_stream:
            return f"{self.prefix}:{escape_name(stream_name)}:{group_id}"
        return f"{self.prefix}:{group_id}"

    def group_prefix(self, stream_name: str) -> str:
        """The text every hash of ``stream_name`` starts with; the group id follows it.

        Example:
            >>> STREAM_LAYOUT.group_prefix("a:b"), STATE_LAYOUT.group_prefix("ignored")
            ('stream:a%3Ab:', 'state:')
        """
        return self.key(stream_name, "")

    def split(self, key: str) -> tuple[str, str] | None:
        """``(stream_name, group_id)`` of a hash name in this layout, or ``None`` for a foreign key.

        Example:
            >>> STREAM_LAYOUT.split("stream:a%3Ab:g:1"), STATE_LAYOUT.split("state:g:1"), STATE_LAYOUT.split("x")
            (('a:b', 'g:1'), ('state', 'g:1'), None)
        """
        head = f"{self.prefix}:"
        if not key.startswith(head):
            return None
        rest = key[len(head) :]
        if not self.per_stream:
            return self.prefix, rest
        # the escaped stream name holds no ':', so the first one ends it
        name, sep, group = rest.partition(":")
        return (_unescape_name(name), group) if sep else None


STREAM_LAYOUT: Final = KeyLayout()
"""The production stream store's layout, ``stream:<stream_name>:<group_id>`` (the default)."""

STATE_LAYOUT: Final = KeyLayout("state", per_stream=False)
"""The production state store's layout, ``state:<scope>`` (docs/reference/payloads.md#state-state)."""


STORE_URL_OPTIONS: Final = ("key_prefix", "channel")
"""Query parameters of a Redis URL that are the store's own, not the connection's (:func:`store_url_options`)."""


def store_url_options(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without the query parameters in :data:`STORE_URL_OPTIONS`, and their values (percent-decoded).

    They let a URL alone (an engine's ``store_url``) say where a store's data and events go: Redis's pub/sub
    channels are shared by all its databases, so two engines on ``/0`` and ``/1`` of one server see each other's
    events unless their ``channel`` differs. A parameter given twice or empty is a :class:`ValueError` naming it (an
    empty channel would fall back to the shared default); the other parameters are left exactly as written (they
    are the connection's).

    Example:
        >>> store_url_options("redis://cache:6379/1?key_prefix=staging&channel=staging::events&ssl_cert_reqs=none")
        ('redis://cache:6379/1?ssl_cert_reqs=none', {'key_prefix': 'staging', 'channel': 'staging::events'})
        >>> store_url_options("redis://cache:6379/0")
        ('redis://cache:6379/0', {})
    """
    base, sep, rest = url.partition("?")
    if not sep:
        return url, {}
    query, hash_sign, fragment = rest.partition("#")
    kept: builtins.list[str] = []
    found: dict[str, str] = {}
    for part in query.split("&"):
        raw_name, _, raw_value = part.partition("=")
        name = unquote_plus(raw_name)
        if name not in STORE_URL_OPTIONS:
            kept.append(part)
            continue
        if name in found:
            raise ValueError(f"{name} is given twice in {mask_passwords(url)!r}")
        found[name] = unquote_plus(raw_value)
    for name, value in found.items():
        if not value:
            raise ValueError(f"{name} is empty in {mask_passwords(url)!r}: leave it out for the default")
    kept_query = "&".join(part for part in kept if part)
    return base + ("?" + kept_query if kept_query else "") + hash_sign + fragment, found


def _merge_url_options(own: dict[str, Any], in_url: Mapping[str, str], url: str) -> None:
    """Put a URL's store options into the keyword options ``own``: ``key_prefix`` goes before the prefix of the
    ``layout`` given (or of the default one), so that a stream store and a state store given one prefix still keep
    apart (``staging:stream:…``, ``staging:state:…``), and names the default channel (``staging::stream::events``);
    ``channel`` must not contradict a ``channel=`` given too."""
    if "channel" in in_url:
        given = own.get("channel", in_url["channel"])
        if given != in_url["channel"]:
            raise ValueError(f"RedisStream: channel={given!r} contradicts the channel in {mask_passwords(url)!r}")
        own["channel"] = in_url["channel"]
    if "key_prefix" in in_url:
        layout = own.get("layout", STREAM_LAYOUT)
        own["layout"] = dataclasses.replace(layout, prefix=f"{in_url['key_prefix']}:{layout.prefix}")
        # the events of keys kept apart stay apart too (pub/sub is server-wide): a watcher of one namespace got the
        # other's events, data included, for items its own namespace does not hold
        own.setdefault("channel", f"{in_url['key_prefix']}::{EVENTS_CHANNEL}")


def default_retry() -> Retry:
    """No retries: a command whose connection broke fails at once (as a :class:`StreamError`), and the next one
    gets a new connection.

    Why: redis-py cannot tell a command lost before it reached Redis from one whose reply was lost, so a retried
    write (an increment, an event's publish) could apply twice; the caller, told of the failure, decides. This
    was also the behaviour before it was written down: the synchronous ``Retry`` once given here wraps nothing
    for the asyncio client (its ``call_with_retry`` returns the coroutine unawaited), so it retried nothing.

    Example:
        >>> default_retry().get_retries()
        0
    """
    return Retry(NoBackoff(), 0)


_WATCH_RETRY_LOG_S: Final = 10.0


def _log_watch_retries(counts: Mapping[str, int], latest: str | None) -> None:
    latest_text = latest_tail(latest)
    log.warning("stream watch: Redis unreachable: %d attempt(s) to re-subscribe the watchers' connection failed since "
                "the last warning%s; retrying (every 2 s at most)", counts["failed"], latest_text)


def _cancel_requests() -> int:
    """How many cancellations of the current task are pending (``Task.cancelling()``; 0 outside a task)."""
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def _raise_if_cancelled(requests: int) -> None:
    """Raise ``CancelledError`` when the current task was cancelled since it had ``requests`` pending but the
    cancellation never arrived: a library swallowed it (redis-py's connect and send wait in Python 3.11's
    ``asyncio.wait_for``, which does, python/cpython#86296). A code path that converts a cancellation calls
    ``uncancel()``, so a count above ``requests`` is a lost one."""
    if _cancel_requests() > requests:
        raise asyncio.CancelledError


def gap_error(channel: str) -> StreamGapError:
    """The error of a watch of ``channel`` that re-subscribed after losing its connection.

    Example:
        >>> str(gap_error("stream::events"))  # doctest: +ELLIPSIS
        'Redis watch of stream::events lost its connection and subscribed again: events published in between ...'
    """
    return StreamGapError(f"Redis watch of {channel} lost its connection and subscribed again: events published in "
                          "between were lost (re-read state, then read on)")


def _unreadable_event_error(channel: str) -> StreamGapError:
    """The error of a watch of ``channel`` in place of a change event that is not JSON; the watch reads on.

    Example:
        >>> str(_unreadable_event_error("stream::events"))  # doctest: +ELLIPSIS
        "Redis watch of stream::events got a change event that is not JSON and lost it: a delete publishes the item...
    """
    return StreamGapError(f"Redis watch of {channel} got a change event that is not JSON and lost it: a delete "
                          "publishes the item's old value as it is stored, and a value written by something else than "
                          "a stream store may not be JSON (re-read state, then read on)")


_WATCH_QUEUE_BYTES: Final = 32 * 1024 * 1024
"""A watcher further behind than this many bytes of events lags (Redis's own bound on a pub/sub client's output,
``client-output-buffer-limit pubsub 32mb``). Every watcher queues the same message objects, so the store's
watchers hold no more than about this much (plus ``watch_queue_size`` messages) between them."""
_READ_S: Final = 1.0  # one read of the shared pub/sub at most: redis-py 8.0.0 ended a longer one at socket_timeout
_STOP_S: Final = 2.0  # the reader task's own exit when stopped, at most; then it is cancelled again
# A connection made half-open (a NAT or firewall that forgot it, a failover with no reset) never fails a read: the
# shared pub/sub would wait for good while every event went elsewhere. After this long with nothing heard it is
# PINGed, and with nothing heard _PONG_S later it counts as lost (replaced, a gap reported).
_QUIET_S: Final = 10.0
_PONG_S: Final = 5.0
_GAP: Final = object()


def _lost(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


class _Subscriber:
    """The one pub/sub connection of a :class:`RedisStream`, shared by all its watchers.

    Made by the first watch (a connection of the store's ``_watch_client``, a :class:`_WatchPool` of its own,
    outside the command pool and the pool of a client passed in; held while any watch is open), it is read by one
    task that puts each message in every watcher's bounded queue: a slow watcher lags alone, and Redis never holds
    output back for it. A lost
    connection is closed and a fresh one subscribed (from the same pool), in that task, with backoff (failures
    logged rate-limited); watchers that were subscribed get :data:`_GAP` once the new one is. Stopped with its last
    watcher and with the store, which ends every watcher's reads and fails a first subscribe still under way (waiting
    for the watch pool or for the server) with :class:`~iii_streams.errors.StreamClosedError` at once.
    """

    def __init__(self, store: RedisStream) -> None:
        self.store = store
        self._channel = store.channel or EVENTS_CHANNEL
        self.subscribers: set[_RedisWatcher] = set()
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one first subscribe at a time
        self._live = asyncio.Event()  # the pub/sub is subscribed (its confirmation read): events reach watchers
        self._stopping = asyncio.Event()
        # The deadlines of the subscribes under way; stop() ends them at once. The first one runs in the watch's own
        # task, which stop() cannot cancel: closed while it waited for the store's full watch pool (or for a server
        # that never answered), it waited out that bound (30 s, then PoolExhaustedError) or the store's timeout.
        self._opening: set[asyncio.Timeout] = set()

    async def subscribe(self) -> _RedisWatcher:
        """A new watcher, once the shared connection is subscribed: the first one subscribes it (its failure is
        raised); one opened while the connection is being replaced waits for that."""
        if self._stopping.is_set():
            raise StreamClosedError("RedisStream is closed")
        sub = _RedisWatcher(self)
        # added before any await: the last other watcher leaving meanwhile must not stop the subscriber
        self.subscribers.add(sub)
        try:
            if self._reader is None:
                async with self._lock:
                    if self._reader is None:
                        pubsub = await self._open()
                        self._pubsub = pubsub
                        self._live.set()
                        self._reader = asyncio.get_running_loop().create_task(self._run(pubsub))
            await self._live.wait()  # bounded by the watch's guard (the store's timeout)
            if self._stopping.is_set():
                raise StreamClosedError("RedisStream is closed")
        except BaseException:
            await self.discard(sub)
            raise
        return sub

    async def discard(self, sub: _RedisWatcher) -> None:
        """Forget ``sub``; the last watcher gone stops the subscriber."""
        self.subscribers.discard(sub)
        if not self.subscribers:
            await self.stop()

    async def stop(self) -> None:
        """Stop reading and re-subscribing, and end every watcher's reads (StopAsyncIteration); idempotent."""
        if self.store._subscriber is self:
            self.store._subscriber = None  # a later watch makes a new subscriber
        self._stopping.set()  # also ends a re-subscribe's pause at once
        self._live.set()  # a watcher waiting for the connection learns that it stopped
        now = asyncio.get_running_loop().time()
        for deadline in self._opening:
            if not deadline.expired():  # (an expired one raises; its subscribe ends anyway)
                deadline.reschedule(now)  # _open() turns that expiry into StreamClosedError
        subscribers, self.subscribers = self.subscribers, set()
        for sub in subscribers:
            sub.end()
        task, self._reader = self._reader, None
        if task is not None:
            # The task closes its pub/sub itself (nobody else reads it: no connection goes back to the pool
            # under a read).
            task.cancel()
            # A library that swallowed the cancel (python/cpython#86296) where _stopping is not checked: past _STOP_S
            # the reader is cancelled again, kept referenced until it ends (also when this stop is cancelled), and
            # given _STOP_S more; one that swallows that too (or a connection whose close never answers) is let go:
            # it held the store's close, and every watcher's end, for good.
            with contextlib.suppress(Exception):  # its failure is not the stop's
                if not await finish_within(task, _STOP_S, f"the Redis watch reader of {self._channel}", log):
                    await asyncio.wait({task}, timeout=_STOP_S)
        # A task cancelled before its first step never runs its finally: a watch closed right after its open
        # (the engine's start-up probe) left the connection subscribed, out of the pool, for good.
        leftover, self._pubsub = self._pubsub, None
        if leftover is not None:
            with contextlib.suppress(Exception):
                await finish_within(leftover.aclose(),  # type: ignore[no-untyped-call, unused-ignore]  # PubSub.aclose is typed from redis 8.2 only
                                    _STOP_S, f"the close of the Redis watch connection of {self._channel}", log)

    async def _open(self) -> PubSub:
        """A new pub/sub subscribed to the store's channel, its confirmation read (so every event published
        after this returns reaches it), within the store's timeout; ``StreamClosedError`` once stopping."""
        if self._stopping.is_set():  # a watch that waited for the first one's lock: nobody would close this one
            raise StreamClosedError("RedisStream is closed")
        requests = _cancel_requests()
        pubsub = one_shot(self.store._watch_client.pubsub(ignore_subscribe_messages=False))
        deadline = asyncio.timeout(self.store.timeout)
        try:
            try:
                async with deadline:
                    self._opening.add(deadline)  # entered: stop() may reschedule it
                    await pubsub.subscribe(self._channel)
                    while True:
                        _raise_if_cancelled(requests)  # inside the timeout: a swallowed expiry still ends the wait
                        message = await pubsub.get_message(timeout=_READ_S)
                        if message is not None and message.get("type") == "subscribe":
                            break
            except TimeoutError:
                if self._stopping.is_set():  # stop() ended the deadline, or the store closed as it expired
                    raise StreamClosedError("RedisStream is closed") from None
                raise
            finally:
                self._opening.discard(deadline)
            _raise_if_cancelled(requests)
            if self._stopping.is_set():  # stopped meanwhile: nobody would close this one
                raise StreamClosedError("RedisStream is closed")
        except BaseException:
            # a failure to close must not replace what is raised (a cancellation turned into a connection error)
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # PubSub.aclose is typed from redis 8.2 only
            raise
        return pubsub

    async def _run(self, pubsub: PubSub) -> None:
        """Read the shared pub/sub into every watcher's queue; replace it when its connection is lost."""
        failure: BaseException | None = None
        loop = asyncio.get_running_loop()
        heard, pinged = loop.time(), False
        try:
            while not self._stopping.is_set():
                try:
                    quiet = loop.time() - heard
                    if quiet > _QUIET_S + _PONG_S:
                        raise RedisConnectionError(f"no reply to PING within {_PONG_S:g} s (a half-open connection)")
                    if quiet > _QUIET_S and not pinged:
                        async with asyncio.timeout(_PONG_S):  # a send into a full socket buffer waits too
                            await pubsub.ping()
                        pinged = True
                    # a bounded read: redis-py 8.0.0 ends a blocking one at socket_timeout, as if the connection
                    # were lost; an idle connection's health check (a PING when due) is sent before each read
                    message = await pubsub.get_message(timeout=_READ_S)
                except Exception as exc:  # lost, or a reply this reader cannot take: a fresh connection either way
                    if self._stopping.is_set():
                        break
                    replaced = await self._replace(pubsub, exc)
                    if replaced is None:
                        break
                    pubsub = replaced
                    heard, pinged = loop.time(), False
                    continue
                if message is None:
                    continue
                heard, pinged = loop.time(), False  # anything at all, our PING's pong included, proves it alive
                if message.get("type") != "message":
                    continue
                data = message["data"]
                if data[:1] not in (b"{", "{"):  # checked once here: each watcher would warn about it
                    log.warning("stream watch: ignoring a message on %s that is not a JSON object", self._channel)
                    continue
                for sub in self.subscribers:
                    sub.offer(data)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._live.clear()
            self._pubsub = None
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # PubSub.aclose is typed from redis 8.2 only
            if not self._stopping.is_set():
                # cancelled from outside (the loop shutting down), or a bug: watchers left waiting would miss every
                # later event silently
                if isinstance(failure, Exception):
                    log.error("stream watch: the reader of %s failed: %r", self._channel, failure)
                self._reader = None  # this task: stop() must not wait for itself
                await self.stop()

    async def _replace(self, pubsub: PubSub, exc: BaseException) -> PubSub | None:
        """Close ``pubsub`` (its connection lost) and subscribe a fresh one, retried with backoff; ``None`` once
        stopping. Watchers subscribed meanwhile get the gap once the new one is subscribed."""
        self._live.clear()
        self._pubsub = None
        deaf = set(self.subscribers)  # events published from now until the new SUBSCRIBE are lost to them
        report = self.store.report_watch_gaps
        log.warning("stream watch: Redis connection lost (%s); re-subscribing%s", _lost(exc),
                    "" if report else "; events published meanwhile are lost")
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # PubSub.aclose is typed from redis 8.2 only
        fresh: list[PubSub] = []

        async def attempt() -> None:
            fresh.append(await self._open())

        # every failure is retried: one that gave up would leave every watcher waiting for good
        if not await retry_until_closed(attempt, self._stopping, (Exception,),
                                        lambda e: self.store._watch_retries.lost("failed", _lost(e))):
            return None
        self._pubsub = fresh[-1]
        self._live.set()
        if report:
            # no await since the new pub/sub was subscribed: the gap comes before anything it delivers
            for sub in deaf & self.subscribers:
                sub.offer_gap()
        log.info("stream watch: re-subscribed to %s", self._channel)
        return fresh[-1]


class _RedisWatcher:
    """One watcher of a store's shared pub/sub: a queue bounded in messages (``watch_queue_size``) and bytes
    (:data:`_WATCH_QUEUE_BYTES`). A consumer further behind gets :class:`~iii_streams.events.StreamLagError` (as
    from the other stores), on every later read; the other watchers are unaffected."""

    def __init__(self, subscriber: _Subscriber) -> None:
        self._subscriber = subscriber
        # messages, parsed by each reader (no two watchers share one event object); None wakes the reader after a
        # lag or a close; _GAP marks where a lost connection's events are missing
        self._queue: asyncio.Queue[bytes | str | object | None] = asyncio.Queue(subscriber.store.watch_queue_size)
        self._bytes = 0
        self._lagged = False
        self._closed = False

    def offer(self, data: bytes | str) -> None:
        """Queue one message; never blocks (a full queue marks the lag)."""
        if self._lagged or self._closed:
            return
        if self._bytes + len(data) > _WATCH_QUEUE_BYTES or self._queue.full():
            self._lagged = True
            if not self._queue.full():  # a reader may be waiting: it learns about the lag at once
                self._queue.put_nowait(None)
            # (a full queue has no reader waiting; making room would drop the oldest event before the lag)
            return
        self._queue.put_nowait(data)
        self._bytes += len(data)

    def offer_gap(self) -> None:
        """Mark where events were lost (the connection was replaced); a full queue marks the lag instead."""
        if self._lagged or self._closed:
            return
        if self._queue.full():
            self._lagged = True  # read after every queued event, as in offer()
            return
        self._queue.put_nowait(_GAP)

    def end(self) -> None:
        """The subscriber stopped (the store closed, or this watch did): reads end."""
        if not self._closed:
            self._closed = True
            wake(self._queue)

    async def get(self) -> StreamEvent:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._lagged and self._queue.empty():  # reported again on every read: every later event is dropped
                raise _lag_error(self._queue.maxsize)
            item = await self._queue.get()
            if item is None:
                continue  # a wake-up: the checks above say why
            if item is _GAP:
                raise gap_error(self._subscriber._channel)
            assert isinstance(item, bytes | str)
            self._bytes -= len(item)
            try:
                event = loads(item)
            except ValueError as exc:
                channel = self._subscriber._channel
                head = item[:16]
                if self._subscriber.store.report_watch_gaps and head in (b'{"type":"stream"', '{"type":"stream"'):
                    # one of the stores' change events, lost to every watcher: the engine's feed then has its
                    # clients join again for a fresh sync (it was skipped, and they kept a deleted item)
                    raise _unreadable_event_error(channel) from None
                log.warning("stream watch: ignoring a message on %s that is not readable JSON (%s)", channel, exc)
                continue
            if isinstance(event, dict):
                return event

    async def close(self) -> None:
        self.end()
        await self._subscriber.discard(self)


def _lag_error(maxsize: int) -> StreamLagError:
    """The error of a Redis watcher that fell behind (events or bytes).

    Example:
        >>> str(_lag_error(3))  # doctest: +ELLIPSIS
        'watcher fell more than 3 events (or 32 MiB of events) behind; events were dropped (re-read state and ...'
    """
    return StreamLagError(f"watcher fell more than {maxsize} events (or {_WATCH_QUEUE_BYTES >> 20} MiB of events) "
                          "behind; events were dropped (re-read state and watch again)")


class _Update(WriteProgress):
    """One caller's update waiting for its hash's next transaction. A batch leaves it out once its caller
    abandoned it, and marks it sent before the script that writes it (``WriteProgress``)."""

    __slots__ = ("group_id", "item_id", "max_bytes", "ops", "stream_name")

    def __init__(self, stream_name: str, group_id: str, item_id: str, ops: builtins.list[Op],
                 max_bytes: int | None = None) -> None:
        self.stream_name = stream_name
        self.group_id = group_id
        self.item_id = item_id
        self.ops = ops
        self.max_bytes = max_bytes  # its new value's bound, in UTF-8 bytes of JSON (None: none)
        self.abandoned = False
        self.sent = False


class _Write(WriteProgress):
    """One caller's ``set`` (``text``: the new value's JSON) or ``delete`` (``text`` ``None``), queued with the
    updates of its hash so that the writes of one item go out in the order they were made; answered with the old
    text the script replaced (``None``: the item was absent). Withdrawn and marked sent as an :class:`_Update` is."""

    __slots__ = ("group_id", "item_id", "stream_name", "text")

    def __init__(self, stream_name: str, group_id: str, item_id: str, text: str | None) -> None:
        self.stream_name = stream_name
        self.group_id = group_id
        self.item_id = item_id
        self.text = text
        self.abandoned = False
        self.sent = False


class _Publish(WriteProgress):
    """One caller's ``publish`` waiting in the store's queue: withdrawn while not sent, as an :class:`_Update`."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text
        self.abandoned = False
        self.sent = False


# An event of more UTF-8 bytes than this is published alone: Redis's proto-max-bulk-len (512 MB by default, 1 MB
# at least) refuses a longer one by closing the connection, and so every command pipelined with it.
_LONE_PUBLISH_BYTES: Final = 1024 * 1024
_DEFAULT_MAX_BULK: Final = 512 * 1024 * 1024


def _publish_chunks(publishes: Sequence[_Publish]) -> builtins.list[builtins.list[int]]:
    """``publishes`` (their indices) in pipelines, in order: about ``_MAX_SCRIPT_BYTES`` each at most, and an
    event over ``_LONE_PUBLISH_BYTES`` in one of its own.

    Example:
        >>> _publish_chunks([_Publish("a"), _Publish("x" * (_LONE_PUBLISH_BYTES + 1)), _Publish("b"), _Publish("c")])
        [[0], [1], [2, 3]]
    """
    chunks: builtins.list[builtins.list[int]] = []
    chunk: builtins.list[int] = []
    size = 0
    for index, publish in enumerate(publishes):
        length = len(publish.text)
        if length * 4 > _LONE_PUBLISH_BYTES:  # (a character is 4 UTF-8 bytes at most)
            length = utf8_size(publish.text)
        if length > _LONE_PUBLISH_BYTES or (chunk and size + length > _MAX_SCRIPT_BYTES):
            if chunk:
                chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(index)
        size += length
        if length > _LONE_PUBLISH_BYTES:
            chunks.append(chunk)
            chunk, size = [], 0
    if chunk:
        chunks.append(chunk)
    return chunks


def _refused_publish(reply: ResponseError) -> StreamBackendError:
    """Redis's refusal of a command over its ``proto-max-bulk-len``: nothing was published."""
    error = StreamBackendError(f"Redis refused the event as too large ({reply}; proto-max-bulk-len): not published")
    error.applied = False
    return error


class RedisStream(FieldUpdates):
    """An ``IStream`` on Redis; pass a ``redis.asyncio.Redis`` (closed by you) or use :meth:`from_url`.

    The watches' one shared pub/sub connection, held while any watch is open, is never one of the client's pool:
    it comes from a small pool of the store's own, made by the first watch (at most 2 connections: the next watch
    waits up to 30 s for one, then gets :class:`~iii_streams.errors.PoolExhaustedError`), made with that client's
    connection class and options (address, TLS, credentials, ``client_name``) and closed by :meth:`aclose`. So a
    caller's ``max_connections`` bound their commands and the store's alone.

    ``channel`` is where events go (``""`` disables them, like ``publish_events=False``);
    ``max_update_attempts`` bounds the optimistic retries of one update transaction; ``layout`` names the
    hashes (default :data:`STREAM_LAYOUT`, the production stream layout); ``timeout`` bounds each operation
    called without one (seconds, ``None`` for no limit); ``report_watch_gaps=True`` makes a watch that lost its
    connection raise :class:`StreamGapError` (a :class:`~iii_streams.events.StreamLagError`) once it subscribed
    again, instead of only logging that the events published meanwhile were lost; ``watch_queue_size`` bounds the
    events each watcher may fall behind (default 10,000, and 32 MiB of them) before it gets
    :class:`~iii_streams.events.StreamLagError`.

    Example:
        >>> s = RedisStream.from_url("redis://127.0.0.1:6379/0")
        >>> s.channel, s.timeout
        ('stream::events', 60.0)
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        publish_events: bool = True,
        channel: str = EVENTS_CHANNEL,
        max_update_attempts: int = 1000,
        owns_client: bool = False,
        layout: KeyLayout = STREAM_LAYOUT,
        timeout: float | None = DEFAULT_TIMEOUT,
        report_watch_gaps: bool = False,
        watch_queue_size: int = 10_000,
    ) -> None:
        attempts = max_update_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"RedisStream: max_update_attempts must be a positive integer, got {attempts!r}")
        _check_encoding(client)
        self._client = client
        self.layout = layout
        self.publish_events = publish_events and bool(channel)
        self.channel = channel
        # failed re-subscribes of this store's watchers, logged at most every 10 s with their count: a warning per
        # attempt was about N/2 lines a second for N watchers while Redis stayed away
        self._watch_retries = LossLog(_log_watch_retries, _WATCH_RETRY_LOG_S)
        self.max_update_attempts = max_update_attempts
        self.timeout = check_timeout(timeout)
        if not isinstance(report_watch_gaps, bool):
            raise ValueError(f"RedisStream: report_watch_gaps must be True or False, got {report_watch_gaps!r}")
        self.report_watch_gaps = report_watch_gaps
        self.watch_queue_size = check_queue_size(watch_queue_size, "RedisStream: watch_queue_size")
        self._subscriber: _Subscriber | None = None  # the watchers' shared pub/sub, while any watch is open
        # the watches' client (_watch_client), made by the first watch: a store that never watches (most of them:
        # a worker's, a state module's) pays no pool, 12x the construction's time and memory
        self._watch_pool_client: aioredis.Redis | None = None
        self.update_conflicts = 0
        """Lost races so far: an item written by another process between a batch's read and its write (each one
        cost a fresh read and a retry of the whole batch)."""
        self.known_misses = 0
        """Batches whose remembered text of an item was stale (another process wrote it): each cost a read."""
        # Items whose last written text this process knows skip the read: the compare-and-set script checks that
        # text (one round trip per batch instead of two), as the SQL stores' swap does.
        self._known: KnownTexts[tuple[str, str]] = KnownTexts()
        self._owns_client = owns_client
        self._set_script = client.register_script(_SET_SCRIPT)
        self._delete_script = client.register_script(_DELETE_SCRIPT)
        self._write_script = client.register_script(_CHECK_WRITE_PUBLISH_SCRIPT)
        self._writes_script = client.register_script(_WRITES_SCRIPT)
        self._loaded: set[str] = set()  # scripts this store loaded (SCRIPT LOAD) before its first EVALSHA of them
        # every write of a hash (set, delete, update) queues here, so the writes of one item go out in the order
        # they were made and each answer's old value is the one before it (as on the other stores)
        self._updates: KeyedBatcher[str, _Update | _Write, Any] = KeyedBatcher(
            self._hash_batch, name="RedisStream writes", max_batch=_MAX_BATCH)
        # per hash whose update run waits out a lost race: let the writes of other items pass (_let_pass)
        self._passing: dict[str, Callable[[], Awaitable[None]]] = {}
        self._max_bulk: int | None = None  # the server's proto-max-bulk-len, read at the first text over 1 MiB
        self._inline: dict[str, asyncio.Future[None]] = {}  # hashes whose lone write runs in its caller's task
        # publish() goes out through one queue, so events published in order reach Redis in order
        self._publishes: KeyedBatcher[None, _Publish, None] = KeyedBatcher(
            self._publish_batch, name="RedisStream publishes", max_batch=_MAX_BATCH)
        self._reads: ReadCoalescer[tuple[str, str], Any] = ReadCoalescer(
            self._read_values, name="RedisStream reads", max_batch=_MAX_BATCH, size=stored_size)
        self._close_once: CloseOnce = CloseOnce()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStream:
        """Open a pooled client for ``redis://``, ``rediss://`` or ``unix://`` URLs; closed by :meth:`aclose`.

        Options for this class (``publish_events``, ``channel``, ``max_update_attempts``, ``layout``,
        ``timeout``, ``report_watch_gaps``, ``watch_queue_size``) are taken out, and so are the URL's query
        parameters ``key_prefix`` (a namespace put before the layout's own prefix: ``staging`` makes the hashes
        ``staging:stream:…``, and events then go to ``staging::stream::events`` unless ``channel`` says where),
        so that an engine configured by URL alone can
        keep its data apart from another's on one Redis (:func:`store_url_options`). The pool blocks: at most
        ``max_connections`` (default 50) command connections; a caller beyond that waits for one as long as its
        operation's time limit allows (``timeout=``, the store's 60 s by default), then gets its usual
        :class:`~iii_streams.errors.StreamTimeoutError` (``applied`` ``False`` for a write never sent), whose
        message says the pool was full; a ``pool_timeout`` (seconds, or the URL's ``?timeout=``) given ends such a
        wait sooner, with :class:`~iii_streams.errors.PoolExhaustedError`. Closing the store ends the waits left
        (:class:`~iii_streams.errors.StreamClosedError`, ``applied`` ``False``). The
        watches' one pub/sub connection is not one of them: it comes from the store's watch pool (same URL and
        options, see the class), closed by :meth:`aclose` too. The other options go to the connections (e.g.
        ``socket_timeout``, ``client_name``).

        Example:
            >>> RedisStream.from_url("redis://localhost:6379/0", max_connections=8).max_update_attempts
            1000
        """
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"RedisStream needs a redis://, rediss:// or unix:// URL, got {mask_passwords(url)!r}")
        check_redis_url(url)  # named as written (waiting_client checks it again without the store's options)
        connection_url, in_url = store_url_options(url)
        own: dict[str, Any] = {k: options.pop(k) for k in _OWN_OPTIONS if k in options}
        _merge_url_options(own, in_url, url)
        options.setdefault("retry", default_retry())
        options.setdefault("socket_connect_timeout", 5)
        options.setdefault("health_check_interval", 30)
        # a caller past max_connections waits within its operation's own time limit, as a SQL store's does
        options.setdefault("pool_timeout", None)
        # the watches' connection is not one of the max_connections: the first watch makes it a pool of its own
        return cls(waiting_client(connection_url, decode_responses=False, **options), owns_client=True, **own)

    @property
    def client(self) -> aioredis.Redis:
        """The underlying ``redis.asyncio.Redis``."""
        return self._client

    @property
    def _watch_client(self) -> aioredis.Redis:
        """The client of the watches' pub/sub connection, made at its first use and closed by :meth:`aclose`.

        Its pool is the store's own, made like the client's connections, as the SQL stores' LISTEN connection is
        made outside their engine's pool. Taken from the client's pool, the pub/sub held one of its
        max_connections while any watch was open: with 1, every command of the store and of the caller's own app
        failed ("Too many connections") or waited, and a watch opened, or re-subscribed, while the app held them all
        failed or waited in turn. A client without a pool (a cluster client) is used as it is.
        """
        watch_client = self._watch_pool_client
        if watch_client is None:
            if self._close_once.closing:  # made now, nobody would close it
                raise StreamClosedError("RedisStream is closed")
            watch_client = self._watch_pool_client = subscriber_client(self._client)
        return watch_client

    def _timeout_note(self, operation: str) -> str:
        pool = self._client.connection_pool
        return pool.exhausted_note(shared=operation == "get") if isinstance(pool, _WaitingPool) else ""

    def _wrap_error(self, exc: Exception, where: str) -> StreamError | None:
        if isinstance(exc, AttributeError) and self._close_once.closing:
            # redis-py 8.0 (fixed by 8.2): a command writing on a connection the close disconnected meets its writer
            # gone ("'NoneType' object has no attribute 'writelines'"): the close cut it, as a ConnectionError says
            return StreamClosedError(f"{where}: the RedisStream was closed while this operation ran (redis-py: {exc})")
        if isinstance(exc, RedisTimeoutError):
            return StreamTimeoutError(f"{where}: Redis did not answer in time: {exc}")
        if isinstance(exc, MaxConnectionsError):  # a client passed in, with a plain pool: Redis itself is fine
            return PoolExhaustedError(f"{where}: the Redis client's connection pool is exhausted (every one of its "
                                      f"max_connections in use, the keyword argument or the URL option "
                                      f"?max_connections=N of the client given): {exc}; a "
                                      "redis.asyncio.BlockingConnectionPool makes callers wait for one instead")
        if isinstance(exc, RedisConnectionError):
            if self._close_once.closing:  # the store's own close cut the connection under this operation
                # A command already written may have been applied: an engine's stop reported 5-24 state::set calls
                # per run as failed, every one of them found in Redis after the restart.
                # (a write's caller restates it with the write's outcome: StreamClosedError.with_outcome)
                return StreamClosedError(f"{where}: the RedisStream was closed while this operation ran "
                                         f"(redis-py: {exc})")
            return StreamUnavailableError(f"{where}: Redis unreachable: {exc}")
        if isinstance(exc, (OutOfMemoryError, ReadOnlyError)):
            # Refused before anything was written (a script is refused at its first write, and once it has written
            # Redis lets it finish), so a write's caller may retry safely: applied False, not "unknown"
            refused = StreamBackendError(f"{where}: Redis refused the write, nothing was applied: {exc}")
            refused.applied = False
            return refused
        if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE"):
            # Every script and read of a group starts with a read of its hash, which Redis refuses on a key of
            # another type before anything is written: applied False (it said "may have been applied")
            # (a read as well as a write: "nothing was written" read as if the read had been one)
            refused = StreamBackendError(f"{where}: the group's Redis key holds another type than a hash (a key of "
                                         f"something else than a stream store); Redis refused the command before it "
                                         f"changed anything: {exc}")
            refused.applied = False
            return refused
        if isinstance(exc, RedisError):
            return StreamBackendError(f"{where}: Redis refused the command: {exc}")
        if isinstance(exc, UnicodeDecodeError):  # a client with decode_responses=True read a stored value
            return StreamDataError(f"{where}: a stored value is not UTF-8 text (written by something else): {exc}")
        return super()._wrap_error(exc, where)

    def _parse(self, raw: bytes | str, key: str, field: str) -> Any:
        try:
            return loads(raw)
        except ValueError as exc:
            raise StreamDataError(f"value of field {field!r} in Redis hash {key!r} {why_unreadable(raw, exc)}, "
                                  "written by something else than a stream store") from None

    async def _parse_values(self, values: Sequence[bytes | str], key: str) -> builtins.list[Any]:
        """The parsed values of a group read by ``HVALS``, which names no item: one that is not JSON is looked for
        again with ``HSCAN`` (the error path only), so the error names its item, not ``<hvals>``."""
        try:
            return [loads(raw) for raw in values]
        except ValueError:
            pass
        async with self._guard("list", None):
            async for field, raw in self._client.hscan_iter(key):  # _parse raises StreamDataError naming the item
                self._parse(raw, key, field.decode(errors="backslashreplace") if isinstance(field, bytes) else field)
        # its item rewritten since the HVALS: the error tells what that read saw
        return [self._parse(raw, key, "(an item rewritten since the read)") for raw in values]

    def _old_value(self, raw: bytes | str | None, key: str, field: str) -> Any:
        """The old value a write script replaced and returned (``raw``). Not JSON, the error says the write was
        applied: before, a set or delete over such a value raised the bare parse error, as if it had failed, while
        its new value was stored and its event published."""
        try:
            return None if raw is None else self._parse(raw, key, field)
        except StreamDataError as exc:
            raise exc.for_write(applied=True) from None

    def _channel_args(self, stream_name: str, group_id: str, item_id: str) -> builtins.list[str]:
        if not self.publish_events:
            return ["", "", ""]
        head, tail = event_json_parts(stream_name, group_id, item_id)
        return [self.channel, head, tail]

    async def get(self, input: StreamGetInput, *, timeout: float | None = None) -> Any:
        """The item's value (one ``HGET``), ``None`` when it is missing.

        Example:
            >>> import asyncio, fakeredis
            >>> async def demo() -> Any:
            ...     async with RedisStream(fakeredis.FakeAsyncRedis()) as s:
            ...         return await s.get(StreamGetInput(stream_name="s", group_id="g", item_id="missing"))
            >>> asyncio.run(demo()) is None
            True
        """
        check_names(input.stream_name, input.group_id, input.item_id)
        key = self.layout.key(input.stream_name, input.group_id)
        async with self._guard("get", timeout):
            raw = await self._reads.submit((key, input.item_id))
        return None if raw is None else self._parse(raw, key, input.item_id)

    async def _read_values(self, requests: Sequence[tuple[str, str]]) -> builtins.list[Any]:
        """The replies of ``HGET``s of ``(key, item id)`` requests: the reads of concurrent gets
        (:class:`~iii_streams.coalescing.ReadCoalescer`), several sent in one pipeline (one connection, one round
        trip), each command's error its own get's. Why: 64 gets in flight took a pooled connection and a round trip
        each (77 us of CPU a get)."""
        if len(requests) == 1:
            return [await raw_reply(self._client, "HGET", *requests[0])]
        pipe = self._client.pipeline(transaction=False)
        for key, item_id in requests:
            pipe.execute_command("HGET", key, item_id, **RAW_REPLY)
        replies: builtins.list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def set(self, input: StreamSetInput, *, timeout: float | None = None) -> StreamSetResult[Any]:
        """Write the item and publish its event in one script; returns the old and the new value.

        Example:
            >>> import asyncio, fakeredis
            >>> async def demo() -> Any:
            ...     async with RedisStream(fakeredis.FakeAsyncRedis()) as s:
            ...         await s.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
            ...         r = await s.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=2))
            ...         return r.old_value, r.new_value
            >>> asyncio.run(demo())
            (1, 2)
        """
        check_names(input.stream_name, input.group_id, input.item_id)
        key = self.layout.key(input.stream_name, input.group_id)
        text = json_text(input.data, "data")
        if len(text) > _LONE_PUBLISH_BYTES // 4:
            await self._check_bulk(text, "RedisStream.set: the value")
        raw = await self._submit("set", timeout, key, _Write(input.stream_name, input.group_id, input.item_id, text))
        return SetResult(old_value=self._old_value(raw, key, input.item_id), new_value=input.data)

    async def delete(self, input: StreamDeleteInput, *, timeout: float | None = None) -> StreamDeleteResult:
        """Remove the item (and its group's hash with its last item); returns its old value.

        Example:
            >>> import asyncio, fakeredis
            >>> async def demo() -> Any:
            ...     async with RedisStream(fakeredis.FakeAsyncRedis()) as s:
            ...         await s.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=[1]))
            ...         r = await s.delete(StreamDeleteInput(stream_name="s", group_id="g", item_id="i"))
            ...         return r.old_value, await s.list_groups(StreamListGroupsInput(stream_name="s"))
            >>> asyncio.run(demo())
            ([1], [])
        """
        check_names(input.stream_name, input.group_id, input.item_id)
        key = self.layout.key(input.stream_name, input.group_id)
        raw = await self._submit("delete", timeout, key,
                                 _Write(input.stream_name, input.group_id, input.item_id, None))
        return StreamDeleteResult(old_value=self._old_value(raw, key, input.item_id))

    async def _submit(self, operation: str, timeout: float | None, key: str, write: _Update | _Write) -> Any:
        """Queue ``write`` with the other writes of hash ``key`` and wait for its answer, under the operation's
        guard. Past the time limit the ``StreamTimeoutError`` says whether the write had been sent (outcome
        unknown) or was withdrawn (not applied), and so does a ``StreamUnavailableError`` or ``StreamClosedError``
        (its ``applied``: ``None`` or ``False``); a cancelled caller's write is withdrawn unless it was sent."""
        try:
            async with self._guard(operation, timeout):
                if type(write) is _Write and key not in self._inline and not self._updates.active(key):
                    return await self._write_inline(key, write)
                return await self._updates.submit(key, write)
        except StreamTimeoutError as exc:
            raise write.timeout_error(exc) from exc
        except (StreamUnavailableError, StreamClosedError) as exc:  # the connection was lost or cut by the close:
            raise exc.with_outcome(write.sent) from exc.__cause__  # was the script sent (applied None) or not?
        except asyncio.CancelledError:
            write.give_up()
            raise

    async def list(self, input: StreamListInput, *, timeout: float | None = None) -> builtins.list[Any]:
        """Every item value of a group (one ``HVALS``; Redis decides the order).

        Example:
            >>> import asyncio, fakeredis
            >>> async def demo() -> Any:
            ...     async with RedisStream(fakeredis.FakeAsyncRedis()) as s:
            ...         for item_id in ("a", "b"):
            ...             await s.set(StreamSetInput(stream_name="s", group_id="g", item_id=item_id, data=item_id))
            ...         return sorted(await s.list(StreamListInput(stream_name="s", group_id="g")))
            >>> asyncio.run(demo())
            ['a', 'b']
        """
        check_names(input.stream_name, input.group_id)
        key = self.layout.key(input.stream_name, input.group_id)
        async with self._guard("list", timeout):
            values: Sequence[bytes | str] = await raw_reply(self._client, "HVALS", key)
        return await self._parse_values(values, key)

    async def list_text(self, input: StreamListInput, *, max_bytes: int | None = None) -> str:
        """:meth:`list` as one JSON array text; with ``max_bytes``, the values' size is summed in Redis first and a
        group over it raises :class:`~iii_streams.errors.StreamTooLargeError` without being read.

        Example:
            >>> import asyncio, fakeredis
            >>> async def demo() -> Any:
            ...     async with RedisStream(fakeredis.FakeAsyncRedis()) as s:
            ...         await s.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data="abcdef"))
            ...         small = await s.list_text(StreamListInput(stream_name="s", group_id="g"), max_bytes=10)
            ...         try:
            ...             await s.list_text(StreamListInput(stream_name="s", group_id="g"), max_bytes=9)
            ...         except StreamTooLargeError as exc:
            ...             return small, exc.size
            >>> asyncio.run(demo())
            ('["abcdef"]', 10)
        """
        if max_bytes is None:
            return await super().list_text(input)
        check_names(input.stream_name, input.group_id)
        key = self.layout.key(input.stream_name, input.group_id)
        async with self._guard("list", None):
            reply: int | Sequence[bytes | str] = await raw_reply(
                self._client, "EVAL", _BOUNDED_HVALS_SCRIPT, 1, key, max_bytes, _EXACT_ITEMS)
        if isinstance(reply, int):
            check_list_bytes(input, reply, max_bytes)
            reply = ()
        # decoded and encoded again (a stored text is checked as JSON, as list() does): at most max_bytes of it
        text = dumps(await self._parse_values(reply, key))
        check_list_bytes(input, utf8_size(text), max_bytes)
        return text

    async def list_groups(
        self, input: StreamListGroupsInput, *, timeout: float | None = None
    ) -> builtins.list[str]:
        """Every non-empty group of a stream (a ``SCAN`` of its hashes).

        Example:
            >>> import asyncio, fakeredis
            >>> async def demo() -> Any:
            ...     async with RedisStream(fakeredis.FakeAsyncRedis()) as s:
            ...         await s.set(StreamSetInput(stream_name="todos", group_id="user:1", item_id="1", data=1))
            ...         return await s.list_groups(StreamListGroupsInput(stream_name="todos"))
            >>> asyncio.run(demo())
            ['user:1']
        """
        check_names(input.stream_name, "")
        prefix = self.layout.group_prefix(input.stream_name)
        skip = len(prefix)
        seen: dict[str, None] = {}  # SCAN may repeat keys; keep first-seen order
        async with self._guard("list_groups", timeout):
            # hashes only (SCAN's TYPE, Redis 6.0+): another program's string or list under the prefix is no group
            async for key in self._client.scan_iter(match=_glob_escape(prefix) + "*", count=1000, _type="hash"):
                # bytes, or text from a client made with decode_responses=True
                seen.setdefault((key if isinstance(key, str) else key.decode())[skip:], None)
        return builtins.list(seen)

    async def _update(self, stream_name: str, group_id: str, item_id: str, ops: builtins.list[Op],
                      timeout: float | None, *, max_bytes: int | None = None) -> StreamUpdateResult[Any]:
        # refused before queuing: a name Redis cannot be sent would fail every update of the hash's batch
        check_names(stream_name, group_id, item_id)
        key = self.layout.key(stream_name, group_id)
        # max_bytes is checked on the text the batch's compare-and-set writes (_apply_batch): against the value
        # it replaces, so no write of another process or caller can slip between the check and the write
        result: StreamUpdateResult[Any] = await self._submit("update", timeout, key,
                                                             _Update(stream_name, group_id, item_id, ops, max_bytes))
        return result

    async def _write_inline(self, key: str, write: _Write) -> Any:
        """A set or delete of a hash with no other write of this process under way, run in its caller's task: the
        queue's runner task and the caller's wake-up cost a lone set about 25 µs of CPU (74-81 → 99-136 µs a set,
        ``bench/streams_backends.py``, row ``set``). Writes made meanwhile queue, and their batch waits for this one
        first (:meth:`_hash_batch`)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inline[key] = done
        try:
            (old,) = await self._send_writes(key, [write])  # bounded by the caller's guard
        finally:
            del self._inline[key]
            done.set_result(None)  # (batches wait for it shielded: nobody cancels it)
        return old

    async def _hash_batch(
        self, key: str, batch: Sequence[_Update | _Write]
    ) -> builtins.list[Any]:
        """The waiting writes of hash ``key``, each item's in the order they were made: runs of sets and deletes in
        one writes script (:meth:`_writes_batch`, at most about ``_MAX_SCRIPT_BYTES`` of values), runs of updates in
        one compare-and-set (:meth:`_update_batch`), one after the other. Only the writes of one item keep their
        order, so a run takes every write of its kind whose item has no earlier write of the other kind waiting:
        alternating sets of some items and updates of others are two runs, not one per alternation (12,400-15,200
        ops/s for 64 in flight before the writes shared the queue, 5,700-7,500 with a run per alternation). And
        while an update run waits out a lost race, the sets and deletes of items it does not touch (here or still
        queued) go out meanwhile (:meth:`_let_pass`): behind another process's contended item, the sets of its
        neighbour took 0.7-3.6 s at worst. A run that fails answers its own callers with that failure; the others
        still go out (each write is its own caller's, as when they ran side by side)."""
        inline = self._inline.get(key)
        if inline is not None:  # a lone write made before these runs in its caller's task: it goes out first
            await asyncio.shield(inline)
        results: builtins.list[Any] = [None] * len(batch)
        left = builtins.list(range(len(batch)))  # the writes not yet run, in order
        while left:
            kind = type(batch[left[0]])
            run: builtins.list[int] = []
            rest: builtins.list[int] = []
            blocked: set[str] = set()  # items with an earlier write left for a later run
            size = 0
            for index in left:
                write = batch[index]
                if write.item_id not in blocked and type(write) is kind:
                    if kind is _Write:
                        size += len(write.text or "")  # type: ignore[union-attr]
                    if not run or size <= _MAX_SCRIPT_BYTES:
                        run.append(index)
                        continue
                blocked.add(write.item_id)
                rest.append(index)
            left[:] = rest  # (_let_pass takes from it while the run waits)
            count = len(run)
            try:
                if kind is _Write:
                    answers = await self._writes_batch(key, [batch[i] for i in run])  # type: ignore[misc]
                else:
                    updates: builtins.list[_Update] = [batch[i] for i in run]  # type: ignore[misc]
                    # (looked up by _update_batch, whose signature tests wrap)
                    self._passing[key] = functools.partial(self._let_pass, key, updates, batch, left, results)
                    try:
                        answers = await self._update_batch(key, updates)
                    finally:
                        del self._passing[key]
            except Exception as exc:
                answers = [exc] * count
            later = []
            for index, answer in zip(run, answers, strict=True):
                if answer is _LATER:
                    later.append(index)  # before every other write left: each item's order holds
                else:
                    results[index] = answer
            left[:0] = later
        return results

    async def _let_pass(self, key: str, updates: Sequence[_Update], batch: Sequence[_Update | _Write],
                        left: builtins.list[int], results: builtins.list[Any]) -> None:
        """While ``updates`` wait out a lost race: send the sets and deletes that no write of their item waits
        before, here (``left`` of ``batch``, answered into ``results``) or still in the hash's queue (answered
        here), in one writes script. Each item's writes keep their order: an item with an earlier write still
        waiting (one of ``updates`` among them) is left for later whole."""
        blocked = {update.item_id for update in updates}
        size = 0

        def pick(write: _Update | _Write) -> bool:
            nonlocal size
            if write.item_id in blocked or type(write) is not _Write:
                blocked.add(write.item_id)
                return False
            size += len(write.text or "")
            if size > _MAX_SCRIPT_BYTES:
                blocked.add(write.item_id)
                return False
            return True

        mine = [index for index in left if pick(batch[index])]
        queued = self._updates.take(key, pick, limit=_MAX_BATCH)
        if not mine and not queued:
            return
        taken = set(mine)
        left[:] = [index for index in left if index not in taken]
        writes = [batch[i] for i in mine] + [write for write, _ in queued]
        try:
            answers: Sequence[Any] = await self._send_writes(key, writes)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            fail_futures(queued, StreamClosedError("RedisStream writes was closed while a write was in flight"))
            raise
        except Exception as exc:
            answers = [exc] * len(writes)
        for index, answer in zip(mine, answers, strict=False):
            results[index] = answer
        for (_, future), answer in zip(queued, answers[len(mine):], strict=True):
            if not future.done():
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _writes_batch(self, key: str, batch: Sequence[_Write]) -> builtins.list[Any]:
        """:meth:`_send_writes` within the store's timeout: a hung server must not keep the hash's queue waiting
        forever."""
        async with self._store_deadline():
            return await self._send_writes(key, batch)

    async def _send_writes(self, key: str, batch: Sequence[_Write]) -> builtins.list[Any]:
        """Sets and deletes of hash ``key`` in one script, in order (a lone one in its own smaller script): each
        caller's old text (``None``: absent), or ``_WITHDRAWN`` for a write its caller gave up before it was sent.
        The script is made once a connection is taken (:meth:`_run_once`): a write given up while its batch waited
        for the pool is left out, and said not applied (before, marked sent ahead of that wait, it was said to
        have been sent)."""
        for write in batch:
            # read first by the next update: a set here ran as the stores' plain writes always did, blind
            self._known.forget((key, write.item_id))
        if all(write.abandoned for write in batch):
            return [_WITHDRAWN] * len(batch)
        sent: builtins.list[_Write] = []

        def pick() -> tuple[AsyncScript, builtins.list[Any]] | None:
            sent[:] = [w for w in batch if not w.abandoned]
            for write in sent:
                write.sent = True  # no await since the check: a caller giving up from now on cannot withdraw it
            if len(sent) > 1:
                return self._writes_script, self._writes_args(sent)
            if not sent:
                return None
            one = sent[0]
            channel = self._channel_args(one.stream_name, one.group_id, one.item_id)
            if one.text is None:
                return self._delete_script, [one.item_id, *channel]
            return self._set_script, [one.item_id, one.text, *channel]

        progress = WriteProgress()
        try:
            reply = await self._run_once(key, pick, progress, (self._writes_script, self._set_script,
                                                                self._delete_script))
        except BaseException:
            if not progress.sent:  # the connection failed before the script was written: nothing was applied
                for write in sent:
                    write.sent = False
            raise
        if reply is _NOT_SENT:
            return [_WITHDRAWN] * len(batch)
        olds = reply if len(sent) > 1 else [reply]
        if len(sent) == len(batch):
            return builtins.list(olds)
        answers = iter(olds)  # nobody waits for a withdrawn one, and it was not written
        return [next(answers) if write.sent else _WITHDRAWN for write in batch]

    def _writes_args(self, batch: Sequence[_Write]) -> builtins.list[Any]:
        """The arguments of the writes script (``_WRITES_SCRIPT``) for ``batch``: one event head per item."""
        args: builtins.list[Any] = [self.channel if self.publish_events else ""]
        heads: dict[tuple[str, str, str], tuple[str, str]] = {}
        for write in batch:
            item = (write.stream_name, write.group_id, write.item_id)
            head, tail = "", ""
            if self.publish_events:
                parts = heads.get(item)
                if parts is None:
                    parts = heads[item] = event_json_parts(*item)
                head, tail = parts
            text = write.text
            args += ("d", write.item_id, "", head, tail) if text is None else ("s", write.item_id, text, head, tail)
        return args

    async def _update_batch(
        self, key: str, batch: Sequence[_Update]
    ) -> builtins.list[StreamUpdateResult[Any] | BaseException]:
        """One read and one compare-and-set script for every waiting update of hash ``key`` (no read when this
        process knows every item's text, unless an update fails on those texts: it is decided on a fresh read),
        retried after a fresh read with jittered backoff on a lost race; during the backoff the hash's other writes
        may pass (:meth:`_let_pass`)."""
        let_pass = self._passing.get(key)
        fields = builtins.list(dict.fromkeys(u.item_id for u in batch))
        ceiling = _BACKOFF_FIRST
        # bounded by the store's timeout: a hung server must not keep the hash's queue waiting forever
        async with self._store_deadline():  # asyncio.timeout(self.timeout) on the store's shared timer
            known = self._known_texts(key, fields)
            if known is not None:
                planned = self._apply_batch(key, batch, known)
                # an update refused against a text this process wrote last (over its max_bytes, an op that does
                # not fit the value) is decided on a value read now instead: another process may have changed the
                # item since, and a refusal writes nothing, so no compare-and-set would ever tell (before, an update
                # that fitted the item another process had shrunk was refused for good)
                if not self._refused_on_known(key, batch, planned[0]):
                    results = await self._write_batch(key, batch, known, planned)
                    if results is not None:
                        return results
                    self.known_misses += 1  # another process wrote one of them: read them as they are now
            for _ in range(self.max_update_attempts):
                # as bytes: one stored value that is not UTF-8 failed a decoding client's whole reply
                raws: builtins.list[bytes | str | None] = await raw_reply(
                    self._client, "HMGET", key, *fields)
                results = await self._write_batch(key, batch, dict(zip(fields, raws, strict=True)))
                if results is not None:
                    return results
                # another process wrote one of the items since the read: wait a random share of a growing
                # ceiling so the racers spread out instead of colliding again
                self.update_conflicts += 1
                await self._back_off(key, random.uniform(0, ceiling), let_pass)
                ceiling = min(ceiling * 2, _BACKOFF_CAP)
        raise UpdateConflictError(
            f"update of {len(batch)} item(s) in {key!r} conflicted {self.max_update_attempts} times in a row"
        )

    async def _back_off(self, key: str, delay: float, let_pass: Callable[[], Awaitable[None]] | None) -> None:
        """Wait ``delay`` seconds after a lost race, letting the hash's other writes pass meanwhile (``let_pass``:
        at once, and whenever one more is queued)."""
        if let_pass is None:
            await asyncio.sleep(delay)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while True:
            await let_pass()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            arrived = self._updates.arrival(key)
            await asyncio.wait((arrived,), timeout=remaining)

    def _refused_on_known(self, key: str, batch: Sequence[_Update],
                          results: Sequence[StreamUpdateResult[Any] | BaseException]) -> bool:
        """Whether an update of ``batch`` failed (``results``: :meth:`_apply_batch`'s on the texts this process
        knows); the items of those failures are forgotten, so they are read first from now on."""
        refused = False
        for update, result in zip(batch, results, strict=False):
            if _refusal(result):
                self._known.forget((key, update.item_id))
                refused = True
        return refused

    async def _write_batch(
        self, key: str, batch: Sequence[_Update], read: dict[str, bytes | str | None],
        planned: tuple[builtins.list[StreamUpdateResult[Any] | BaseException], dict[Any, str],
                       builtins.list[str]] | None = None,
    ) -> builtins.list[StreamUpdateResult[Any] | BaseException] | None:
        """Apply ``batch`` to the texts ``read`` (``planned``: :meth:`_apply_batch` of them, already run) and write
        the results if every item still holds its text read (compare-and-set, atomic with the events): each
        caller's result, or ``None`` when another process won."""
        results, texts, events = planned if planned is not None else self._apply_batch(key, batch, read)
        if not texts:
            return results
        applied: builtins.list[_Update] = []
        stale = False

        def pick() -> tuple[AsyncScript, builtins.list[Any]] | None:
            # made once a connection is taken (:meth:`_run_once`): an update given up while the batch waited for
            # the pool is left out (applied again to the texts read, without it) and said not applied
            nonlocal results, texts, events, stale
            if any(u.abandoned for u, result in zip(batch, results, strict=True)
                   if not isinstance(result, BaseException)):
                first = results
                results, texts, events = self._apply_batch(key, batch, read)
                if any(_refusal(now) and not isinstance(before, BaseException)
                       for before, now in zip(first, results, strict=True)):
                    # refused only without the one left out: decided on a fresh read instead (the texts read may
                    # be this process's own, which another process has changed since: no compare-and-set of a
                    # refusal would tell)
                    stale = True
                    return None
            if not texts:
                return None
            applied[:] = [u for u, result in zip(batch, results, strict=True)
                          if not u.abandoned and result is not _LATER]
            for update in applied:
                update.sent = True  # no await since _apply_batch: a caller giving up from now on cannot withdraw
            args: builtins.list[Any] = [self.channel, len(texts),
                                        "".join("1" if read[f] is None else "0" for f in texts)]
            for field, text in texts.items():
                args += (field, read[field] or b"", text)
            args.append("\n".join(events))
            return self._write_script, args

        progress = WriteProgress()
        try:
            written = await self._run_once(key, pick, progress, (self._write_script,))
        except BaseException:
            if not progress.sent:  # the connection failed before the script was written: nothing was applied
                for update in applied:
                    update.sent = False
            raise
        if written is _NOT_SENT:
            if stale:
                for update in batch:
                    self._known.forget((key, update.item_id))
                return None  # read again, as after a lost race
            return results  # every update with something to write was given up: nothing was sent
        for field, text in texts.items():
            if written:
                self._known.wrote((key, field), text)
            else:  # another process wrote one of them, maybe this one: read them first for a while
                self._known.distrust((key, field))
        if not written:
            for update in applied:
                update.sent = False  # nothing was written: the retry may still leave them out
        return results if written else None

    async def _run_once(self, key: str, pick: Callable[[], tuple[AsyncScript, Sequence[Any]] | None],
                        progress: WriteProgress | None = None, scripts: Sequence[AsyncScript] = ()) -> Any:
        """The reply of the script ``pick()`` gives (a script and its arguments, or ``None`` for nothing to send:
        ``_NOT_SENT`` is returned), sent at most once: never again after it may have reached Redis. ``pick`` is
        called once a pooled connection is taken, with no await until the send, so the writes it marks sent are
        those still waited for after the wait for the pool. ``scripts`` are the ones it may pick, loaded first.

        Why not ``script(keys=..., args=...)``: a client told to retry (redis-py's ``retry``/``retry_on_error``)
        sends a command again when the connection drops before the reply, though Redis may have run it. A write
        script run twice publishes its events twice, and the update batch's second run finds its own write, takes
        it for another process's, and the batch was read again and applied a second time (one increment, +2).
        Here a dropped connection is the caller's error (the outcome is unknown), as with the default client.
        ``progress`` is marked sent just before the script is written to the connection (not while the
        connection is taken, reconnected or health-checked), and unmarked when Redis answers ``NOSCRIPT`` (it ran
        nothing) until the script is sent again.
        """
        for script in scripts:
            if script.sha not in self._loaded:
                # Loaded before the first EVALSHA rather than on a NOSCRIPT reply: servers that word that reply
                # otherwise (fakeredis 2.30, our floor: no NOSCRIPT prefix, so no NoScriptError) still run it.
                script.sha = await self._client.script_load(script.script)
                self._loaded.add(script.sha)
        bounded = self.timeout is not None  # else only the socket timeout ends a send Redis does not read
        pool = self._client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            picked = pick()
            if picked is None:
                return _NOT_SENT
            script, args = picked
            try:
                await _send(conn, _pack_evalsha(conn, script.sha, key, args), bounded, progress)
                # as bytes: a decoding client failed on an old value that is not UTF-8 after the write was applied
                return await conn.read_response(disable_decoding=True)
            except NoScriptError:  # Redis ran nothing (restarted, or SCRIPT FLUSH): load it and send it again
                if progress is not None:
                    progress.sent = False
                script.sha = await _script_load(conn, script.script)
                await _send(conn, _pack_evalsha(conn, script.sha, key, args), bounded, progress)
                return await conn.read_response(disable_decoding=True)
        except ResponseError as exc:
            if not str(exc).startswith("Protocol error"):
                raise
            # an argument over proto-max-bulk-len: Redis ran nothing and closes the connection after this reply
            await conn.disconnect()
            refused = StreamBackendError(f"Redis refused the write as too large ({exc}; proto-max-bulk-len): "
                                         "not applied")
            refused.applied = False
            raise refused from exc
        finally:
            await pool.release(conn)

    def _known_texts(self, key: str, fields: Sequence[str]) -> dict[str, bytes | str | None] | None:
        """The texts of ``fields`` this process wrote last, or ``None`` unless it knows every one of them."""
        known: dict[str, bytes | str | None] = {}
        for field in fields:
            text = self._known.get((key, field))
            if text is None:
                return None
            known[field] = text
        return known

    def _apply_batch(
        self, key: str, batch: Sequence[_Update], raws: dict[str, bytes | str | None]
    ) -> tuple[builtins.list[StreamUpdateResult[Any] | BaseException], dict[Any, str], builtins.list[str]]:
        """Apply ``batch`` in order to the stored texts: each caller's result, the texts to write, the events."""
        current: dict[str, str | bytes | None] = {}
        for name, raw in raws.items():
            if isinstance(raw, bytes):
                try:
                    raw = raw.decode()
                except UnicodeDecodeError:
                    pass  # not UTF-8 (written by something else): parsing it fails for that item's callers alone
            current[name] = raw
        results: builtins.list[StreamUpdateResult[Any] | BaseException] = []
        texts: dict[Any, str] = {}
        events: builtins.list[str] = []
        # one event head per item and batch (as the SQL stores do): its events are published together, in one
        # script, so they share one timestamp; building a head encodes JSON, which per update was a cost of its own
        heads: dict[tuple[str, str, str], tuple[str, str]] = {}
        size = 0  # characters of the texts and events so far (the script's arguments)
        for taken, update in enumerate(batch):
            if update.abandoned:
                results.append(_WITHDRAWN)  # nobody waits for it, and it is not written
                continue
            old_text = current[update.item_id]
            try:
                # parsed per caller, so no two callers share (and could mutate) one value object
                old = None if old_text is None else self._parse(old_text, key, update.item_id)
                _, new = apply_update(old, update.ops)
                text = json_text(new, "the updated value")  # else it would fail the whole script
                check_value_bytes(text, update.max_bytes)  # refused alone: the item keeps its text for the rest
            except StreamDataError as exc:  # stored non-JSON: nothing of this caller's is written
                results.append(exc.for_write(applied=False))
                continue
            except Exception as exc:  # this caller's own failure (a value dumps refuses)
                results.append(exc)
                continue
            event = ""
            if self.publish_events:
                item = (update.stream_name, update.group_id, update.item_id)
                parts = heads.get(item)
                if parts is None:
                    parts = heads[item] = event_json_parts(*item)
                head, tail = parts
                event = f'{head}{"create" if old is None else "update"}","data":{text}{tail}'
            size += len(text) + len(event)
            if size > _MAX_SCRIPT_BYTES and texts:  # this one and the rest go in the next run (see _LATER)
                results += [_LATER] * (len(batch) - taken)
                break
            current[update.item_id] = texts[update.item_id] = text
            if event:
                events.append(event)
            results.append(UpdateResult(old_value=old, new_value=new))
        return results, texts, events

    async def send(self, stream_name: str, group_id: str, id: str | None, type: str, data: Any) -> None:
        """Publish a custom event on the store's channel; stores nothing.

        Example:
            >>> import asyncio, fakeredis
            >>> async def demo() -> Any:
            ...     async with RedisStream(fakeredis.FakeAsyncRedis()) as s, s.watch("chat") as events:
            ...         await s.send("chat", "room-1", None, "typing", {"user": "ada"})
            ...         return (await anext(events))["event"]
            >>> asyncio.run(demo())
            {'type': 'event', 'event': {'type': 'typing', 'data': {'user': 'ada'}}}
        """
        json_text(data, "data", room=SEND_ROOM)  # the event's own check leaves no room for a trigger's call
        await self.publish(custom_event(stream_name, group_id, id, type, data))

    async def publish(self, event: StreamEvent) -> None:
        """Publish an already built event on the store's channel, to the watchers of every process.

        Example:
            >>> import asyncio, fakeredis
            >>> from iii_streams.events import make_event
            >>> async def demo() -> Any:
            ...     async with RedisStream(fakeredis.FakeAsyncRedis()) as s, s.watch("s") as events:
            ...         await s.publish(make_event("s", "g", "i", "update", {"n": 1}))
            ...         return (await anext(events))["event"]
            >>> asyncio.run(demo())
            {'type': 'update', 'data': {'n': 1}}
        """
        publish = _Publish(json_text(event, "the event", room=0))
        if len(publish.text) > _LONE_PUBLISH_BYTES // 4:
            await self._check_bulk(publish.text, "RedisStream.publish: the event")
        try:
            async with self._guard("publish", None):
                await self._publishes.submit(None, publish)
        except StreamTimeoutError as exc:  # still queued (never sent: withdrawn, applied False) or sent (None)
            raise publish.timeout_error(exc) from exc
        except (StreamUnavailableError, StreamClosedError) as exc:
            raise exc.with_outcome(publish.sent) from exc.__cause__
        except asyncio.CancelledError:
            publish.give_up()
            raise

    async def _check_bulk(self, text: str, what: str) -> None:
        """Refuse ``text`` before it is queued when it is over the server's ``proto-max-bulk-len`` (read once with
        ``CONFIG GET``; 512 MB, the default, where that is not allowed): Redis would close the connection while
        it is sent, an outcome the caller could not tell from a lost connection (applied unknown)."""
        size = utf8_size(text)
        if size <= _LONE_PUBLISH_BYTES:  # Redis's least proto-max-bulk-len
            return
        if self._max_bulk is None:
            try:
                async with self._guard("config", None):
                    reply: Mapping[Any, Any] = await self._client.config_get("proto-max-bulk-len")
                found = next(iter(reply.values()), None)
                self._max_bulk = int(found) if found is not None else _DEFAULT_MAX_BULK
            except (StreamError, ValueError):  # CONFIG refused (ACL, a managed service): assume the default
                self._max_bulk = _DEFAULT_MAX_BULK
        if size > self._max_bulk:
            error = StreamBackendError(f"{what} is too large: {size} bytes of JSON, over the server's "
                                       f"proto-max-bulk-len ({self._max_bulk}); not sent and not applied")
            error.applied = False
            raise error

    async def _publish_batch(self, _key: None, publishes: Sequence[_Publish]) -> builtins.list[Any]:
        """The publishes waiting, in order, pipelined on one connection: Redis runs one connection's commands in
        the order sent, so events published in order arrive in order (each on a pooled connection of its own, a
        subscriber got them in another order: it ended on ``{'v': 1}`` while the item held ``{'v': 5}``, 4 of 6
        runs). Each caller gets its own command's answer; one batch at a time. A pipeline carries about
        ``_MAX_SCRIPT_BYTES`` at most, and an event over ``_LONE_PUBLISH_BYTES`` (Redis's least
        ``proto-max-bulk-len``) goes alone: a server that refuses it closes the connection, which failed the
        events pipelined with it too, even those already delivered (50 of 101, and their callers' retries
        duplicated them)."""
        channel = self.channel or EVENTS_CHANNEL
        results: builtins.list[Any] = [_WITHDRAWN] * len(publishes)
        async with self._store_deadline():  # a hung server must not keep the queue waiting forever
            for chunk in _publish_chunks(publishes):
                live = [index for index in chunk if not publishes[index].abandoned]
                if not live:
                    continue
                for index in live:
                    publishes[index].sent = True  # no await since the check: a caller giving up cannot withdraw
                progress = WriteProgress()
                try:
                    replies = await self._pipelined(
                        [("PUBLISH", channel, publishes[index].text) for index in live], progress)
                except Exception as exc:  # this pipeline's callers learn why; the next pipeline still goes out
                    if not progress.sent:
                        for index in live:
                            publishes[index].sent = False
                    replies = [exc] * len(live)
                for index, reply in zip(live, replies, strict=True):
                    if isinstance(reply, ResponseError) and "invalid bulk length" in str(reply):
                        reply = _refused_publish(reply)
                    results[index] = reply
        return results

    async def _pipelined(self, commands: Sequence[tuple[Any, ...]],
                         progress: WriteProgress | None = None) -> builtins.list[Any]:
        """The replies of ``commands`` sent at once on one pooled connection (an error reply as its exception),
        each sent at most once, as the write scripts are (:meth:`_run_once`: a client's retry would send them
        all again). A connection lost after some replies were read answers those (their commands ran) and the
        rest with the loss."""
        pool = self._client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await _send(conn, conn.pack_commands(commands), self.timeout is not None, progress)
            replies: builtins.list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # its reply read whole: the next ones follow
                    replies.append(exc)
                    if str(exc).startswith("Protocol error"):  # Redis closes the connection after this reply
                        await conn.disconnect()
                        replies += [exc] * (len(commands) - len(replies))
                        break
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    if not replies:
                        raise
                    replies += [exc] * (len(commands) - len(replies))
                    break
            return replies
        finally:
            await pool.release(conn)

    def watch(
        self, stream_name: str | None = None, group_id: str | None = None, item_id: str | None = None
    ) -> Watch:
        """Change events from the store's pub/sub channel, optionally filtered by stream, group and item.

        Example:
            >>> import asyncio, fakeredis
            >>> async def demo() -> Any:
            ...     async with RedisStream(fakeredis.FakeAsyncRedis()) as s, s.watch("todos", group_id="w") as events:
            ...         await s.set(StreamSetInput(stream_name="todos", group_id="h", item_id="1", data="x"))
            ...         await s.set(StreamSetInput(stream_name="todos", group_id="w", item_id="2", data="y"))
            ...         event = await anext(events)  # the "h" write was filtered out
            ...         return event["id"], event["event"]
            >>> asyncio.run(demo())
            ('2', {'type': 'create', 'data': 'y'})
        """
        async def opener() -> _RedisWatcher:
            async with self._guard("watch", None):
                if self._close_once.closing:
                    raise StreamClosedError("RedisStream is closed")
                if self._subscriber is None:
                    self._subscriber = _Subscriber(self)
                return await self._subscriber.subscribe()

        return Watch(opener, self._filter(stream_name, group_id, item_id))

    async def list_all(self) -> builtins.list[tuple[str, builtins.list[str]]]:
        """Every stream of this layout with its non-empty groups, both sorted (a ``SCAN`` of the prefix).

        Example:
            >>> import asyncio, fakeredis
            >>> async def demo() -> Any:
            ...     async with RedisStream(fakeredis.FakeAsyncRedis()) as s:
            ...         for stream, group in [("b", "y"), ("a", "z"), ("a", "x")]:
            ...             await s.set(StreamSetInput(stream_name=stream, group_id=group, item_id="1", data=1))
            ...         return await s.list_all()
            >>> asyncio.run(demo())
            [('a', ['x', 'z']), ('b', ['y'])]
        """
        streams: dict[str, set[str]] = {}
        async with self._guard("list_all", None):
            async for raw in self._client.scan_iter(match=_glob_escape(self.layout.prefix) + ":*", count=1000,
                                                    _type="hash"):  # another program's keys of other types: no groups
                parts = self.layout.split(raw if isinstance(raw, str) else raw.decode())
                if parts is not None:
                    streams.setdefault(parts[0], set()).add(parts[1])
        return [(name, sorted(groups)) for name, groups in sorted(streams.items())]

    async def aclose(self) -> None:
        """End the watches and the batches, and close the clients this store made; idempotent (a call while a close
        is under way returns once that close ended, however it ended: :class:`~iii_streams.close_once.CloseOnce`;
        one after a close whose caller was cancelled finishes it).
        A watch still opening gets :class:`~iii_streams.errors.StreamClosedError` at once.

        Example:
            >>> import asyncio, fakeredis
            >>> async def demo() -> Any:
            ...     client = fakeredis.FakeAsyncRedis()
            ...     await RedisStream(client).aclose()  # a client you pass stays open
            ...     return await client.ping()
            >>> asyncio.run(demo())
            True
        """
        await self._close_once.run(self._close_all)

    async def _close_all(self) -> None:
        self._watch_retries.close()
        # Each part against a silent server (a batch waiting for its reply, a pool's close) is bounded by _STOP_S and
        # let go past it; the watch side and the command side close side by side, so the whole close takes at most
        # the subscriber's own bound plus 2 * _STOP_S (8 s), under the engine's 10 s for a store's close.
        # the pub/sub pool the store made for itself at its first watch (_watch_client), closed with it; none made
        # now (the property refuses once closing)
        watch_client = self._watch_pool_client
        separate = watch_client is not None and watch_client is not self._client
        outcomes = await asyncio.gather(self._close_watches(separate), self._close_commands(separate),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if self._owns_client and not separate:  # after the subscriber: its readers use this client too
            await self._close_command_pool()

    async def _close_watches(self, separate: bool) -> None:
        if self._subscriber is not None:
            await self._subscriber.stop()  # before the client: its readers would take that for a lost connection
        if separate and self._watch_pool_client is not None:
            await self._close_part(self._watch_pool_client.aclose(), "the close of the Redis watch pool")

    async def _close_commands(self, separate: bool) -> None:
        # a batch in flight waits for its reply: on a silent server up to the socket timeout, or the store's timeout
        self._reads.close()  # (the gets already submitted run meanwhile)
        await asyncio.gather(  # side by side: each bounded by _STOP_S, the pair too
            self._end_batches(self._updates, "the end of the RedisStream update batches"),
            self._end_batches(self._publishes, "the end of the RedisStream publishes"))
        # before the pool's close: a read batch started after it connected again (connections left open)
        await self._reads.finish(0, closed_unapplied("RedisStream.get"))
        if self._owns_client and separate:
            await self._close_command_pool()

    async def _close_command_pool(self) -> None:
        # the batches had their time: a take still waiting for a connection (within its caller's limit, or none)
        # would run after the close, on a connection of the closed pool
        pool = self._client.connection_pool
        if isinstance(pool, _WaitingPool):
            pool.close_waits()
        await self._close_part(self._client.aclose(), "the close of the Redis command pool")

    async def _end_batches(self, batcher: KeyedBatcher[Any, Any, Any], what: str) -> None:
        await self._close_part(batcher.aclose(), what)  # made here: a close cancelled first leaves no coroutine

    async def _close_part(self, close: Awaitable[Any], what: str) -> None:
        await finish_within(close, _STOP_S, f"{what} (RedisStream {self.layout.prefix!r})", log)
