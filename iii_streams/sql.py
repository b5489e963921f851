"""``SQLStream``: stream items in SQLite (aiosqlite, the default) or PostgreSQL (asyncpg) through SQLAlchemy 2.

Schema: :mod:`iii_streams.schema`, created by the Alembic migrations (``iii-streams migrate URL``, or
automatically for SQLite). Writes (set, update, delete) are group-committed
(:class:`~iii_streams.batching.KeyedBatcher`): the writes waiting when a transaction starts run in it, in order
(at most 256), each caller getting its own old and new value once the transaction has committed. One
transaction reads every row it touches with one ``SELECT … IN``, applies the writes in Python (JSON stays exact)
and writes the final rows with one statement per kind; on PostgreSQL it also sends the ``NOTIFY`` of every
write (delivered at commit). A store takes at most ``max_pending`` writes at once (:data:`MAX_PENDING`, queued or
running): one more is refused at once, ``applied`` False. Atomicity per item:

- PostgreSQL: ``SELECT … FOR UPDATE`` locks the rows across processes, in key order; a missing row is created
  with ``INSERT … ON CONFLICT DO NOTHING`` (all of a transaction's new rows in one statement, in key order too) and
  the transaction is run again if another writer created one first. PostgreSQL drops a repeated identical
  notification within one transaction, so a write whose event would repeat one already sent goes into the next
  transaction. Writes made while others are under
  way join a queue shared by the store, whose batches of several items run with a ``lock_timeout`` of 100 ms, more
  for big batches (twice what such a batch takes here, at most 500 ms) and at most a quarter of the time their
  writes have left (64 writes in flight to distinct items: one transaction for many items, not one per item); a
  caller with far less time than the batch's others (under half of what its wait needs) takes its item's writes
  to the item's own queue instead of cutting every write's wait short (``hurry_requeues`` counts them). A shared
  batch puts at most 1 MiB of values in one transaction (``_MAX_SHARED_CHARS``): big values take several.
  Such a transaction that meets a row locked elsewhere (a session left in ``SELECT … FOR UPDATE``, another process's
  transaction) or a deadlock
  rolls back and hands each write of its batch not yet committed to its item's own queue (``lock_requeues`` counts
  them), which waits for
  its row alone, up to the store's timeout, as every write of one item does: a locked row stalls only its item
  (while the pool has connections to spare: each item waiting for a row locked elsewhere holds one),
  and two stores' batches never fail on each other. An item whose row was found locked keeps to its own queue
  for 3 s. An item's writes keep their order: while some wait in one queue, its later ones join them there. An item
  missing at the read that a batch creates and deletes again is still inserted and then deleted: the insert finds a
  row another writer created meanwhile (the batch runs again on it) and holds such a row off until the commit.
- SQLite: one queue for the whole database (it has one write lock anyway); ``BEGIN IMMEDIATE`` takes that lock,
  also across processes.

Both: a batch whose writes all update one item whose committed value this process remembers (from its own last
write; at most 1024 items of up to 8192 characters) runs as ONE autocommitted compare-and-set statement instead,
``UPDATE … WHERE value = <remembered>`` (on PostgreSQL with the batch's ``NOTIFY`` in the same statement, sent
only if it wrote): one round trip instead of four or five. If another process changed the item, nothing is
written or sent, ``swap_misses`` grows, and the batch (and the item's batches for the next second) take the
locking transaction. A batch with a write refused against the remembered value (an update over its ``max_bytes``,
ops that do not fit the value) takes the locking transaction too, the item forgotten: a refusal writes nothing, so
only a read of the row can tell it is decided on the value as it is.

A batch the database refuses for one write's data (a constraint, a trigger, the column's type: SQLSTATE classes 22,
23 and P0 on PostgreSQL, ``IntegrityError`` and ``DataError`` on SQLite) before its commit runs again one write at a
time, in order, so only that write fails (:meth:`SQLStream._one_at_a_time`; a shared batch hands its writes to their
items' own queues, which do that).

PostgreSQL connections the server ended (a restart, ``pg_terminate_backend``): see ``_IDLE_PING_S``. A read, and a
write transaction whose ``COMMIT`` was not sent, run once more on a new connection; a write whose commit or
compare-and-set statement was sent never does (``applied`` None).

Errors of SQLAlchemy and the drivers surface as :class:`~iii_streams.errors.StreamError` subclasses with the
original as ``__cause__``; every operation accepts ``timeout=`` (seconds).

``watch()`` uses ``LISTEN`` on PostgreSQL (sees writes from every process): one connection per store, shared by
its watchers and made outside the pool, so watches never take a connection writes need. SQLite uses an in-process
hub (sees this object's writes only). PostgreSQL limits a notification to 8000 bytes. A larger event (a create or
update with the value written, a delete with the old value, a ``send``) is sent in parts by the statement or
transaction that writes it, so only if that commits; PostgreSQL delivers one transaction's notifications together
and in order, and the LISTEN connection joins them once for all its watchers: each gets exactly the value written,
with no query. A create or update that an older version of this store sent without its ``data``
(``"truncated": true``) is still read back from its row, once for all watchers. An event that cannot be delivered
exactly (such a row deleted before it was read back, a broken run of parts) is a
:class:`~iii_streams.events.StreamGapError` for its watchers, never an event with ``data: None``.

Example:
    >>> import asyncio
    >>> async def demo():
    ...     async with SQLStream.from_url("sqlite+aiosqlite://") as s:
    ...         await s.set(StreamSetInput(stream_name="a:b", group_id="'; DROP TABLE x; --", item_id="1", data=[1]))
    ...         return await s.list_groups(StreamListGroupsInput(stream_name="a:b"))
    >>> asyncio.run(demo())
    ["'; DROP TABLE x; --"]
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import inspect
import logging
import math
import os
import shlex
import sqlite3
import threading
import time
import urllib.parse
import warnings
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    LargeBinary,
    Select,
    Text,
    bindparam,
    case,
    cast,
    delete,
    event,
    func,
    literal,
    null,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Connection, ExceptionContext, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, Pool, PoolResetState, QueuePool
from sqlalchemy.util import asbool, await_only, greenlet_spawn

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.handler_threads import EXIT_HOOK_MISSING, at_exit_start
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
from iii.wire import loads

from .base import DEFAULT_TIMEOUT, DRIVER_TIMEOUT, FieldUpdates, SetResult, UpdateResult, WriteProgress
from .batching import KeyedBatcher, Requeue
from .close_once import CloseOnce
from .coalescing import ReadCoalescer, stored_size
from .deadlines import finish_within
from .engine_bounds import DISPOSE_TIMEOUT_S as _DISPOSE_DEFAULT_S
from .engine_bounds import (
    close_stranded_connects,
    closing_stranded,
    cut_connections,
    dispose_within,
    stranded_closes_ended,
    track_connections,
)
from .errors import (
    SEND_ROOM,
    PoolExhaustedError,
    SchemaMissingError,
    StreamBackendError,
    StreamClosedError,
    StreamDataError,
    StreamError,
    StreamFileLostError,
    StreamTimeoutError,
    StreamUnavailableError,
    check_list_bytes,
    check_names,
    check_timeout,
    check_value_bytes,
    closed_unapplied,
    json_text,
    unreadable_value,
    utf8_size,
)
from .events import (
    EventHub,
    StreamEvent,
    StreamGapError,
    Subscription,
    Watch,
    check_queue_size,
    custom_event,
    event_json_parts,
    lag_error,
    make_event,
    retry_until_closed,
    wake,
)
from .known_texts import KnownTexts
from .messages import error_line, mask_passwords
from .migrate import SQLITE_BUSY_S, head_revision, migrate_with, normalize_url, schema_behind, schema_state
from .schema import TABLE_NAME, group_key, item_key, items, stream_key
from .sqlite_threads import guard_aiosqlite

__all__ = ["MAX_PENDING", "NOTIFY_CHANNEL", "SQLStream", "SchemaMissingError"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

NOTIFY_CHANNEL: Final = "iii_streams_events"
_NOTIFY_LIMIT: Final = 7999  # PostgreSQL refuses payloads of 8000 bytes or more
# a part of an event too large for one notification: "~<tag>.<index>.<count>|<text>" (never starts with "{")
_PART_MARK: Final = "~"
_PART_HEAD_MAX: Final = 64  # bytes of a part's head at most: "~", 16 hex digits, two counts, separators

_MAX_BATCH: Final = 256  # writes per transaction (also keeps SELECT … IN well under parameter limits)
_MAX_READ_BATCH: Final = 256  # gets read in one statement (SQLite before 3.32 takes at most 999 variables)
# PostgreSQL's shared queue: characters of values (their JSON text; bytes for ASCII) one transaction of several items
# takes at most, besides _MAX_BATCH writes (a single value over it still runs, alone); a batch of big values runs as
# several transactions, each holding its rows for a bounded time. Unbounded, a batch of 127 values of 40 KB (5 MB)
# held its rows 0.25-0.7 s on a 2-core box (up to 1.3 s loaded), longer than the 0.1-0.5 s other batches wait for
# a row (_shared_lock_wait), which then hand all their writes on. Two stores writing the same 128 items of 40 KB
# (interleaved rounds, median writes/s against no bound): 1 MiB held them 0.07-0.15 s, about the 0.1 s a small batch
# waits, at 1.4 times the rate; 2 MiB 0.1-0.18 s at 1.6; 0.5 MiB 0.05-0.07 s at 1.4. Values under 4 KB never reach
# it (256 writes at most).
_MAX_SHARED_CHARS: Final = 1024 * 1024
MAX_PENDING: Final = 100_000
"""The writes a store takes at once by default (``SQLStream(max_pending=...)``): queued or running, over all its
queues. Past it a write is refused at once (``StreamBackendError``, ``applied`` False). Why one bound for the whole
store: on PostgreSQL, writes past the shared queue's bound went each to its own item's queue, whose batches each took a
pooled connection: 110,000 concurrent sets of distinct items (default pool) left the shared batch waiting behind
tens of thousands of them for a connection, and 37,793 writes under the bound failed (timeouts, "pool exhausted");
150,000: 147,822 failed."""
_WITHDRAWAL_RERUNS: Final = 2  # re-runs of one batch to leave out writes whose callers gave up meanwhile
# the batcher key of the one queue SQLite's writes share, and of PostgreSQL's shared queue (an item's own queue is
# keyed by its 16-byte key)
_ONE_QUEUE: Final = b""
# PostgreSQL, a batch of several items from the shared queue: how long it waits for one row lock before it rolls
# back and hands its writes to their items' own queues (:func:`_shared_lock_wait`). Twice as long as a batch of its
# size holds its rows here (so two stores' batches queueing for the same rows still wait for each other: measured on a
# loaded 2-core box, about 0.2 ms a write and 50 ms a MB of values, 256 writes of 40 KB up to 0.6 s), at least
# 0.1 s, at most 0.5 s: well below deadlock_timeout (1 s: a circle of two batches ends first), and all that a row
# locked elsewhere costs the other items of the batch. Never more than a quarter of the time its writes have left:
# past that, a row locked elsewhere timed out every write of the batch instead of handing the free ones on in time.
# The time left is the earliest deadline of the batch's writes once callers far shorter than the rest left it
# (``SQLStream._hurried``): else one call with a 10 ms timeout made it ~2.5 ms for all 64 writes of its batch.
_SHARED_LOCK_TIMEOUT: Final = text("SELECT set_config('lock_timeout', :wait, true)")
_SHARED_LOCK_MIN_S: Final = 0.1
_SHARED_LOCK_MAX_S: Final = 0.5
_SHARED_LOCK_SHARE: Final = 0.25  # of the time left
_HOLD_PER_WRITE_S: Final = 0.0002
_HOLD_PER_CHAR_S: Final = 5e-8  # of the values written (a value's JSON text; its notification included)
# ...and no limit for its commit: a transaction that sent notifications takes the database's one notification-queue
# lock at commit, in turn with every other such commit; timed out there (behind another process's burst of
# notifications, no row locked), the batch was handed on for nothing and each write then took that lock alone
_NO_LOCK_TIMEOUT: Final = text("SELECT set_config('lock_timeout', '0', true)")
_LOCK_FAILED: Final = ("55P03", "40P01")  # SQLSTATEs of a lock_timeout and of a deadlock
# the rows of :keys locked by another transaction now (an autocommitted probe after a lock failure)
_LOCKED_ROWS: Final = text(
    f"SELECT item_key FROM {TABLE_NAME} WHERE item_key = ANY(:keys) AND item_key NOT IN "
    f"(SELECT item_key FROM {TABLE_NAME} WHERE item_key = ANY(:keys) FOR UPDATE SKIP LOCKED)")
_SLOW_S: Final = 3.0  # a row found locked elsewhere: its item's writes skip the shared queue for this long
_SLOW_MAX: Final = 4096  # such items remembered at most (the oldest forgotten first)
_PROBE_S: Final = 1.0  # the probe for such rows at most
# PostgreSQL: a pooled connection not checked out for this long is asked an empty query (one round trip) at checkout,
# before the operation's first statement. A server that ended it (restart, failover, pg_terminate_backend) while the
# event loop had not yet read its end would otherwise fail that statement, and a compare-and-set write sent on it
# may have been applied (``applied`` None). Asked at every checkout (SQLAlchemy's pool_pre_ping), it cost a round
# trip per operation (medians of 7 interleaved rounds against the store before, 2-core box): one caller at a time,
# 0.71 of the sets and 0.50 of the gets a second at 1.44 and 1.66 times the CPU per operation; 64 in flight (group
# commit, coalesced gets), 0.95 and 0.75. A connection reused within this time is not asked: no ping at all in those
# runs, at 1.08, 1.01, 0.98 and 1.00 of the rates before (CPU per operation 0.94-1.00), noise. Reads that find a
# connection lost on their first use anyway, and a locking transaction that lost its connection before its COMMIT,
# run once more on a new one (:meth:`SQLStream._read_again`, :meth:`SQLStream._locked_step`).
_IDLE_PING_S: float = 1.0
_LAST_CHECKOUT: Final = "iii_streams_checked_out"  # the pool record's info key: the monotonic time of its checkout
_NOTIFY_MANY: Final = text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) AS p")
# notifications per statement at most (each under 8000 bytes: 16 MB at most): PostgreSQL refuses a statement's
# parameters over 1 GB, which a batch of big values sent in parts would otherwise reach
_NOTIFY_CHUNK: Final = 2048
# built once: statement construction is a measurable share of a small write's CPU
_READ_ROWS: Final = select(items.c.item_key, items.c.value)
# PostgreSQL, one item whose committed value this process knows: the whole batch in one autocommitted statement
# (one round trip instead of BEGIN, SELECT … FOR UPDATE, UPDATE, NOTIFY, COMMIT) that writes only if the row
# still holds that value and sends the notifications only if it wrote (they go out at its commit)
_SWAP: Final = text(
    f"WITH u AS (UPDATE {TABLE_NAME} SET value = :new WHERE item_key = :k AND value = :old RETURNING 1), "
    "n AS (SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) AS p WHERE EXISTS (SELECT 1 FROM u)) "
    "SELECT (SELECT count(*) FROM u) AS written, (SELECT count(*) FROM n) AS sent"
)
_SWAP_SQLITE: Final = f"UPDATE {TABLE_NAME} SET value = :new WHERE item_key = :k AND value = :old"
# SQLite: the execution option of this store's autocommitted reads and compare-and-set writes. Every connection is
# already in autocommit (the connect hook; a transaction is only the BEGIN IMMEDIATE below), so the option only
# keeps that BEGIN out. SQLAlchemy's isolation_level="AUTOCOMMIT" did the same but set the level at each checkout
# and reset it at each return ("PRAGMA read_uncommitted = 0" and a rollback): four more trips to aiosqlite's
# thread per read or single-statement write, about half of their CPU.
_SQLITE_AUTOCOMMIT: Final = "iii_streams_autocommit"
_WRITE_VALUE: Final = update(items).where(items.c.item_key == bindparam("k")).values(value=bindparam("v"))
# SQLite's locking transaction, each statement one call to aiosqlite's thread (:func:`_sqlite_run`); through
# SQLAlchemy each was three or four (cursor, execute, fetch, close), and its connection's rollback one more: a new
# item's set cost about 1.5 ms of CPU. The reads and deletes end with :func:`_key_test`. Values are read as their
# bytes: a row whose text is not UTF-8 (another program's) failed the whole read, and so every write of the batch;
# decoded here, it fails only the writes of its own item.
_READ_ROWS_SQLITE: Final = f"SELECT item_key, CAST(value AS BLOB) FROM {TABLE_NAME} WHERE item_key"
_DELETE_ROWS_SQLITE: Final = f"DELETE FROM {TABLE_NAME} WHERE item_key"
_WRITE_VALUE_SQLITE: Final = f"UPDATE {TABLE_NAME} SET value = :v WHERE item_key = :k"
_INSERT_SQLITE: Final = (f"INSERT INTO {TABLE_NAME} (item_key, group_key, stream_key, stream_name, group_id, item_id, "
                         "value) VALUES (:item_key, :group_key, :stream_key, :stream_name, :group_id, :item_id, "
                         ":value)")
# PostgreSQL: the rows a transaction creates, ALL in one statement (one array per column; one SQL text for any count,
# so one prepared statement), inserted in the arrays' order (the ORDER BY keeps it: key order, the lock order), each
# row that another writer created first left out and missing from what it returns. One INSERT a row, 64 new items in
# flight ran 670-850 writes/s against 3,800 for existing ones: a round trip and a statement build per row.
_INSERT_NEW: Final = text(
    f"INSERT INTO {TABLE_NAME} (item_key, group_key, stream_key, stream_name, group_id, item_id, value) "
    "SELECT k, gk, sk, sn, g, i, v FROM unnest(CAST(:k AS bytea[]), CAST(:gk AS bytea[]), CAST(:sk AS bytea[]), "
    "CAST(:sn AS text[]), CAST(:g AS text[]), CAST(:i AS text[]), CAST(:v AS text[])) "
    "WITH ORDINALITY AS r(k, gk, sk, sn, g, i, v, n) ORDER BY n "
    "ON CONFLICT (item_key) DO NOTHING RETURNING item_key"
)
# its parameters: (parameter, column of a row from SQLStream._row)
_INSERT_COLUMNS: Final = (("k", "item_key"), ("gk", "group_key"), ("sk", "stream_key"), ("sn", "stream_name"),
                          ("g", "group_id"), ("i", "item_id"), ("v", "value"))

Compute = Callable[[Any], tuple[Any, str]]
"""``compute(old_value) -> (new_value, new_json_text)`` of a set or update."""


class _Write(WriteProgress):
    """One caller's write waiting for the next transaction; ``compute`` is ``None`` for a delete. A batch leaves it
    out once its caller abandoned it, and marks it sent before the commit that applies it (``WriteProgress``).
    ``pinned``: a batch that already ran again twice for withdrawals keeps it whatever its caller does (it cannot be
    withdrawn), though nothing of it was sent yet; ``sent`` stays for the commit (or statement) sent. ``landed``: its
    result once that commit or statement is known to have landed, for a caller whose wait was cut after it."""

    __slots__ = ("batch", "compute", "deadline", "group_id", "handed", "item_id", "key", "landed", "left", "pinned",
                 "rolled_back", "shared", "size", "stream_name")

    def __init__(self, stream_name: str, group_id: str, item_id: str, key: bytes, compute: Compute | None,
                 size: int = -1) -> None:
        self.stream_name = stream_name
        self.group_id = group_id
        self.item_id = item_id
        self.key = key
        self.compute = compute
        self.size = size  # characters of the value written, when known before the batch runs (a set); else -1
        self.abandoned = False
        self.sent = False
        self.pinned = False
        self.shared = False  # PostgreSQL: counted in the store's writes of its item in the shared queue
        self.deadline = math.inf  # PostgreSQL, in the shared queue: the loop time its caller stops waiting at
        self.landed: tuple[Any, Any] | None = None
        # SQLite: the commit (or single statement) that carried it failed in a way that is certain to have rolled
        # it back (:func:`_sqlite_commit_failed`): not applied, though sent
        self.rolled_back = False
        self.left = False  # its caller no longer waits for it (its result, a timeout, a cancel)
        self.batch: _BatchWait | None = None  # the batch waiting for a connection to run it, while it waits
        # a running batch handed it on to its item's own queue (Requeue): that batch still runs during a close
        self.handed = False

    def give_up(self) -> bool:
        """:meth:`WriteProgress.give_up`, which a pinned write refuses too (``False``: it will still run).

        Example:
            >>> write = _Write("s", "g", "i", b"k", None)
            >>> write.pinned = True
            >>> write.give_up(), write.sent
            (False, False)
        """
        self.abandoned = not (self.sent or self.pinned)
        return self.abandoned


@dataclass(slots=True)
class _Plan:
    """The outcome of a prefix of a batch, applied in Python to the rows read at its start."""

    current: dict[bytes, str | None]  # every key's JSON text after the prefix (None: absent)
    results: builtins.list[Any] = field(default_factory=builtins.list)  # (old, new) or exception, per write
    notify: builtins.list[str] = field(default_factory=builtins.list)  # PostgreSQL NOTIFY payloads
    sent: set[str] = field(default_factory=set)  # the same, to spot a repeat without scanning the list
    events: builtins.list[StreamEvent] = field(default_factory=builtins.list)  # in-process events (SQLite)
    created: dict[bytes, _Write] = field(default_factory=dict)  # rows to insert, in creation order
    # rows missing at the read that the prefix creates and then deletes: (the creating write, its value)
    transient: dict[bytes, tuple[_Write, str]] = field(default_factory=dict)
    deleted: set[bytes] = field(default_factory=set)
    applied: builtins.list[_Write] = field(default_factory=builtins.list)  # writes in the prefix not abandoned
    refused: set[bytes] = field(default_factory=set)  # items whose stored value is not JSON (or not UTF-8)


class _PoolGate:
    """Hands out an engine pool's connections: at most ``slots`` (the pool's size and overflow) held at once; past
    that, a caller waits in the FIFO of its lane (:data:`_LANE`: write batches, gets read together, other reads), for
    as long as its own time limit lets it (the wait is cancelled then). A connection given back goes to the oldest
    caller still waiting in the next lane, in turn, that has one.

    Why: SQLAlchemy's pool fails a wait at ``pool_timeout`` (30 s), whatever time the operation has left, and one that
    waits again joins the back of the pool's queue, behind newer callers. One FIFO for all, 2,000 lists of 3 MB
    queued ahead of the writes (8,000 mixed operations, default pool) held every connection for all of the 60 s:
    741 successes, no write. In turns, writes and gets (each batch of them brief) pass between the lists.

    Example:
        >>> async def demo() -> list[str]:
        ...     gate, seen = _PoolGate(1), []
        ...     await gate.acquire(0)
        ...     async def take(name: str, lane: int) -> None:
        ...         await gate.acquire(lane)
        ...         seen.append(name)
        ...         gate.release()
        ...     waiters = [asyncio.ensure_future(take(n, lane)) for n, lane in (("a", 2), ("b", 2), ("c", 0))]
        ...     await asyncio.sleep(0)
        ...     gate.release()
        ...     await asyncio.gather(*waiters)
        ...     return seen
        >>> asyncio.run(demo())
        ['c', 'a', 'b']
    """

    __slots__ = ("_dead", "_final", "_kept", "_next", "_refuse_all", "_waiters", "checkouts", "closed", "cut",
                 "draining", "gave_up", "slots", "used")

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.used = 0  # slots held (a connection checked out, or being checked out)
        self._waiters: tuple[deque[asyncio.Future[None]], ...] = tuple(deque() for _ in range(_LANES))
        self._dead = [0] * _LANES  # waiters of each lane that gave up (dropped at its front, or in a compaction)
        self._next = 0  # the lane whose turn it is
        #: makes the error of a wait the store's close ended (:meth:`close`), and of every acquire after it
        self.closed: Callable[[], BaseException] | None = None
        #: the lane a close lets finish (the write batches under way) until :meth:`end_drain`
        self.draining: int | None = None
        #: the tasks holding a slot while they check a connection out: their lanes, and whether let through by a close
        self.checkouts: dict[asyncio.Task[Any], tuple[int, bool]] = {}
        self._final = False  # the close's end: checkouts let through are cut too (close_all)
        self._refuse_all = False  # the close's end: nothing is let through any more (close_all)
        self.cut: set[asyncio.Task[Any]] = set()  # those of them the close cancelled (see SQLStream._checked_out)
        #: waits of operations let through after a close (they waited for the store's opening): the close leaves them
        self._kept: set[asyncio.Future[None]] = set()
        #: tasks cancelled (their time ran out, most often) while they waited for a connection, and when: a timeout in
        #: the same moment names the pool (SQLStream._timeout_note)
        self.gave_up: weakref.WeakKeyDictionary[asyncio.Task[Any], float] = weakref.WeakKeyDictionary()

    def close(self, error: Callable[[], BaseException], *, drain: int | None = None) -> None:
        """Fail every waiter now, and every later :meth:`acquire`, with ``error()`` (one each: one instance raised
        in many tasks gathers their tracebacks). Why: a store's close waited for the callers stuck here, as long as
        their deadlines (forever with no timeout), and a slot given back meanwhile started an operation after it.
        ``drain``: a lane whose waiters and acquires go on until :meth:`end_drain` (the close's write batches under
        way: failed here, 35 of 2,560 writes in flight at a close committed on a busy healthy pool, against 2,240
        before the gate)."""
        self.closed = error
        self.draining = drain
        self._fail_waiting(error, drain)

    def close_all(self, *, cut_let_through: bool) -> None:
        """At the end of the store's close: fail every waiter left, those it let through included, cut every checkout,
        and refuse everything from now on. Why: the writes a running batch handed on, let through, waited on at the
        gate after the close returned, then opened a connection each and committed (96 of 100 in an attack), or held
        their slots in a checkout of the disposed pool for its 30 s timeout. ``cut_let_through``: cut the checkouts
        of operations let through as well (not on SQLite: a cancel inside aiosqlite's connect left its thread and the
        connection; such a checkout ends by itself and is refused once connected, nothing run)."""
        error = self.closed
        if error is None:
            return
        self._final = cut_let_through
        self._refuse_all = True
        self.draining = None
        self._kept.clear()
        self._fail_waiting(error, None)

    def end_drain(self) -> None:
        """Fail the waiters of the lane :meth:`close` let drain, and its later acquires (no-op while not closed)."""
        if self.closed is not None and self.draining is not None:
            self.draining = None
            self._fail_waiting(self.closed, None)

    def _fail_waiting(self, error: Callable[[], BaseException], spared: int | None) -> None:
        for task, (lane, let_through) in tuple(self.checkouts.items()):
            if lane != spared and (not let_through or self._final):
                # a checkout outlasting pool_timeout again and again (connections held outside the store) did not
                # end at the pool's timeout once the close disposed of that pool: it ended 10-25 s after the holder
                # let go
                del self.checkouts[task]
                self.cut.add(task)
                task.cancel()
        for lane, waiters in enumerate(self._waiters):
            if lane == spared:
                continue
            kept = [waiter for waiter in waiters if waiter in self._kept and not waiter.done()]
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done() and waiter not in self._kept:
                    waiter.set_exception(error())
            # the operations that waited for the opening go on, as the close promises (on a healthy database the
            # writes in flight commit: failed here, 0 of 150 did)
            waiters.extend(kept)
            self._dead[lane] = 0

    def full_with_waiters(self) -> bool:
        """Whether every slot is held and callers wait for one."""
        return self.used >= self.slots and any(len(waiters) > self._dead[lane]
                                               for lane, waiters in enumerate(self._waiters))

    def refuses(self, lane: int, after_close: bool) -> bool:
        """Whether an operation of ``lane`` is refused now: the store's close began, and it is neither in the lane
        it lets drain nor one it lets through (``after_close``)."""
        return self.closed is not None and (self._refuse_all or (not after_close and lane != self.draining))

    async def acquire(self, lane: int, *, after_close: bool = False) -> None:
        """Take a slot, waiting in ``lane``'s FIFO while all are held (until cancelled: then no slot is held; until
        :meth:`close`: its error, no slot held). ``after_close``: taken after a close too (an operation that waited
        for the store's opening, which the close let finish so its operations go on)."""
        if self.closed is not None and self.refuses(lane, after_close):
            raise self.closed()
        if self.used < self.slots:
            # (no live waiter then: a slot given back goes to a live one before it counts as free)
            self.used += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters[lane]
        waiters.append(waiter)
        if after_close:
            self._kept.add(waiter)
            waiter.add_done_callback(self._kept.discard)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # handed a slot as the wait was cut: the next waiter's
            else:
                self._dead[lane] += 1
                if self._dead[lane] > _GATE_COMPACT_MIN and self._dead[lane] * 2 > len(waiters):
                    kept = [w for w in waiters if not w.done()]
                    waiters.clear()
                    waiters.extend(kept)
                    self._dead[lane] = 0
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest caller still waiting in the next lane that has one, else to the free."""
        for turn in range(_LANES):
            lane = (self._next + turn) % _LANES
            waiters = self._waiters[lane]
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    self._next = (lane + 1) % _LANES
                    return
                self._dead[lane] -= 1
        self.used -= 1


# the lanes of a _PoolGate: write batches, gets read together (ReadCoalescer), other reads (list, list_groups, ...)
_LANES: Final = 3
_WRITE_LANE: Final = 0
_GET_LANE: Final = 1
_READ_LANE: Final = 2
# the lane of the connections the current task takes, for reads (a write batch's: _BATCH_WRITES)
_LANE: ContextVar[int] = ContextVar("iii_streams_sql_lane", default=_READ_LANE)


_NOTE_FRESH_S: Final = 0.05  # a gate wait cut longer ago than this is not what a timeout's message reports
_GATE_COMPACT_MIN: Final = 64  # dead waiters before a FIFO mostly made of them is rebuilt
_SQLALCHEMY_MAX_OVERFLOW: Final = 10  # create_async_engine's default max_overflow (a QueuePool's, not readable back)
_RECOUNT_S: Final = 0.05  # a store at its max_pending counts the writes its queues hold at most this often
_POOL_RETRY_PAUSE_S: Final = 0.05  # a slot's checkout tried again at most this often (a pool_timeout of 0)


def _pool_gate(pool: Pool, max_overflow: int) -> _PoolGate | None:
    """The gate of ``pool``'s connections: a queue pool's size and ``max_overflow`` (``None`` for a pool without a
    bound, which never makes a caller wait: a NullPool, a StaticPool, an unbounded overflow)."""
    if not isinstance(pool, QueuePool) or max_overflow < 0:
        return None
    return _PoolGate(pool.size() + max_overflow)


def _closed_at_gate() -> StreamClosedError:
    """The error of an operation whose wait for a pooled connection the store's close ended (nothing of it ran)."""
    return StreamClosedError("SQLStream was closed while this operation waited for a database connection")


def _closed_after_dispose() -> StreamClosedError:
    """The error of an operation (a write batch's writes handed on, one a close let through) that would open a
    connection once the store's close disposed of its engine: nothing of it ran. Opened from the pool the dispose
    made, such connections outlived the close, and two at once from one event loop blocked that loop for good with
    SQLAlchemy before 2.0.25 (a pool made again by ``dispose()`` serializes its first connect with a thread lock;
    SQLAlchemy issue 10813)."""
    return StreamClosedError("SQLStream was closed before this operation took a database connection")


def _waited_at_gate(error: StreamTimeoutError, gate: _PoolGate) -> StreamTimeoutError:
    """``error`` (an operation's timeout), for one whose time ran out waiting at ``gate`` for a pooled connection.

    Example:
        >>> error = _waited_at_gate(StreamTimeoutError("SQLStream.set did not finish within 1 s"), _PoolGate(15))
        >>> for part in str(error).split("; "):
        ...     print(part)
        SQLStream.set did not finish within 1 s
        waiting for a database connection: all 15 were in use (raise pool_size or max_overflow of SQLStream.from_url, or find what holds them)
    """  # noqa: E501 - a doctest's output line
    note = _gate_note(gate)
    restated = StreamTimeoutError(str(error) if note in str(error) else f"{error}{note}")
    restated.applied = error.applied
    return restated


def _gate_note(gate: _PoolGate) -> str:
    """What a timeout's message adds for an operation whose time ran out waiting at ``gate``."""
    return (f"; waiting for a database connection: all {gate.slots} were in use (raise pool_size or max_overflow of "
            "SQLStream.from_url, or find what holds them)")


class _Deserted(Exception):
    """A batch's wait for a connection ended: none of its writes' callers waits any more (nothing of it ran)."""


class _BatchWait:
    """The writes of a batch while it waits for a connection: cancels the batch's task (``task``, set during that
    wait) once none of their callers still waits, so a batch nobody waits for is dropped unrun instead of holding a
    place in the pool's queue (a batch's wait is bounded by its callers' deadlines, the latest of them)."""

    __slots__ = ("deserted", "task", "writes")

    def __init__(self, writes: Sequence[_Write]) -> None:
        self.writes = writes
        self.task: asyncio.Task[Any] | None = None
        self.deserted = False

    def waited_for(self) -> bool:
        """Whether a caller still waits for one of its writes not yet committed."""
        return any(not w.left and w.landed is None for w in self.writes)

    def caller_left(self) -> None:
        """One of its writes' callers stopped waiting: the wait ends if it was the last."""
        task = self.task
        if task is not None and not self.deserted and not self.waited_for():
            self.deserted = True
            task.cancel()


# the writes of the batch a batch runner's task runs (see SQLStream._checked_out)
_BATCH_WRITES: ContextVar[_BatchWait | None] = ContextVar("iii_streams_sql_batch", default=None)


class _ConnectFailed(Exception):
    """The shared LISTEN connection could not be made again (the reason, one line): retried."""


def _is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a database driver's own error, which SQLAlchemy did not wrap."""
    return type(exc).__module__.partition(".")[0] in ("asyncpg", "aiosqlite", "sqlite3")


# SQLSTATEs (or their classes) of a connection the server would not make: connection exceptions (08), refused
# credentials (28), a database that does not exist (3D000), a server starting or shutting down (57P03), too many
# connections (53300). asyncpg raises them from the connect, which is no statement the database refused.
_CONNECT_SQLSTATES: Final = ("08", "28", "3D000", "57P03", "53300")


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE ``exc`` carries (SQLAlchemy's wrapper, the DBAPI adapter's error or the driver's own)."""
    orig = getattr(exc, "orig", None)
    for candidate in (exc, orig, exc.__cause__, getattr(orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


# SQLite's refusals to write its file, by primary result code (extended codes too: SQLITE_IOERR_WRITE, ...): no room
# ("database or disk is full"), an I/O error ("disk I/O error": the file hit RLIMIT_FSIZE, a failing disk) and a
# read-only database ("attempt to write a readonly database"). Retrying as if unreachable does not help.
_SQLITE_WRITE_REFUSALS: Final = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY})


def _sqlite_refused_write(exc: BaseException) -> bool:
    """Whether ``exc`` (SQLAlchemy's, or the driver's own) is SQLite refusing to write its file.

    Example:
        >>> error = sqlite3.OperationalError("disk I/O error")
        >>> error.sqlite_errorcode = sqlite3.SQLITE_IOERR_WRITE
        >>> _sqlite_refused_write(error), _sqlite_refused_write(sqlite3.OperationalError("database is locked"))
        (True, False)
    """
    code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _SQLITE_WRITE_REFUSALS


def _sqlite_commit_failed(exc: BaseException) -> bool:
    """Whether ``exc`` (SQLAlchemy's, or the driver's own), raised by a SQLite ``COMMIT`` or an autocommitted
    statement, is certain to mean the transaction was not committed: a write of the file failed for room
    (``SQLITE_FULL``: the disk full, a short write) or otherwise (``SQLITE_IOERR_WRITE``: ``RLIMIT_FSIZE``, a failing
    disk). SQLite rolls back a transaction whose commit failed (any code but ``SQLITE_BUSY``), and the commit point
    (a WAL frame marked as a commit, a rollback journal's deletion) comes after every write of the commit, so a
    failed write leaves nothing committed. Not every I/O error is so: one of a sync (``SQLITE_IOERR_FSYNC``) may
    come after a complete commit frame, which WAL recovery would later apply.

    Example:
        >>> error = sqlite3.OperationalError("disk I/O error")
        >>> error.sqlite_errorcode = sqlite3.SQLITE_IOERR_WRITE
        >>> synced = sqlite3.OperationalError("disk I/O error")
        >>> synced.sqlite_errorcode = sqlite3.SQLITE_IOERR_FSYNC
        >>> _sqlite_commit_failed(error), _sqlite_commit_failed(synced)
        (True, False)
    """
    code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF == sqlite3.SQLITE_FULL or code == sqlite3.SQLITE_IOERR_WRITE)


_SCHEMA_MISMATCHES: Final = ("no such column", "has no column named")


def _sqlite_schema_mismatch(exc: BaseException) -> bool:
    """Whether ``exc`` (SQLAlchemy's, or the driver's own) is SQLite finding a table other than the statement expects
    (before, such errors said "database unreachable").

    Example:
        >>> _sqlite_schema_mismatch(sqlite3.OperationalError("no such column: value"))
        True
        >>> _sqlite_schema_mismatch(sqlite3.OperationalError("database is locked"))
        False
    """
    text = str(getattr(exc, "orig", exc))
    return any(mismatch in text for mismatch in _SCHEMA_MISMATCHES)


def _not_connected(exc: BaseException) -> bool:
    """Whether ``exc`` is the server refusing a connection (not a statement).

    Example:
        >>> class Refused(Exception):
        ...     sqlstate = "3D000"
        >>> _not_connected(Refused('database "app" does not exist')), _not_connected(ValueError())
        (True, False)
    """
    state = _sqlstate(exc)
    return state is not None and state.startswith(_CONNECT_SQLSTATES)


_CLOSE_S: Final = 2.0  # a LISTEN connection's orderly close at most; then it is cut
# A cancelled probe or reconnect of the LISTEN connection ends at once unless the driver swallowed the cancel (Python
# 3.11's asyncio.wait_for, python/cpython#86296) or waits on a silent server: past this it is let go, since waiting
# for it held the store's close, and the last watcher's end, for good.
_STOP_S: Final = 2.0
# A LISTEN connection made half-open (a NAT or firewall that forgot it, a failover with no reset) is never ended by
# the driver: every later notification would be lost without a word. After this long with no notification it is
# asked a `SELECT 1`, and cut (then replaced, the gap reported) when no answer comes within _PONG_S.
_QUIET_S: Final = 10.0
_PONG_S: Final = 5.0


def _rollback_if_open(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    """The pool's reset of a SQLite connection given back: a rollback only when a transaction is open on it.

    Why: the pool's default reset rolls back every connection given back, which on aiosqlite is one more hand-off to
    the connection's thread and back for every read and single-statement write (this store's connections are in
    autocommit, so there is nothing to undo); ``in_transaction`` is read without one. As the default, nothing is
    done for a connection being discarded or one found unreferenced (no event loop to run the rollback on).
    """
    if state.terminate_only or not state.asyncio_safe or state.transaction_was_reset:
        return
    if dbapi_connection.driver_connection.in_transaction:
        dbapi_connection.rollback()


# One item's value by its key. Built once: a statement made per call cost its construction and cache key each time.
_GET_VALUE: Final = select(items.c.value).where(items.c.item_key == bindparam("key"))
# (its bytes, parsed as they are: text that is not UTF-8 is then the item's StreamDataError, not the driver's error)
_GET_VALUE_SQLITE: Final = f"SELECT CAST(value AS BLOB) FROM {TABLE_NAME} WHERE item_key = ?"


async def _pg_value(conn: AsyncConnection, key: bytes) -> str | None:
    value: str | None = (await conn.execute(_GET_VALUE, {"key": key})).scalar_one_or_none()
    return value


async def _sqlite_value(conn: AsyncConnection, key: bytes, *, in_memory: bool) -> bytes | None:
    """The item's stored text as bytes, read by one call to the connection's aiosqlite thread (:func:`_sqlite_run`)."""
    rows = await _sqlite_run(conn, _GET_VALUE_SQLITE, (key,), fetch=True, in_memory=in_memory)
    return None if not rows else rows[0][0]


# Several items' values by their keys, in one statement (the reads of concurrent gets, see SQLStream._read_values).
# IN, not = ANY(array): asyncpg's first statement with a bytea[] parameter on a connection looked the type up, 8 round
# trips instead of 2; with replies slow, a new connection's batch outlasted its callers' time and never completed.
_GET_VALUES: Final = select(items.c.item_key, items.c.value).where(
    items.c.item_key.in_(bindparam("keys", expanding=True)))
_GET_VALUES_SQLITE: Final = f"SELECT item_key, CAST(value AS BLOB) FROM {TABLE_NAME} WHERE item_key IN "


async def _pg_values(conn: AsyncConnection, keys: list[bytes]) -> dict[bytes, str]:
    # padded to a power of two (the last key again): a statement per count was prepared on every connection, 9 now
    padded = keys + keys[-1:] * ((1 << (len(keys) - 1).bit_length()) - len(keys))
    return {bytes(row[0]): row[1] for row in await conn.execute(_GET_VALUES, {"keys": padded})}


async def _sqlite_values(conn: AsyncConnection, keys: list[bytes], *, in_memory: bool) -> dict[bytes, bytes]:
    marks = ",".join("?" * len(keys))  # (at most _MAX_READ_BATCH: under SQLite's 999 variables of old versions)
    rows = await _sqlite_run(conn, f"{_GET_VALUES_SQLITE}({marks})", keys, fetch=True, in_memory=in_memory)
    return {bytes(key): value for key, value in rows}


async def _sqlite_run(conn: AsyncConnection, sql: str, params: Sequence[Any] | Mapping[str, Any], *, fetch: bool,
                      in_memory: bool, many: bool = False) -> Any:
    """Run one statement on ``conn``'s SQLite connection in one call to its aiosqlite thread: its rows (``fetch``),
    else the count of rows it changed (``many``: run once per parameter set of ``params``, the count unused).

    Why: through SQLAlchemy's adapter a statement is three or four hand-offs to that thread and back (cursor,
    execute, fetch, cursor close), each a wake-up of the thread and of the event loop; a get took ~0.9 ms of CPU,
    ~0.3 ms with one. Errors come as SQLAlchemy's would (``OperationalError`` for "no such table", which the store
    explains). After an error the connection is invalidated (the pool makes a new one): aiosqlite does not close the
    cursor of a fetch that failed (a row whose text is not UTF-8, written by another program), whose statement then
    kept the connection's read snapshot, so its later reads returned old data and its writes found the database
    locked; and one whose thread ended must not be handed out again. An in-memory database lives in its one
    connection: that is kept, unless its thread ended. The error's traceback is dropped: it holds that cursor (in a
    reference cycle only a full collection frees), and with it the snapshot. So is a cut's (a cancel that came as the
    statement's result did): its frames held the result's cursor, and a connection closed with such a cursor alive
    stays open in SQLite, its transaction with it, until a collection: every writer of the file waited in SQLite's
    busy wait (stores stalled for 10-30 s after a burst of timeouts, in 2 of 3 runs of an attack).
    """
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    try:
        if driver.isolation_level is not None:
            # A connection the engine made before the store hooked it (an engine passed in after its own use, say
            # for migrations) kept the driver's implicit transactions: the store's single-statement writes opened one
            # that was never committed, and the pool's rollback discarded them (20 of 30 increments answered "ok"
            # and lost). Set up here, at its first statement from the store, not in a pool checkout hook: a cancel
            # inside one made the pool invalidate the connection, and an in-memory database with it.
            await conn.run_sync(lambda sync: _set_up_sqlite(sync.connection.dbapi_connection, not in_memory))
        if fetch:
            return await driver.execute_fetchall(sql, params)
        if many:
            return (await driver.executemany(sql, params)).rowcount
        return (await driver.execute(sql, params)).rowcount
    except asyncio.CancelledError as cut:
        cut.__traceback__ = None
        raise
    except Exception as exc:  # ValueError: aiosqlite's "Connection closed", "no active connection"
        exc.__traceback__ = None
        lost = not (in_memory and isinstance(exc, sqlite3.Error))
        if lost:
            await conn.invalidate(exc)
        # (let go after a database's own error only for a clean state: not told as a lost connection, which it was
        # not; an error of a row's text said "its connection was lost")
        driver_gone = not isinstance(exc, sqlite3.Error)
        error = exc if not driver_gone else sqlite3.OperationalError(str(exc))
        raise DBAPIError.instance(sql, params, error, sqlite3.Error, connection_invalidated=driver_gone) from exc


def _note_landed(writes: Sequence[_Write], results: Sequence[Any]) -> None:
    """Keep on each of ``writes`` its result (of ``results``, in order) once the commit or statement that applied it
    landed, for its caller should its wait be cut now (see :meth:`SQLStream._write`)."""
    for w, result in zip(writes, results, strict=False):
        if not isinstance(result, BaseException):
            w.landed = result


async def _outlasting_cuts(operation: Coroutine[Any, Any, _T], landed: Callable[[_T], object]) -> _T:
    """Await ``operation`` as a task of its own; cut short (the store's timeout, a cancel), still wait for it, call
    ``landed`` with its result if it succeeded, and let the cut go on. A second cut stops the wait.

    Why: aiosqlite runs a statement or commit it was handed to its end in its thread, cut short or not. A SQLite
    write batch cut after its statement or commit was sent was applied all the same, and its change events were
    never published, so watchers silently missed those changes (64 applied writes of one batch, 0 events, in an
    attack), and its callers were told its outcome was unknown.

    Example:
        >>> async def demo() -> list[int]:
        ...     seen: list[int] = []
        ...     async def slow() -> int:
        ...         await asyncio.sleep(0.05)
        ...         return 1
        ...     with contextlib.suppress(TimeoutError):
        ...         async with asyncio.timeout(0.01):
        ...             await _outlasting_cuts(slow(), seen.append)
        ...     return seen
        >>> asyncio.run(demo())
        [1]
    """
    task = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            result = await asyncio.shield(task)
        except BaseException:  # it failed (not applied), or a second cut: the first cut goes on either way
            pass
        else:
            landed(result)
        raise


@functools.lru_cache(maxsize=256)
def _key_test(keys: int) -> str:
    """SQLite's test of ``item_key`` against that many keys, one ``?`` each: ``=`` for one (the usual lone caller),
    else ``IN``.

    Example:
        >>> _key_test(1), _key_test(3)
        (' = ?', ' IN (?, ?, ?)')
    """
    return " = ?" if keys == 1 else f" IN ({', '.join('?' * keys)})"


def _detached(pool: Pool) -> Any:
    """The driver's connection of a new connection from ``pool``, which lets it go at once (run in a greenlet:
    the driver's connect awaits). Cancelled at any await, it leaves no connection open."""
    made: list[Any] = []
    # first of the connect hooks: a cancellation (or failure) in a later one would strand the connection, which
    # SQLAlchemy 2.0 does not close
    event.listen(pool, "connect", lambda dbapi_connection, _record: made.append(dbapi_connection), insert=True)
    try:
        fairy = pool.connect()
    except BaseException:
        for dbapi_connection in made:
            dbapi_connection.driver_connection.terminate()
        raise
    driver: Any = fairy.driver_connection
    dbapi: Any = fairy.dbapi_connection
    fairy.detach()  # the pool forgets it: closing it is ours, and the pool's finalizer never touches it
    try:
        # as the pool's reset would: a transaction a connect hook began would hold every notification back
        dbapi.rollback()
    except BaseException:
        driver.terminate()
        raise
    return driver


def _cut_if_made(attempt: asyncio.Future[Any]) -> None:
    """Done callback of a connection attempt nobody waits for any more: cut the connection it made."""
    if not attempt.cancelled() and attempt.exception() is None:
        attempt.result().terminate()


class _Listener:
    """The one ``LISTEN`` connection of a PostgreSQL store, shared by all its watchers.

    Made on the first watch outside the store's pool: a copy of the pool (``Pool.recreate``: the engine's URL,
    connect arguments and connect events) makes it and lets it go, so an open watch never holds a connection that
    writes wait for. Every notification goes to each watcher's own bounded queue (a slow watcher lags alone). A
    connection the server ended is replaced in the background, with backoff, and a warning says that notifications
    sent meanwhile were lost. Closed when its last watcher closes, and with the store.
    """

    def __init__(self, store: SQLStream) -> None:
        self.store = store
        self.subscribers: set[_ListenSubscription] = set()
        self.driver: Any = None  # the asyncpg connection while it listens
        self._lock = asyncio.Lock()  # one connection attempt at a time
        self._stopping = asyncio.Event()
        self._reconnecting: asyncio.Task[None] | None = None
        # watchers that were listening when the server ended the connection: they missed what was sent until the
        # next connection listens (told so then, when the store reports gaps)
        self._deaf: set[_ListenSubscription] = set()
        # the parts of an event sent in parts, joined here once for every watcher: (tag, count, texts so far)
        self._parts: tuple[str, int, builtins.list[str]] | None = None
        self._dropping: str | None = None  # the tag of a broken run of parts, whose later parts are skipped
        self._heard = 0.0  # loop time of the listening connection's last notification (or answered probe)
        self._probe: asyncio.Task[None] | None = None  # the listening connection's keep-alive (_keep_alive)

    async def subscribe(self, maxsize: int) -> _ListenSubscription:
        """A new watcher; connects first when nothing listens (one attempt: its failure is raised)."""
        sub = _ListenSubscription(self, maxsize)
        # added before any await: the last other watcher leaving meanwhile must not close the connection
        self.subscribers.add(sub)
        try:
            if self.driver is None:
                async with self._lock:
                    if self.driver is None:
                        self._listen(await self._open())
        except BaseException:
            await self.discard(sub)
            raise
        return sub

    async def discard(self, sub: _ListenSubscription) -> None:
        """Forget ``sub``; the last watcher gone closes the connection."""
        self.subscribers.discard(sub)
        if not self.subscribers and not self._stopping.is_set():
            await self.stop()

    async def stop(self) -> None:
        """Stop listening and reconnecting, and end every watcher's reads (StopAsyncIteration); idempotent."""
        if self.store._listener is self:
            self.store._listener = None  # a later watch makes a new listener
        self._stopping.set()  # also ends a reconnect's pause at once
        subscribers, self.subscribers = self.subscribers, set()
        for sub in subscribers:
            sub.end()
        driver, self.driver = self.driver, None
        probe, self._probe = self._probe, None
        task, self._reconnecting = self._reconnecting, None
        try:
            if probe is not None:  # first: a probe's query under way would hold the connection's close
                probe.cancel()
                with contextlib.suppress(Exception):  # a probe's failure is its own to log, not the stop's
                    await finish_within(probe, _STOP_S, "the PostgreSQL LISTEN connection's probe", log)
            if driver is not None:
                await self._close(driver)
        except BaseException:
            # this stop is cancelled: no later stop reaches the connection or the reconnect, so they are cut now
            if driver is not None:
                driver.remove_termination_listener(self._on_terminate)
                driver.terminate()
            if task is not None:
                task.cancel()
            raise
        if task is not None:
            # cancelled at once: an attempt in flight cuts what it made (_open); waiting for it held a watcher's
            # close (or the store's) for 2 s while the database hung
            task.cancel()
            with contextlib.suppress(Exception):
                await finish_within(task, _STOP_S, "the PostgreSQL LISTEN connection's reconnect", log)

    async def _open(self) -> Any:
        """A new asyncpg connection that LISTENs, within the store's timeout; ``StreamClosedError`` once stopping."""
        if self.store.engine.dialect.driver != "asyncpg":
            raise StreamBackendError(f"SQLStream.watch on PostgreSQL needs the asyncpg driver "
                                     f"(postgresql+asyncpg://…), not {self.store.engine.dialect.driver!r}")
        if self._stopping.is_set():  # a watcher that waited for another's attempt: no connection to make
            raise StreamClosedError("SQLStream is closed")
        attempt = asyncio.ensure_future(self._connect())
        try:
            async with asyncio.timeout(self.store.timeout):
                # shielded, then cancelled here: an attempt that finished as we gave up is cut, not lost
                driver = await asyncio.shield(attempt)
        except BaseException:
            # a hung connect ends now (it left sockets open until the driver's own timeout, 60 s by default);
            # cancelled, it closes what it made (_detached, _connect)
            attempt.cancel()
            attempt.add_done_callback(_cut_if_made)
            raise
        if self._stopping.is_set():  # the store closed meanwhile: nobody would close this one
            await self._close(driver)
            raise StreamClosedError("SQLStream is closed")
        if driver.is_closed():
            # ended by the server before it was ours: its termination listener was never called, and taking it
            # would leave every watcher deaf for good
            raise StreamUnavailableError("SQLStream.watch: the server ended the LISTEN connection as it was made")
        return driver

    async def _connect(self) -> Any:
        driver = await greenlet_spawn(_detached, self.store.engine.sync_engine.pool.recreate())
        try:
            await driver.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except BaseException:
            driver.terminate()
            raise
        return driver

    def _listen(self, driver: Any) -> None:
        self.driver = driver
        # parts the previous connection left unfinished belong to the outage's gap, not to what comes now
        self._parts = self._dropping = None
        driver.add_termination_listener(self._on_terminate)
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        if self._probe is not None:
            self._probe.cancel()  # the previous connection's, ended by now
        self._probe = loop.create_task(self._keep_alive(driver))
        deaf, self._deaf = self._deaf, set()
        if self.store.report_watch_gaps:
            # no await since the connection listens: the gap comes before anything it delivers
            for sub in deaf & self.subscribers:
                sub.offer_gap()

    async def _close(self, driver: Any) -> None:
        driver.remove_termination_listener(self._on_terminate)
        try:
            await driver.close(timeout=_CLOSE_S)  # ends LISTEN too: no UNLISTEN round trip
        except BaseException as exc:
            driver.terminate()  # a connection the server ended, a hung server, or a cancellation
            if not isinstance(exc, Exception):
                raise

    async def _keep_alive(self, driver: Any) -> None:
        """Probe ``driver`` whenever it was quiet for ``_QUIET_S``; cut it when a probe gets no answer."""
        loop = asyncio.get_running_loop()
        while driver is self.driver:
            wait = self._heard + _QUIET_S - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # a timer: until the connection has been quiet long enough
                continue
            try:
                async with asyncio.timeout(_PONG_S):
                    await driver.fetchval("SELECT 1")
            except Exception as exc:  # no answer in time, or the connection failed under the probe
                if driver is self.driver:
                    log.warning("stream watch: the LISTEN connection did not answer a probe within %g s (%s); "
                                "replacing it", _PONG_S, error_line(exc))
                    driver.terminate()  # its termination listener replaces it and marks the gap
                return
            self._heard = loop.time()

    def _on_notify(self, conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if conn is not self.driver or not payload:  # an attempt cut meanwhile; a bare NOTIFY
            return
        self._heard = asyncio.get_running_loop().time()
        if payload.startswith(_PART_MARK):
            joined = self._join(payload)
            if joined is None:
                return
            payload = joined
        if not payload.startswith("{"):  # checked once here: each watcher would warn about it
            log.warning("stream watch: ignoring a notification that is not a JSON object")
            return
        # one shared object per event sent without its data: its watchers share one read of the row, not one each
        item: str | _Refill = _Refill(payload) if _TRUNCATED in payload else payload
        for sub in self.subscribers:
            sub.offer(item)

    def _join(self, part: str) -> str | None:
        """The whole payload once ``part`` is the last of its event, else ``None``.

        PostgreSQL delivers one transaction's notifications together and in order, so the parts of an event come
        one after the other: anything else (a part missing, out of order, alone; only a foreign sender or a
        malformed one makes that) loses that event, which every watcher is told (``StreamGapError``).
        """
        head, _, text = part.partition("|")
        try:
            tag, index_text, count_text = head[len(_PART_MARK):].split(".")
            index, count = int(index_text), int(count_text)
        except ValueError:
            tag, index, count = head, -1, 0
        if tag == self._dropping:
            return None  # the rest of a run already reported broken
        parts = self._parts
        if index == 0 and count > 0 and parts is None:
            parts = self._parts = (tag, count, [])
        elif parts is None or parts[0] != tag or index != len(parts[2]) or count != parts[1]:
            # the run in progress (if any) ends here, and so does the run this part belongs to
            self._parts = None
            self._dropping = tag
            self._lose_event()
            if index == 0 and count > 0:  # a new run: the broken one is reported, this one may still be whole
                self._dropping = None
                parts = self._parts = (tag, count, [])
            else:
                return None
        parts[2].append(text)
        if len(parts[2]) < count:
            return None
        self._parts = None
        return "".join(parts[2])

    def _lose_event(self) -> None:
        log.warning("stream watch: an event sent in parts arrived incomplete; its watchers are told")
        for sub in self.subscribers:
            sub.offer_lost()

    def _on_terminate(self, conn: Any) -> None:
        if conn is not self.driver:
            return
        self.driver = None
        if self._stopping.is_set():
            return
        self._deaf |= self.subscribers
        log.warning("stream watch: the server ended the LISTEN connection; reconnecting")
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        await retry_until_closed(self._connect_again, self._stopping, (_ConnectFailed,),
                                 lambda exc: self.store._watch_retries.lost("failed", str(exc)))
        if self.driver is not None and not self._stopping.is_set():
            log.warning("stream watch: LISTEN connection replaced; notifications sent meanwhile were lost "
                        "(%d watcher(s))", len(self.subscribers))

    async def _connect_again(self) -> None:
        """One attempt of the background reconnect: every failure is :class:`_ConnectFailed` and retried (a
        reconnect that gave up would leave every watcher deaf; SQLAlchemy 2.0.0 lets some driver errors through
        unwrapped, asyncpg's 'database is not currently accepting connections' for one)."""
        async with self._lock:
            if self.driver is not None or self._stopping.is_set():
                return  # a new watcher connected meanwhile, or the listener stopped
            try:
                driver = await self._open()
            except StreamClosedError:
                return
            except Exception as exc:
                raise _ConnectFailed(error_line(exc)) from exc
            self._listen(driver)


_GAP: Final = object()
_LOST: Final = object()  # in a watcher's queue where an event sent in parts arrived incomplete
# in every payload an older version of this store sent without its data (a create or update over 8000 bytes,
# which it left its watchers to read back); in others only as a hint, checked after parsing
_TRUNCATED: Final = '"truncated":true'


class _Refill:
    """A notification sent without its data (or names) by an older version of this store, queued to each watcher of
    a store: the first watcher that needs the row starts one read of it, later ones take that read's outcome (one
    query per event, not one per watcher; and the value read nearest to the event)."""

    __slots__ = ("_read", "payload")

    def __init__(self, payload: str) -> None:
        self.payload = payload
        self._read: asyncio.Future[Any] | None = None

    async def row(self, store: SQLStream, key: bytes) -> Any:
        """The row of ``key`` (``None`` once deleted), read once for every watcher."""
        if self._read is None:
            self._read = asyncio.ensure_future(store._read_back(key))
            # retrieved, so a failure whose first reader was cancelled is not reported as never retrieved
            self._read.add_done_callback(lambda read: read.cancelled() or read.exception())
        # shielded: one reader's cancellation must not fail the others' read
        return await asyncio.shield(self._read)


def gap_error() -> StreamGapError:
    """The error of a PostgreSQL watch whose LISTEN connection was replaced.

    Example:
        >>> str(gap_error())  # doctest: +ELLIPSIS
        'PostgreSQL watch lost its LISTEN connection and listens again: notifications sent in between were lost ...'
    """
    return StreamGapError("PostgreSQL watch lost its LISTEN connection and listens again: notifications sent in "
                          "between were lost (re-read state, then read on)")


def lost_event_error(why: str) -> StreamGapError:
    """The error of a PostgreSQL watch in place of one event it cannot deliver exactly (``why``); the watch reads
    on.

    Example:
        >>> str(lost_event_error("an event sent in parts arrived incomplete"))  # doctest: +ELLIPSIS
        'PostgreSQL watch could not deliver an event: an event sent in parts arrived incomplete (re-read state, ...'
    """
    return StreamGapError(f"PostgreSQL watch could not deliver an event: {why} (re-read state, then read on)")


def _notify_payloads(payload: str) -> builtins.list[str]:
    """The notifications that carry ``payload``, whatever its kind: itself when it fits, else its parts."""
    # a character is at most 4 UTF-8 bytes: a short payload fits without encoding it to count
    if len(payload) * 4 <= _NOTIFY_LIMIT or len(payload.encode()) <= _NOTIFY_LIMIT:
        return [payload]
    return split_payload(payload)


def split_payload(payload: str, tag: str | None = None) -> builtins.list[str]:
    """``payload`` as notifications of at most 7999 UTF-8 bytes each: ``~<tag>.<index>.<count>|<text>``, cut
    between characters (``tag``: random unless given). Sent in one transaction, they reach a listener together
    and in order.

    Example:
        >>> parts = split_payload("é" * 5000, tag="t")
        >>> [p[:8] for p in parts], "".join(p.partition("|")[2] for p in parts) == "é" * 5000
        (['~t.0.2|é', '~t.1.2|é'], True)
    """
    budget = _NOTIFY_LIMIT - _PART_HEAD_MAX
    if payload.isascii():  # one byte per character: cut the text itself, with no encoding and decoding
        texts = [payload[start:start + budget] for start in range(0, len(payload), budget)]
    else:
        raw = payload.encode()
        texts = []
        start = 0
        while start < len(raw):
            end = min(start + budget, len(raw))
            while end < len(raw) and raw[end] & 0xC0 == 0x80:  # inside a character: cut before it
                end -= 1
            texts.append(raw[start:end].decode())
            start = end
    tag = os.urandom(8).hex() if tag is None else tag  # unique: PostgreSQL drops a repeated payload in a transaction
    return [f"{_PART_MARK}{tag}.{index}.{len(texts)}|{text}" for index, text in enumerate(texts)]


class _ListenSubscription:
    """One watcher of a store's shared ``LISTEN`` connection (PostgreSQL): a bounded queue of notifications.

    A consumer more than ``maxsize`` events behind gets :class:`~iii_streams.events.StreamLagError` (as from the
    in-process hub), not a silent gap; the other watchers are unaffected.
    """

    def __init__(self, listener: _Listener, maxsize: int) -> None:
        self._listener = listener
        # payloads, parsed by each reader (no two watchers share one event object); None wakes the reader after a
        # lag or a close; _GAP marks where a lost connection's notifications are missing
        self._queue: asyncio.Queue[str | object | None] = asyncio.Queue(maxsize)
        self._lagged = False
        self._closed = False

    @property
    def _driver(self) -> Any:
        """The shared connection while it listens; ``None`` while it is being replaced."""
        return self._listener.driver

    def offer(self, item: str | _Refill) -> None:
        """Queue one notification; never blocks (a full queue marks the lag)."""
        self._put(item)

    def offer_gap(self) -> None:
        """Mark where notifications were lost (the connection was replaced); a full queue marks the lag instead."""
        self._put(_GAP)

    def offer_lost(self) -> None:
        """Mark where an event sent in parts was lost; a full queue marks the lag instead."""
        self._put(_LOST)

    def _put(self, item: object) -> None:
        if self._lagged or self._closed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            # no wake-up: a full queue has no reader waiting, and making room for one dropped the oldest event,
            # which the reader then never saw although the lag came after it
            self._lagged = True

    def end(self) -> None:
        """The listener stopped (the store closed): reads end."""
        if not self._closed:
            self._closed = True
            wake(self._queue)

    async def get(self) -> StreamEvent:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._lagged and self._queue.empty():  # reported again on every read: every later event is dropped
                raise lag_error(self._queue.maxsize)
            item = await self._queue.get()
            if item is None:
                continue  # a wake-up: the checks above say why
            if item is _GAP:
                raise gap_error()
            if item is _LOST:
                raise lost_event_error("an event sent in parts arrived incomplete")
            assert isinstance(item, str | _Refill)
            payload = item.payload if isinstance(item, _Refill) else item
            try:
                event = loads(payload)
            except ValueError as exc:
                log.warning("stream watch: ignoring a notification that is not readable JSON (%s)", exc)
                continue
            truncated = event.pop("truncated", False)
            if not truncated or await self._listener.store._fill_truncated(
                    event, item if isinstance(item, _Refill) else _Refill(payload)):
                # keep the wrapper's key order for events rebuilt from a reference
                order = ("type", "timestamp", "streamName", "groupId", "id", "event")
                return {k: event[k] for k in order if k in event}

    async def close(self) -> None:
        self.end()
        await self._listener.discard(self)


def missing_directory_hint(url: URL | str) -> str:
    """For a SQLite file in a directory that does not exist: that, and for a relative path how to write the absolute
    one (``sqlite:///tmp/x.db`` is ``tmp/x.db``, relative to the working directory); ``""`` otherwise.

    Example:
        >>> missing_directory_hint("sqlite+aiosqlite:///no/such/dir/x.db")  # doctest: +NORMALIZE_WHITESPACE
        ' (directory no/such/dir does not exist; a relative path: use four slashes for an absolute one,
        sqlite+aiosqlite:////no/such/dir/x.db)'
        >>> missing_directory_hint("sqlite+aiosqlite://")
        ''
    """
    try:
        url = make_url(url)
    except (ValueError, ArgumentError):  # (a hint never replaces the error it is added to)
        return ""
    path = url.database
    if not path or not url.get_backend_name() == "sqlite" or not _is_file_database(url):
        return ""
    if path.startswith("file:"):  # a SQLite URI: its file's path is what may name a missing directory
        try:
            file = _file_path(url)
        except ValueError:
            return ""
        directory = os.path.dirname(file or "")
        return f" (directory {directory} does not exist)" if directory and not os.path.isdir(directory) else ""
    directory = os.path.dirname(path)
    if not directory or os.path.isdir(directory):
        return ""
    if os.path.isabs(path):
        return f" (directory {directory} does not exist)"
    absolute = _shown(url.set(database="/" + path))
    return f" (directory {directory} does not exist; a relative path: use four slashes for an absolute one, {absolute})"


# SQLAlchemy marks aiosqlite's connection thread a daemon, but before 2.0.46 only where the Connection is that thread
# (aiosqlite before 0.22): with aiosqlite 0.22 and such a SQLAlchemy (both within our floors) the thread is a plain one,
# which the interpreter's exit joins and which ends only with its connection. A store left open (a script's end, an
# exception) held the exit for good. Such connections are stopped as the exit starts (iii.handler_threads.at_exit_start,
# the hook concurrent.futures uses), unless their loop still runs: another thread's, which may still use them.
_STOP_AT_EXIT: weakref.WeakKeyDictionary[Any, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()
_stop_at_exit_lock = threading.Lock()
_stop_at_exit_hooked = False


def _stop_at_exit(driver: Any) -> None:
    """Stop aiosqlite connection ``driver`` as the interpreter's exit starts when its thread would hold that exit (not
    a daemon); nothing for the others, and on a Python or aiosqlite without the means (``stop()``, the exit hook)."""
    global _stop_at_exit_hooked
    thread = getattr(driver, "_thread", None)  # aiosqlite 0.22+ (before, the Connection is the thread, made a daemon)
    if not isinstance(thread, threading.Thread) or thread.daemon or not callable(getattr(driver, "stop", None)):
        return
    if EXIT_HOOK_MISSING:
        return
    with _stop_at_exit_lock:
        _STOP_AT_EXIT[driver] = asyncio.get_running_loop()
        if not _stop_at_exit_hooked:
            # False once the exit started (a connection made by another thread then): nothing to do
            _stop_at_exit_hooked = at_exit_start(_stop_left_open)


def _stop_left_open() -> None:
    """At the interpreter's exit: stop the connections :func:`_stop_at_exit` took whose loop no longer runs (their
    threads close the SQLite connection and end; the exit's join then returns)."""
    with _stop_at_exit_lock:
        left = list(_STOP_AT_EXIT.items())
    for driver, loop in left:
        if loop.is_running():
            continue
        with contextlib.suppress(Exception), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stop() asks for an event loop there is none of any more
            driver.stop()


# Store hooks go on an engine once, however many stores share it: two stores on one engine each added a "begin" hook,
# and every transaction of the engine's then failed with "cannot start a transaction within a transaction".
# SQLite engines with their hooks, each with the lock its stores take around their writes (and, in memory, their
# reads: stores sharing an in-memory engine share its one connection, and a lock of each store's own let their
# transactions nest); PostgreSQL engines with their hooks.
_SQLITE_HOOKED: weakref.WeakKeyDictionary[Any, tuple[asyncio.Lock, _PoolOpens]] = weakref.WeakKeyDictionary()
_POSTGRESQL_HOOKED: weakref.WeakSet[Any] = weakref.WeakSet()


class _PoolOpens:
    """A SQLite engine's pool entries, and how many times one of them connected while none of the others was open.

    Why: SQLite deletes a database's ``-wal`` file as the last connection to it closes (after moving its pages into
    the database), and the next connection makes a new one; a ``-wal`` noted before that moment is legitimately gone
    (see ``SQLStream._note_wal_after_commit``). While one connection stays open nothing of SQLite's deletes or
    replaces it (checkpoints of every mode, ``journal_size_limit`` and other connections' closes keep its inode:
    measured).

    Example:
        >>> class Entry:
        ...     dbapi_connection = object()
        >>> opens, first, second = _PoolOpens(), Entry(), Entry()
        >>> opens.connected(first); opens.connected(second); opens.reopened
        1
        >>> first.dbapi_connection = second.dbapi_connection = None  # both closed
        >>> opens.connected(Entry()); opens.reopened
        2
    """

    __slots__ = ("entries", "made", "reopened")

    def __init__(self) -> None:
        self.entries: weakref.WeakSet[Any] = weakref.WeakSet()
        self.reopened = 0
        self.made = 0  # connections made

    def connected(self, entry: Any) -> None:
        """Count ``entry``'s new connection (a pool entry: ``dbapi_connection`` is ``None`` once it is closed)."""
        self.made += 1
        if not any(other is not entry and other.dbapi_connection is not None for other in self.entries):
            self.reopened += 1
        self.entries.add(entry)


def _install_sqlite_hooks(engine: AsyncEngine, file_backed: bool) -> tuple[asyncio.Lock, _PoolOpens]:
    """The store hooks on ``engine`` (once); returns the engine's write lock and its :class:`_PoolOpens`."""
    sync_engine = engine.sync_engine
    hooked = _SQLITE_HOOKED.get(sync_engine)
    if hooked is not None:
        return hooked
    lock, opens = _SQLITE_HOOKED[sync_engine] = asyncio.Lock(), _PoolOpens()

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        opens.connected(record)  # (before its first statement, which opens the -wal file: a new one if none was open)
        _set_up_sqlite(dbapi_connection, file_backed)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if not options.get(_SQLITE_AUTOCOMMIT) and options.get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    if not file_backed:
        @event.listens_for(sync_engine, "handle_error")
        def _keep_the_only_connection(context: ExceptionContext) -> None:
            # An in-memory database lives in its one connection. SQLAlchemy invalidates a connection whose operation
            # a cancellation interrupted (its state unknown), and the pool made a new, empty database: every item was
            # gone at the first cancelled or timed-out operation. aiosqlite runs the interrupted operation to its end
            # in its thread, before the next one, so the connection is kept.
            if _interrupted(context.original_exception):
                context.is_disconnect = False

    return lock, opens


def _set_up_sqlite(dbapi_connection: Any, file_backed: bool) -> None:
    """Set up a SQLite connection for the store (run in a greenlet: its calls to the driver's thread await): no
    implicit transactions (the store's BEGIN IMMEDIATE is what runs), the busy wait, WAL, and a stop at exit. The
    pragmas in one script: a connect cut between cursor calls left a cursor in a reference cycle (see
    :func:`_sqlite_run`)."""
    dbapi_connection.isolation_level = None
    pragmas = f"PRAGMA busy_timeout = {int(SQLITE_BUSY_S * 1000)};"
    wal = " PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
    if file_backed:
        pragmas += wal
    driver = dbapi_connection.driver_connection
    try:
        await_only(driver.executescript(pragmas))
    except sqlite3.OperationalError as exc:
        if not (file_backed and "database is locked" in str(exc)):
            raise
        _switch_to_wal(driver, wal)
    _stop_at_exit(getattr(dbapi_connection, "driver_connection", None))


def _switch_to_wal(driver: Any, wal: str) -> None:
    """Try the switch to WAL again until the busy wait's :data:`SQLITE_BUSY_S` run out: SQLite does not wait for
    the lock it needs (another process's write in a file still in rollback-journal mode, ``iii-streams migrate``'s
    included) but answers "database is locked" at once, and the store's first operation failed within 3 ms,
    saying SQLite had stayed locked."""
    deadline = time.monotonic() + SQLITE_BUSY_S
    pause = 0.005
    while True:
        await_only(asyncio.sleep(pause))
        try:
            await_only(driver.executescript(wal))
            return
        except sqlite3.OperationalError as exc:
            if "database is locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        pause = min(pause * 2, 0.1)


def _interrupted(exc: BaseException | None) -> bool:
    """Whether ``exc`` interrupted an operation from outside (a cancellation, a timeout) rather than came from it.

    Example:
        >>> _interrupted(asyncio.CancelledError()), _interrupted(sqlite3.OperationalError("no such table"))
        (True, False)
    """
    return exc is not None and (not isinstance(exc, Exception) or isinstance(exc, TimeoutError))


_WATCH_RETRY_LOG_S: Final = 10.0


def _log_watch_retries(counts: Mapping[str, int], latest: str | None) -> None:
    log.warning("stream watch: PostgreSQL unreachable: %d attempt(s) to reconnect the LISTEN connection failed "
                "since the last warning%s; retrying (every 2 s at most)", counts["failed"], latest_tail(latest))


DISPOSE_TIMEOUT_S: Final = _DISPOSE_DEFAULT_S
"""How long a store's close waits for the database to answer the orderly close of its pooled connections (see
:func:`iii_streams.engine_bounds.dispose_within`); read at each close."""

MIGRATION_CLOSE_WAIT_S: Final = 2.0
"""How long a store's close lets an opening under way finish before it gives up on it: the migration of a store with
``create``, the first connect of one without (see :class:`_Opening`); read at each close. On a healthy database it
ends well within it and the operations waiting for it go on (the batch of writes under way commits; writes queued
behind it are refused, as any write not started at a close is). Past it (at once when no
operation waits for it) those operations fail with :class:`~iii_streams.errors.StreamClosedError`, and on PostgreSQL
(asyncpg) the opening is cancelled (its connections cut if it has not ended :data:`DISPOSE_TIMEOUT_S` later); on
SQLite it is left to end by itself (SQLite's busy wait, 30 s at most): aiosqlite cannot interrupt its thread, and a
cancel inside its connect could leave a connection holding the file's lock. The operations under way (those an opening
let through as it ended included) get what is left of it, from the close's start, to end before the close's dispose;
those reaching the database after that fail with StreamClosedError (see :meth:`SQLStream._let_operations_end`)."""
OPENING_LEFT_WAIT_S: Final = 0.25
"""How long a store's close waits for a SQLite opening it gave up on at once (none of its callers waited): a SQLite
open takes milliseconds, and a close that returned at once left its thread running (a loop ended right after printed
aiosqlite's "Event loop is closed", 45 of 60 runs). Not longer: on a file another process has locked the opening
waits out SQLite's busy timeout whatever the close does (2 s here made every close on a locked file take 2 s: 8 s for
four stores closed in turn)."""

# openings a close gave up on, until they end (SQLite: by themselves; PostgreSQL: cancelled); the loop holds its
# tasks only weakly
_OPENINGS_LEFT: set[asyncio.Future[Any]] = set()


@dataclass(slots=True, eq=False)
class _Opening:
    """What a store runs before its first operations, in a task of its own: its migration (``create``) or its first
    connect. Its callers wait for the task or for ``left``, set by a close that gave up on it
    (:meth:`SQLStream._end_opening`), whichever comes first; ``waiting`` counts them."""

    task: asyncio.Task[None]
    left: asyncio.Future[None]
    waiting: int = 0


def _install_postgresql_hooks(engine: AsyncEngine) -> None:
    if engine.sync_engine in _POSTGRESQL_HOOKED:
        return
    _POSTGRESQL_HOOKED.add(engine.sync_engine)

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # A server that ended an idle pooled connection (restart, failover, pg_terminate_backend, an idle timeout)
        # has closed its socket, which asyncpg saw: the pool replaces it now (this raise) at no round trip's cost,
        # instead of the next operation failing on it although the database is up.
        driver = getattr(dbapi_connection, "_connection", None)
        if driver is None:
            return
        if driver.is_closed():
            raise DisconnectionError("the server closed this pooled connection while it was idle")
        # (timed from its last checkout, not its checkin: no listener more per operation, and one held for a second
        # is rare enough that a ping after it costs nothing that shows)
        info, now = record.info, time.monotonic()
        last = info.get(_LAST_CHECKOUT)
        info[_LAST_CHECKOUT] = now
        if last is not None and now - last >= _IDLE_PING_S:
            _ping(driver)

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        # SQLAlchemy takes an asyncpg error for a lost connection only once asyncpg saw the socket closed. Ended by
        # the server (pg_terminate_backend, a restart), a connection got the server's last error first and was left
        # in a state no operation can use ("cannot switch to state 12; another operation (2) is in progress"):
        # given back to the pool, it failed the operations after, the server being up. Invalidated now, as lost.
        if not context.is_disconnect and _connection_broken(context.original_exception):
            context.is_disconnect = True



def _ping(driver: Any) -> None:
    """One empty query on asyncpg connection ``driver`` (from a pool event, in SQLAlchemy's greenlet); a connection
    that fails it is let go (``DisconnectionError``: the pool makes a new one and the operation goes on). Nothing of
    the operation was sent yet, so a write checked out on such a connection is written once, on the new one."""
    try:
        await_only(driver.execute(";"))
    except Exception as exc:
        driver.terminate()
        raise DisconnectionError(f"the server ended this pooled connection while it was idle: {exc}") from exc
    except BaseException:
        driver.terminate()  # cut short (a timeout, a cancel): its protocol state is unknown
        raise


# SQLSTATEs of a server ending the session: admin_shutdown (pg_terminate_backend, a fast shutdown), crash_shutdown,
# cannot_connect_now; and the class of connection exceptions
_ENDED_SQLSTATES: Final = ("57P01", "57P02", "57P03", "08")


def _connection_broken(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the driver's connection cannot be used any more: asyncpg
    left in the middle of an operation (``InternalClientError``, its schema-cache one aside; an ``InterfaceError``
    that another operation is in progress or the connection closed), or the server ending the session.

    Example:
        >>> class InternalClientError(Exception):
        ...     pass
        >>> InternalClientError.__module__ = "asyncpg.exceptions._base"
        >>> broken = InternalClientError("cannot switch to state 12; another operation (2) is in progress")
        >>> _connection_broken(RuntimeError("wrapped")), _connection_broken(broken)
        (False, True)
    """
    seen = 0
    while exc is not None and seen < 5:
        names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.startswith("asyncpg")}
        if "InternalClientError" in names and "OutdatedSchemaCacheError" not in names:
            return True
        text = str(exc)
        if "InterfaceError" in names and ("another operation is in progress" in text or "closed" in text):
            return True
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_ENDED_SQLSTATES):
            return True
        exc, seen = exc.__cause__, seen + 1
    return False


# SQLSTATE classes of a statement refused for the data it writes: data exception (a value the column's type refuses),
# integrity constraint violation (a CHECK, NOT NULL, unique or foreign key constraint), and a trigger's RAISE
_REFUSED_SQLSTATES: Final = ("22", "23", "P0")


def _refused_write(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing a write statement for the data it writes (a constraint, a trigger,
    the column's type), not for the database's state (locked, full, unreachable): another write may still succeed.

    Example:
        >>> _refused_write(DBAPIError("UPDATE", None, sqlite3.IntegrityError("CHECK constraint failed: positive")))
        True
        >>> _refused_write(DBAPIError("UPDATE", None, sqlite3.OperationalError("database is locked")))
        False
    """
    state = _sqlstate(exc)
    if state is not None:
        return state.startswith(_REFUSED_SQLSTATES)
    return isinstance(getattr(exc, "orig", exc), sqlite3.IntegrityError | sqlite3.DataError)


def _unsent(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is asyncpg refusing to start an operation, so that nothing of
    it was written to the server: its connection was not connected, or was busy with something the server sent
    unasked (the error a server ending the session sends before closing it, "cannot switch to state 12; another
    operation (2) is in progress"). asyncpg checks both before it writes an operation's first message.

    Example:
        >>> class InternalClientError(Exception):
        ...     pass
        >>> InternalClientError.__module__ = "asyncpg.exceptions._base"
        >>> _unsent(InternalClientError("cannot switch to state 12; another operation (2) is in progress"))
        True
        >>> _unsent(InternalClientError("unexpected error while performing authentication"))
        False
    """
    error: BaseException | None = exc
    for _ in range(5):
        if error is None:
            break
        kind = type(error)
        if kind.__module__.startswith("asyncpg") and kind.__name__ == "InternalClientError" and (
                str(error).startswith("cannot switch to state") or str(error) == "not connected"):
            return True
        error = error.__cause__
    return False


def _lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` is an operation's failure because its pooled connection was lost (SQLAlchemy invalidated it;
    SQLAlchemy 2.0.0 raises asyncpg's errors unwrapped), not a connect the server refused nor a statement it refused.

    Example:
        >>> _lost_connection(DBAPIError("SELECT 1", None, Exception("closed"), connection_invalidated=True))
        True
        >>> _lost_connection(DBAPIError("SELECT 1", None, Exception("syntax error")))
        False
    """
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated
    return _is_driver_error(exc) and _connection_broken(exc)


def _shared_lock_wait(writes: int, chars: int, left: float | None) -> float:
    """Seconds a shared batch of ``writes`` writes, ``chars`` characters of values in all, waits for one row lock
    (see ``_SHARED_LOCK_TIMEOUT``), with ``left`` seconds left to its writes (``None``: no limit). Never 0, which
    PostgreSQL would take for no limit at all.

    Example:
        >>> _shared_lock_wait(3, 30, None), _shared_lock_wait(64, 64 * 40_000, None)
        (0.1, 0.2816)
        >>> _shared_lock_wait(256, 256 * 40_000, None), _shared_lock_wait(256, 256 * 40_000, 0.08)
        (0.5, 0.02)
    """
    wait = min(_SHARED_LOCK_MAX_S, max(_SHARED_LOCK_MIN_S, 2 * (writes * _HOLD_PER_WRITE_S + chars * _HOLD_PER_CHAR_S)))
    if left is not None:
        wait = min(wait, left * _SHARED_LOCK_SHARE)
    return max(wait, 0.001)


def _handing_on(writes: Sequence[_Write], answers: builtins.list[Any]) -> builtins.list[Any]:
    """``answers``, with every write handed on (:class:`Requeue`) marked neither sent nor pinned: it was not committed
    (a batch that re-ran for withdrawals pins the writes it keeps), so its caller may still withdraw it until its
    item's own queue runs it."""
    for w, answer in zip(writes, answers, strict=True):
        if isinstance(answer, Requeue):
            w.sent = w.pinned = False
            w.handed = True
    return answers


def _sqlite_lock_held(path: str, write: bool, wait_s: float) -> bool:
    """Whether another connection (another process's writer) holds a lock on the SQLite file ``path`` that a store's
    ``write`` (else its read) waits for, for all of ``wait_s``. Run in a thread: its wait (SQLite's busy timeout)
    is the bound. No file yet (no lock on it), or any other failure: ``False`` (the store's own open reports it).

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "s.db")
        >>> holder = sqlite3.connect(path, isolation_level=None)
        >>> _ = holder.execute("BEGIN EXCLUSIVE")
        >>> _sqlite_lock_held(path, True, 0.05), _sqlite_lock_held(path, False, 0.05)
        (True, True)
        >>> holder.rollback()
        >>> _sqlite_lock_held(path, True, 0.05)
        False
    """
    if not os.path.isfile(path):  # not created here: the store's open decides (create, a missing directory)
        return False
    try:
        probe = sqlite3.connect(path, timeout=wait_s, isolation_level=None, check_same_thread=False)
    except sqlite3.Error:
        return False
    try:
        # what the store's open takes first: the write lock (create: the migration), or the read lock
        probe.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        probe.execute("SELECT count(*) FROM sqlite_master").fetchall()
        probe.rollback()
    except sqlite3.OperationalError as exc:
        return exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    except sqlite3.Error:
        return False
    finally:
        probe.close()
    return False


def _file_path(url: URL) -> str | None:
    """The absolute path of a SQLite URL's file, a ``file:`` URI's (``uri=true``) too; ``None`` for an in-memory
    database.

    Example:
        >>> _file_path(make_url("sqlite+aiosqlite:////srv/s.db")), _file_path(make_url("sqlite+aiosqlite://"))
        ('/srv/s.db', None)
        >>> _file_path(make_url("sqlite+aiosqlite:///file:/srv/my%20s.db?uri=true&mode=rwc"))
        '/srv/my s.db'
        >>> _file_path(make_url("sqlite+aiosqlite:///file::memory:?uri=true&cache=shared")) is None
        True
    """
    database = url.database
    if not database or not _is_file_database(url):
        return None
    # (without uri=true SQLAlchemy hands SQLite the absolute path of the text as it is: a file named "file:…")
    if database.startswith("file:") and _sqlite_uri(url):
        return _uri_file_path(database)
    # SQLite opens the file a symlink points to and keeps its -wal and -shm beside that file, not beside the link
    return os.path.realpath(database)


def _sqlite_uri(url: URL) -> bool:
    """Whether SQLAlchemy's sqlite driver hands SQLite the URL's database as a ``file:`` URI: its ``uri`` option read
    as the driver reads it (``sqlalchemy.util.asbool``: true, yes, on, y, t or 1, any case). A value it reads as
    neither true nor false is refused naming the option (SQLAlchemy's own words, "String is not true/false:
    'maybe'", do not name it).

    Example:
        >>> _sqlite_uri(make_url("sqlite+aiosqlite:///file:s.db?uri=Yes")), _sqlite_uri(make_url("sqlite:///s.db"))
        (True, False)
        >>> _sqlite_uri(make_url("sqlite+aiosqlite:///file:s.db?uri=maybe"))
        Traceback (most recent call last):
        ...
        ValueError: SQLite URL option uri='maybe': not true or false (true, yes, on, y, t, 1 / false, no, off, n, f, 0)
        >>> _sqlite_uri(make_url("sqlite+aiosqlite:///file:s.db?uri=false&uri=0"))
        Traceback (most recent call last):
        ...
        ValueError: SQLite URL option uri is given 2 times ('false', '0'): give it once
    """
    value = url.query.get("uri", False)
    if isinstance(value, tuple):  # (a repeated option: the driver's asbool took any two values for true)
        raise ValueError(f"SQLite URL option uri is given {len(value)} times ({', '.join(map(repr, value))}): give it "
                         "once")
    try:
        return asbool(value)
    except ValueError:
        raise ValueError(f"SQLite URL option uri={value!r}: not true or false (true, yes, on, y, t, 1 / false, no, "
                         "off, n, f, 0)") from None


def _uri_file_path(uri: str) -> str | None:
    """The absolute path of the file a SQLite ``file:`` URI names (its query and fragment left out, ``%XX``
    decoded, a ``//`` authority of ``localhost`` or nothing allowed, as SQLite reads it); ``None`` for an in-memory
    or temporary database, or another host's file (which SQLite refuses).

    Example:
        >>> _uri_file_path("file://localhost/srv/s.db?mode=rw#x"), _uri_file_path("file:")
        ('/srv/s.db', None)
    """
    rest = uri[len("file:"):].split("#", 1)[0].split("?", 1)[0]
    if rest.startswith("//"):
        authority, slash, tail = rest[2:].partition("/")
        if authority not in ("", "localhost"):
            return None
        rest = slash + tail
    path = urllib.parse.unquote(rest)
    if path in ("", ":memory:"):
        return None
    return os.path.realpath(path)


def _stat(path: str) -> os.stat_result | None:
    """``os.stat(path)``; ``None`` when nothing is there. Other failures (a directory on the path made unreadable)
    are raised: the caller cannot tell. (Never an open and close of a database's files: closing any descriptor of
    a file drops every POSIX lock the process holds on it, SQLite's included.)

    Example:
        >>> _stat("/no/such/file") is None, _file_id(_stat("/")) == _file_id(_stat("/"))
        (True, True)
    """
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _file_id(stat: os.stat_result | None) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of a :func:`_stat`: which file it is (``None``: none).

    Example:
        >>> _file_id(None)
    """
    return None if stat is None else (stat.st_dev, stat.st_ino)


# The smallest page SQLite uses: a database file with content is never shorter (page 1 holds its header)
_SMALLEST_PAGE: Final = 512


def _is_file_database(url: URL) -> bool:
    """Whether a SQLite URL names a file (not ``:memory:``, an empty path, or a ``mode=memory`` URI)."""
    database = url.database or ""
    return database not in ("", ":memory:") and url.query.get("mode") != "memory" and "mode=memory" not in database


# What SQLAlchemy's asyncpg dialect takes from a URL's query itself; every other key goes to asyncpg.connect
_ASYNCPG_DIALECT_KEYS: Final = frozenset({"prepared_statement_cache_size", "prepared_statement_name_func",
                                          "async_creator_fn"})


def _check_asyncpg_query(url: URL) -> None:
    """Refuse a URL option asyncpg does not know, naming it. Passed on, it failed every connect with a bare
    ``TypeError: connect() got an unexpected keyword argument 'create'``, at the first operation.

    Example:
        >>> _check_asyncpg_query(make_url("postgresql+asyncpg://app@db/app?ssl=disable&command_timeout=5"))
        >>> _check_asyncpg_query(make_url("postgresql+asyncpg://app@db/app?create=true"))
        Traceback (most recent call last):
        ...
        ValueError: URL option 'create' of postgresql+asyncpg://app@db/app?create=true: asyncpg takes no such \
option (SQLStream's own options, such as create, are keyword arguments of open_stream or SQLStream.from_url)
    """
    import asyncpg  # (create_async_engine imports it for such a URL anyway)

    unknown = sorted(set(url.query) - set(inspect.signature(asyncpg.connect).parameters) - _ASYNCPG_DIALECT_KEYS)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise ValueError(f"URL option{'s' if len(unknown) > 1 else ''} {names} of {_shown(url)}: asyncpg takes no "
                         "such option (SQLStream's own options, such as create, are keyword arguments of open_stream "
                         "or SQLStream.from_url)")


def _shown(url: URL) -> str:
    """``url`` for a message: SQLAlchemy hides only ``user:password@``; a query's ``?password=`` (asyncpg reads it)
    is masked too."""
    return mask_passwords(url.render_as_string(hide_password=True))


class SQLStream(FieldUpdates):
    """An ``IStream`` in a SQL database; build it with :meth:`from_url` or from an ``AsyncEngine``.

    ``create`` applies the migrations on first use (default: yes for SQLite, no for PostgreSQL, where
    ``iii-streams migrate URL`` is the deliberate step). ``max_pending`` (default 100,000) bounds the writes the
    store takes at once, queued or running: one more is refused at once with
    :class:`~iii_streams.errors.StreamBackendError` (``applied`` False), so a burst past it never slows the writes
    taken; a write whose caller left counts until its batch is done with it.

    A pool that runs out makes callers wait, never fail: an operation waits for a pooled connection as long as its
    own time limit allows (then it fails with its usual ``StreamTimeoutError``; a write so withdrawn was not
    applied), not the pool's ``pool_timeout``; connections are handed out in arrival order, write batches, gets and
    other reads in turn. :meth:`aclose` fails the reads waiting there at once; the write batches under way wait on
    for a connection within the close's :data:`MIGRATION_CLOSE_WAIT_S`, then fail unapplied. A store made on a given
    engine takes its queue pool's overflow as SQLAlchemy's default (10).

    Example:
        >>> SQLStream.from_url("sqlite:///streams.db").dialect
        'sqlite'
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        create: bool | None = None,
        publish_events: bool = True,
        owns_engine: bool = False,
        watch_queue_size: int = 10_000,
        timeout: float | None = DEFAULT_TIMEOUT,
        report_watch_gaps: bool = False,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.timeout = check_timeout(timeout)
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"SQLStream: max_pending must be a positive integer, got {max_pending!r}")
        #: writes the store takes at once (queued or running, over all its queues); past it a write is refused at
        #: once (see :meth:`_write`)
        self.max_pending = max_pending
        self._in_flight = 0  # callers in _write
        # writes whose callers left while a queue or a batch still held them (at least: recounted near the bound,
        # see _full), and the writes in batches running now
        self._left_held = 0
        self._running = 0
        self._recounted_at = -math.inf  # time.monotonic() of the last recount
        if not isinstance(report_watch_gaps, bool):
            raise ValueError(f"SQLStream: report_watch_gaps must be True or False, got {report_watch_gaps!r}")
        #: PostgreSQL: a watch whose LISTEN connection was replaced raises StreamGapError once (else only a warning)
        self.report_watch_gaps = report_watch_gaps
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"SQLStream supports SQLite and PostgreSQL, not {self.dialect!r}")
        self.publish_events = publish_events
        self._pg = self.dialect == "postgresql"
        self._create = (not self._pg) if create is None else create
        self._owns_engine = owns_engine
        self._connections = track_connections(engine) if owns_engine else weakref.WeakSet()
        self._reader = engine.execution_options(
            **({"isolation_level": "AUTOCOMMIT"} if self._pg else {_SQLITE_AUTOCOMMIT: True}))
        self._watch_queue_size = check_queue_size(watch_queue_size, "SQLStream: watch_queue_size")
        self._hub = EventHub(watch_queue_size)
        self._listener: _Listener | None = None  # PostgreSQL: the LISTEN connection its watchers share
        # failed reconnects of this store's watchers, logged at most every 10 s with their count: a warning per
        # attempt was about N/2 lines a second for N watchers while the database stayed away
        self._watch_retries = LossLog(_log_watch_retries, _WATCH_RETRY_LOG_S)
        database = engine.url.database
        in_memory = not self._pg and (database in (None, "", ":memory:") or "mode=memory" in str(engine.url))
        # SQLite: one writer at a time anyway; an in-memory database is a single shared connection, so reads
        # must queue too or they would run inside (and end) another task's transaction (one lock per engine)
        self._write_lock: asyncio.Lock | None = None
        self._opens: _PoolOpens | None = None  # SQLite
        if not self._pg:
            self._write_lock, self._opens = _install_sqlite_hooks(engine, file_backed=not in_memory)
            # a caller's engine too: its failed connects are this store's errors, raised on the caller's loop, and
            # its connections cut and closed at once are this store's files left locked
            guard_aiosqlite(engine)
        elif engine.dialect.driver == "asyncpg":
            _install_postgresql_hooks(engine)
        close_stranded_connects(engine)  # (after the store's hooks: a failure in them closes the connection too)
        self._read_lock: asyncio.Lock | None = self._write_lock if in_memory else None
        self._in_memory = in_memory
        # SQLite: the file's absolute path, and its (st_dev, st_ino) once the store opened it (see _check_file)
        self._file = _file_path(engine.url) if not self._pg and not in_memory else None
        self._file_id: tuple[int, int] | None = None
        self._file_had_page = False  # the file was seen holding a page at least (see _file_problem)
        # its -wal file's (st_dev, st_ino), and the engine's _PoolOpens.reopened when it was noted (see
        # _note_wal_after_commit; read by _defuse_wal)
        self._wal_id: tuple[int, int] | None = None
        self._wal_reopened = -1
        # the file was found deleted, replaced or truncated: every operation fails with it
        self._lost: StreamFileLostError | None = None
        self._lost_file = False  # … and that was the database file itself (deleted, renamed or replaced)
        self._wal_defused = False  # … and _defuse_wal ran for it
        self._ready = False
        self._ready_lock = asyncio.Lock()
        # the first connect (a store without create) or the migration (with create), while it runs (see _open)
        self._opening: _Opening | None = None
        # operations in _connection (from their entry to the return of their connection), which a close lets end
        # before its dispose; set when they all ended while a close waits for them (_let_operations_end)
        self._operations = 0
        self._operations_ended: asyncio.Future[None] | None = None
        self._writes_let_go: asyncio.Future[None] | None = None  # write batches a close let go (held, not lost)
        # set by a close just before its dispose: operations reaching _connection from then on are refused
        self._shut = False
        # item key -> its value as this process last committed it (a longer one is neither remembered nor compared
        # by the database); an item another process wrote goes back to the locking transaction for a while
        self._known: KnownTexts[bytes] = KnownTexts()
        self.swap_misses = 0  # single-statement writes that found the item changed by another process
        # PostgreSQL: writes of several items' batches handed to their items' own queues after a lock failure
        self.lock_requeues = 0
        # PostgreSQL: writes handed from a shared batch to their items' own queues because a caller of their item was
        # in a hurry (``_hurried``): its own write and every other write of its item in the batch
        self.hurry_requeues = 0
        self._shared_value_size = 0  # PostgreSQL: the mean value of the last shared transaction (characters)
        # PostgreSQL: item key -> its writes in the shared queue (or its running batch); later ones go there too
        self._shared: dict[bytes, int] = {}
        self._slow: dict[bytes, float] = {}  # item key -> loop time until which its writes skip the shared queue
        self._writes: KeyedBatcher[bytes, _Write, tuple[Any, Any]] = KeyedBatcher(
            self._write_batch, name="SQLStream writes", max_batch=_MAX_BATCH, max_pending=max_pending)
        self._reads: ReadCoalescer[bytes, bytes | str | None] = ReadCoalescer(
            self._read_values, name="SQLStream reads", max_batch=_MAX_READ_BATCH, size=stored_size)
        self._close_once: CloseOnce = CloseOnce()
        # the FIFO in front of the pool (see _checked_out); an engine given to the store is taken as having
        # SQLAlchemy's default overflow (from_url knows the one it was made with)
        self._gate = _pool_gate(engine.sync_engine.pool, _SQLALCHEMY_MAX_OVERFLOW)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLStream:
        """Open ``sqlite+aiosqlite:///path.db`` (``sqlite://`` works too; no path = in memory) or
        ``postgresql+asyncpg://user@host/db``. ``create``, ``publish_events``, ``watch_queue_size``, ``timeout``,
        ``report_watch_gaps`` and ``max_pending`` are for this class; other options go to ``create_async_engine``
        (e.g. ``pool_size``).

        asyncpg connects with TLS whenever the server offers it (``sslmode=prefer``), on 127.0.0.1 too. For a
        server on the same host or a trusted private network, ``?ssl=disable`` in the URL turns it off (measured
        on 127.0.0.1: about 15 % less client CPU per operation); it stays on unless asked.

        Example:
            >>> SQLStream.from_url("postgresql://app@db/app").dialect
            'postgresql'
        """
        own = {k: options.pop(k) for k in ("create", "publish_events", "watch_queue_size", "timeout",
                                           "report_watch_gaps", "max_pending") if k in options}
        sa_url = make_url(normalize_url(url))
        if sa_url.get_driver_name() == "asyncpg":
            _check_asyncpg_query(sa_url)
        if sa_url.get_backend_name() == "sqlite":
            _sqlite_uri(sa_url)  # a bad uri= named here, before create_async_engine refuses it in other words
            options.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_S)  # (sqlite3's busy wait)
            if _is_file_database(sa_url):
                # SQLAlchemy 2.0.0 (our floor) gave aiosqlite file databases a NullPool: a new connection, its PRAGMAs
                # and functions per checkout (14 trips to aiosqlite's thread per lone update instead of 4). Later 2.x
                # pool them; ask for that on every version our floor allows.
                options.setdefault("poolclass", AsyncAdaptedQueuePool)
            quiet_reset = "pool_reset_on_return" not in options
            if quiet_reset:
                options["pool_reset_on_return"] = None  # _rollback_if_open does it, when there is something to undo
        engine = create_async_engine(sa_url, **options)
        if sa_url.get_backend_name() == "sqlite" and quiet_reset:
            event.listen(engine.sync_engine, "reset", _rollback_if_open)
        store = cls(engine, owns_engine=True, **own)
        overflow = options.get("max_overflow", _SQLALCHEMY_MAX_OVERFLOW)
        if isinstance(overflow, int) and not isinstance(overflow, bool):
            store._gate = _pool_gate(engine.sync_engine.pool, overflow)
        return store

    # -- plumbing ---------------------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        if not self._create:
            if not self._ready:
                if self._close_once.closing:
                    raise StreamClosedError("SQLStream is closed")
                # its callers go on once it connected, a close meanwhile too (their writes commit, as a migration's)
                await self._first_connect()
                self._note_file()
                self._ready = True
            return
        async with self._ready_lock:
            if self._ready:
                return
            if self._close_once.closing:
                raise StreamClosedError("SQLStream is closed")
            await self._migrate()
            self._note_file()
            self._ready = True

    async def _migrate(self) -> None:
        """Run the migration of a store with ``create`` (see :meth:`_open`). A cancel of this caller (its deadline)
        stops the migration and waits for its end, as when it ran in the caller's own task; the callers queued for
        ``_ready_lock`` behind it then fail with StreamClosedError at the close's give-up, not after their own time
        limits on a server that never answers."""
        await self._open(self._migrate_once, stops_with_caller=True)

    async def _migrate_once(self) -> None:
        async with self._write_lock if self._write_lock is not None else contextlib.nullcontext():
            await migrate_with(self.engine)

    async def _first_connect(self) -> None:
        """A store without ``create``: one connect before its first operations, which all wait for that one and fail
        with its error (see :meth:`_open`). Before, a burst of first operations rushed the pool together; the
        connects past its size failed, and their failures woke none of the callers queued for a pooled connection,
        which waited the pool's 30 s and got "pool exhausted" (49 of 64 on a file that cannot be opened). Shared, not
        one after another: each caller would have waited for all the connects before its own (k times the driver's
        timeout). A caller that gives up (its deadline, a cancel) leaves the connect to the others; a failed one is
        tried again by the next operation."""
        await self._open(self._connect_once, stops_with_caller=False)

    async def _connect_once(self) -> None:
        async with self._write_lock if self._write_lock is not None else contextlib.nullcontext():
            with closing_stranded(self.engine):
                async with self._reader.connect():
                    pass

    async def _open(self, step: Callable[[], Coroutine[Any, Any, None]], *, stops_with_caller: bool) -> None:
        """Wait for the store's opening under way, or start ``step`` as one (:class:`_Opening`), in a task a close
        can wait for with a bound (:data:`MIGRATION_CLOSE_WAIT_S`) and then give up on: its callers then fail with
        StreamClosedError. ``stops_with_caller``: a cancel of this caller cancels it and waits for its end (the
        migration, run by the one holder of ``_ready_lock``); else it is left to its other callers."""
        opening = self._opening
        if opening is None:
            left = asyncio.get_running_loop().create_future()
            started = opening = self._opening = _Opening(asyncio.ensure_future(self._run_opening(step, left)), left)
            started.task.add_done_callback(lambda _task: self._opening_ended(started))
        task = opening.task
        opening.waiting += 1
        try:
            await asyncio.wait((task, opening.left), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if stops_with_caller:
                task.cancel()
                await asyncio.wait((task,))
            raise
        finally:
            opening.waiting -= 1
        if not task.done() or task.cancelled():
            # the store's close gave up on it (left running on SQLite, cancelled on PostgreSQL): not a cancel of
            # this caller, which would have raised above
            raise StreamClosedError("SQLStream is closed")
        task.result()  # its failure is its callers'

    async def _run_opening(self, step: Callable[[], Coroutine[Any, Any, None]], left: asyncio.Future[None]) -> None:
        pool = self.engine.sync_engine.pool  # (a close's dispose replaces it with a new one)
        try:
            await step()
        finally:
            if left.done() and not self._cancels_openings():
                # a close gave up on this opening and left it to end (SQLite)
                await self._close_let_go(pool)

    async def _close_let_go(self, *pools: Pool) -> None:
        """Close the connections given back to ``pools`` after the store's close let them go (its dispose replaced
        the engine's pool, or gave up waiting for their holder): closed here, not left open to the garbage collector
        (with an aiosqlite thread each)."""
        if self._owns_engine:
            for pool in dict.fromkeys(pools):
                with contextlib.suppress(Exception):
                    await greenlet_spawn(pool.dispose)

    def _opening_ended(self, opening: _Opening) -> None:
        if self._opening is opening:
            self._opening = None  # a failed first connect is tried again by the next operation
        task = opening.task
        _OPENINGS_LEFT.discard(task)
        # retrieved: a failure its callers all left (or were told the close instead) is not "never retrieved"
        if not task.cancelled() and (exc := task.exception()) is not None and opening.left.done():
            log.debug("an opening of %s a close gave up on failed: %r", self._database(), exc)

    def _cancels_openings(self) -> bool:
        """Whether a close may cancel an opening it gave up on: asyncpg's, whose connect and queries end at a cancel;
        not aiosqlite's, whose thread goes on (see :data:`MIGRATION_CLOSE_WAIT_S`)."""
        return self._pg and self.engine.dialect.driver == "asyncpg"

    async def prepare(self, *, timeout: float | None = None) -> None:
        """Make the store ready now instead of at its first operation, so a store that cannot work fails here:
        connect once and apply the migrations (``create``), or check the schema is at this version's revision.

        Each failure is one line naming the database (a SQLite path, a PostgreSQL URL with its password masked):
        :class:`~iii_streams.errors.StreamUnavailableError` when it cannot be reached or does not exist (with a
        hint for a relative SQLite path whose directory is missing), :class:`SchemaMissingError` when the schema
        is missing or older (``iii-streams migrate URL`` names the URL) or not what its version table says (the
        stream table or its unique key on ``item_key`` gone, the version row gone from under the table, several
        version rows: :func:`~iii_streams.migrate.schema_problem`, its fix in the message),
        :class:`StreamTimeoutError` past ``timeout`` (default: the store's). With ``create`` the migration checks
        the same, failing with :class:`~iii_streams.errors.StreamBackendError`.

        Example:
            >>> import asyncio
            >>> async def demo() -> None:
            ...     async with SQLStream.from_url("sqlite+aiosqlite:///no/such/dir/s.db") as s:
            ...         try:
            ...             await s.prepare()
            ...         except StreamError as exc:
            ...             print(type(exc).__name__, *str(exc).split("; "), sep="|")
            >>> asyncio.run(demo())  # doctest: +NORMALIZE_WHITESPACE
            StreamUnavailableError|cannot open SQLite database no/such/dir/s.db: unable to open database file
                (directory no/such/dir does not exist|a relative path: use four slashes for an absolute one,
                sqlite+aiosqlite:////no/such/dir/s.db)
        """
        limit = self._limit(timeout)
        bound = asyncio.timeout(limit)
        try:
            async with bound:
                locked = await self._sqlite_locked(limit)
                if locked is None:
                    await self._prepare()
                    if self._create:
                        return  # migrated just now (or earlier by this store): at the head revision
                    async with self._read() as conn:
                        revision, problem = await conn.run_sync(schema_state, self._migrate_hint())
        except (StreamClosedError, SchemaMissingError):
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and bound.expired():
                assert limit is not None  # (no bound never expires)
                # SQLite's own wait for a lock (busy_timeout) outlasts the bound: a lock the check missed (taken since)
                suspect = "" if self._pg else " (locked by another writer?)"
                raise StreamTimeoutError(
                    f"cannot open {self._database()}: no answer within {limit:g} s{suspect}") from exc
            # any other TimeoutError is not this bound's: the driver's own (asyncpg's connect timeout, with no
            # message) or the wait for this process's other migration, which names itself
            kind = type(self._wrap_error(exc, "") or StreamBackendError())
            if kind is StreamTimeoutError:  # SQLite locked by another writer all along; a driver's own timeout
                kind = StreamUnavailableError
            reason = error_line(exc)
            if isinstance(exc, TimeoutError) and not str(exc):
                reason = DRIVER_TIMEOUT
            raise kind(f"cannot open {self._database()}: {reason}{self._path_hint()}") from exc
        if locked is not None:
            raise StreamUnavailableError(f"cannot open {self._database()}: locked by another process or writer, "
                                         f"no answer within {locked:g} s (database is locked)")
        if problem is not None:
            raise SchemaMissingError(f"{self._database()}: {problem}")
        if schema_behind(revision):
            state = "has no stream schema" if revision is None else (
                f"has the stream schema at revision {revision}, older than this version's {head_revision()}")
            raise SchemaMissingError(f"{self._database()} {state}: {self._migrate_hint()}")

    async def _sqlite_locked(self, limit: float | None) -> float | None:
        """The prepare's bound when the SQLite file stayed locked by another connection (another process's writer)
        nearly all of it (``limit``, or SQLite's 30 s), else ``None``. Checked first: the store's open waited for
        such a lock in a driver thread, past the prepare's bound and deaf to its cancel (SQLite's 30 s), and then
        said only "no answer within N s"."""
        path = self.engine.url.database
        if self._pg or not path or not _is_file_database(self.engine.url):
            return None
        bound = limit if limit is not None else SQLITE_BUSY_S
        # ends a little before the bound, so its answer, not the bound's cut, is the prepare's; in a thread whose wait
        # (SQLite's busy timeout) ends by itself whatever cancels this caller
        wait_s = bound - min(bound * 0.1, 0.5)
        return bound if await asyncio.to_thread(_sqlite_lock_held, path, self._create, wait_s) else None

    def _migrate_hint(self) -> str:
        """How to bring this store's database to the schema, as a command that works when pasted into a shell.

        Example:
            >>> SQLStream.from_url("sqlite+aiosqlite:////srv/my data/s.db")._migrate_hint()
            "run `iii-streams migrate 'sqlite+aiosqlite:////srv/my data/s.db'`"
        """
        if not self._pg and not _is_file_database(self.engine.url):
            # another process's connection would be another, empty, in-memory database
            return "an in-memory database is new in each store: open it with create=True"
        shown = _shown(self.engine.url)
        # a password in the query is masked too: the reader puts it back as for one in user:password@
        hidden = shown != self.engine.url.render_as_string(hide_password=False)
        # quoted when the shell would split or expand it (a path with a space was two arguments); a masked
        # password's *** alone is left as it is: a glob with a / in it matches nothing and stays as written
        if shlex.quote(shown.replace("*", "")) != shown.replace("*", ""):
            shown = shlex.quote(shown)
        masked = " (with the real password in place of ***)" if hidden else ""
        return f"run `iii-streams migrate {shown}`{masked}"

    def _database(self) -> str:
        """The database in words: ``SQLite database PATH`` or the URL, password masked."""
        if self._pg:
            return f"PostgreSQL database {_shown(self.engine.url)}"
        path = self.engine.url.database
        return f"SQLite database {path}" if _is_file_database(self.engine.url) else "in-memory SQLite database"

    def _named(self) -> str:
        """`` (<the database>)``, with :meth:`_path_hint`'s hint in the parentheses: the end of an unreachable
        database's message, which the driver's text alone often leaves unnamed ("unable to open database file",
        "Connect call failed")."""
        hint = self._path_hint()
        return f" ({self._database()}; {hint[2:-1]})" if hint else f" ({self._database()})"

    def _path_hint(self) -> str:
        return "" if self._pg else missing_directory_hint(self.engine.url)

    def _note_file(self) -> None:
        """Note which file the store opened (SQLite), the one its pooled connections keep open; one already gone
        fails the store (:meth:`_check_file`): left unnoted, the store was never checked again."""
        path = self._file
        if path is None or self._file_id is not None or self._lost is not None:
            return
        try:
            stat = _stat(path)
        except OSError:
            return  # cannot be told now (a directory on the path made unreadable): noted at the first check
        if stat is None:
            self._lose_file(path)
            return
        self._file_id = _file_id(stat)
        self._file_had_page = stat.st_size >= _SMALLEST_PAGE
        with contextlib.suppress(OSError):  # (cannot be told now: noted after the first commit)
            self._note_wal(path, _stat(path + "-wal"))

    def _check_file(self, committed: bool = False) -> None:
        """:class:`StreamBackendError` naming the path once the SQLite file the store opened is no longer at it or was
        truncated; the store stays failed.

        Why: a file deleted (or replaced by a rename) under an open store stays open in its pooled connections, which
        went on reading and writing it: every write answered "ok" and all of them were lost with the file; a
        truncated file lost the rest. An ``os.stat`` at each connection taken, and two (the file, its ``-wal``, the
        latter only noted: :meth:`_note_wal_after_commit`) after each write's commit; :meth:`_write` tells each
        write its outcome (``applied``)."""
        if self._file is None:
            return
        if self._lost is None:
            try:
                self._file_problem(self._file, committed)
            except OSError:
                return  # cannot be told (a directory made unreadable): the open connections do not care
            if self._lost is None:
                return
        raise self._lost.again()

    def _file_problem(self, path: str, committed: bool) -> None:
        """Set :attr:`_lost` when the file at ``path`` is not the one noted or was truncated (``committed``: note its
        ``-wal`` file too); ``OSError`` when that cannot be told."""
        stat = _stat(path)
        if self._file_id is None and stat is not None:
            self._file_id = _file_id(stat)  # (not noted at the opening: see _note_file)
        if _file_id(stat) != self._file_id or stat is None:
            self._lose_file(path)
            return
        if stat.st_size >= _SMALLEST_PAGE:
            self._file_had_page = True
        elif self._file_had_page:
            # (the inode kept: SQLite reads zeros, "database disk image is malformed", and its WAL still commits)
            self._lost = StreamFileLostError(
                f"SQLStream: the database file {path} was truncated while the store was open ({stat.st_size} "
                f"bytes now, shorter than one page: its contents were destroyed)",
                "this write was committed to its -wal file, but the database it belongs to is damaged",
                "restore the file from a backup and reopen the store", None)
            return
        if committed:
            self._note_wal_after_commit(path)

    def _lose_file(self, path: str) -> None:
        """The database file the store opened is no longer at ``path``: every operation fails from now on."""
        self._lost_file = True
        self._lost = StreamFileLostError(
            f"SQLStream: the database file {path} was deleted or replaced while the store was open (the file the "
            "store opened is no longer at that path: deleted, renamed or replaced; its connections still have it "
            "open)",
            f"this write was committed to the file that was at {path} when the store opened it, which is no longer "
            "there",
            f"reopen the store (with an engine you passed, dispose of it first: its pooled connections still have the "
            f"old file open), but first remove {path}-wal and {path}-shm if they are there: they belong to the "
            "file the store opened, and SQLite would apply their writes over a file now at that path", True)

    def _note_wal(self, path: str, wal: os.stat_result | None) -> None:
        """Note the ``-wal`` file (``wal``, its stat) the engine's connections have open now."""
        if wal is None or self._opens is None:
            return
        self._wal_id, self._wal_reopened = _file_id(wal), self._opens.reopened

    def _note_wal_after_commit(self, path: str) -> None:
        """After a commit: note the ``-wal`` file beside ``path`` the connections have now (for :meth:`_defuse_wal`).

        A ``-wal`` gone or another than the one noted is never taken for a loss: SQLite itself deletes it as the last
        connection closes and makes another at the next open, which a pool without kept connections (``NullPool``,
        SQLAlchemy 2.0.0's for a caller's aiosqlite engine) or a short ``pool_recycle`` does all the time, and a
        connection's open or close cannot be seen from here exactly (failing on it failed healthy stores for good).
        A ``-wal`` deleted by hand under an open store is not detected: its writes since the last checkpoint live in
        the store's connections only, and the store's close moves them into the database file."""
        self._note_wal(path, _stat(path + "-wal"))

    async def _check_file_now(self, *, locked: bool, committed: bool = False) -> None:
        """:meth:`_check_file`; the first time it finds the database file gone, :meth:`_defuse_wal` first
        (``locked``: the caller holds the write lock)."""
        if self._file is None:
            return
        try:
            self._check_file(committed)
        except StreamFileLostError:
            if not self._lost_file or self._wal_defused:
                raise
            await self._defuse_wal(locked)
            assert self._lost is not None
            raise self._lost.again() from None

    async def _defuse_wal(self, locked: bool) -> None:
        """The database file was found deleted, renamed or replaced: move the writes of its ``-wal`` file into the
        file the store opened (a ``TRUNCATE`` checkpoint on one of the store's pooled connections, which have both
        open), which leaves the ``-wal`` at the path empty, and say so in the store's error (:attr:`_lost`).

        Why: SQLite names a database's ``-wal`` and ``-shm`` by the path, and leaves them (with their writes) when
        the file it opened was moved; the next open of the path applied them over the file put there (a restored
        file lost its rows). Done only when the ``-wal`` at the path is the one noted (it is the store's) and an
        idle pooled connection is there to run it: a new connection would open the file now at the path with the
        old ``-wal``. Nothing is deleted: a process that opened the new file meanwhile may have both open. Bounded by
        a 1 s busy wait; once per store."""
        self._wal_defused = True
        path, opens, lost = self._file, self._opens, self._lost
        if path is None or opens is None or lost is None:
            return
        wal = path + "-wal"
        try:
            noted = self._wal_id if self._wal_reopened == opens.reopened else None
            ours = noted is not None and _file_id(_stat(wal)) == noted
            leftover = ours or _stat(wal) is not None or _stat(path + "-shm") is not None
        except OSError:
            ours = leftover = True
        pool = self.engine.sync_engine.pool
        idle = getattr(pool, "checkedin", None)
        done = False
        if ours and callable(idle) and idle() > 0:
            made = opens.made
            try:
                async with contextlib.nullcontext() if locked or self._write_lock is None else self._write_lock:
                    with closing_stranded(self.engine):
                        async with self._reader.connect() as conn:
                            if opens.made == made:  # (one of the pool's: none was made for it)
                                await conn.exec_driver_sql("PRAGMA busy_timeout = 1000")
                                try:
                                    busy = (await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")).one()[0]
                                finally:
                                    await conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_S * 1000)}")
                                stat = _stat(wal)
                                done = busy == 0 and stat is not None and _file_id(stat) == noted and not stat.st_size
            except Exception as exc:  # (the store already failed: this only decides what its error says)
                log.warning("SQLStream: could not move the writes of %s into the file the store opened: %s", wal,
                            error_line(exc))
        if done:
            advice = (f"reopen the store (with an engine you passed, dispose of it first: its pooled connections "
                      f"still have the old file open); the writes of {wal} were moved into the file the store "
                      "opened and that file emptied, so SQLite applies nothing of it to a file now at the path")
        elif leftover:
            advice = lost.advice
            log.warning("SQLStream: the database file %s was deleted or replaced while the store was open: remove "
                        "%s and %s before opening the path again (they belong to the file the store opened, and "
                        "SQLite would apply their writes over a file now at that path)", path, wal, path + "-shm")
        else:
            advice = "reopen the store"
        self._lost = StreamFileLostError(lost.problem, lost.committed, advice, lost.applied_if_committed)

    def _read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self._connection(self._reader.connect, self._read_lock)

    def _transaction(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self._connection(self.engine.begin, self._write_lock)

    async def _read_again(self, run: Callable[[AsyncConnection], Coroutine[Any, Any, _T]]) -> _T:
        """``run`` on a connection of :meth:`_read`, and once more on a new one when PostgreSQL's connection turned
        out lost on its first use (a server that ended it an instant before: the checkout's checks did not see it
        yet). A read changes nothing, so reading again is safe; without it the first read after a
        ``pg_terminate_backend`` or a restart failed with "its connection was lost", the database being up."""
        try:
            async with self._read() as conn:
                return await run(conn)
        except Exception as exc:
            if not (self._pg and _lost_connection(exc)) or self._shut:
                raise
            log.debug("SQLStream: a read's connection was lost, reading again: %s", error_line(exc))
        async with self._read() as conn:
            return await run(conn)

    @contextlib.asynccontextmanager
    async def _locking_transaction(self) -> AsyncIterator[AsyncConnection]:
        """The connection of one locking transaction of writes, committed by the caller (SQLite: with a ``COMMIT``
        statement through :func:`_outlasting_cuts`; PostgreSQL: at the end, by SQLAlchemy).

        SQLite's is begun (``BEGIN IMMEDIATE``) and ended on the driver's connection, each in one trip to its thread,
        beside SQLAlchemy, whose connection stays in autocommit. Why: a commit cut short by the store's timeout is
        waited for, so that a write it applied is known; SQLAlchemy's own commit, cut short, invalidated the
        connection mid-commit, and one left running in a task of its own would change the transaction state of a
        connection the pool had already taken back. Rolled back here unless committed."""
        if self._pg:
            async with self._transaction() as conn:
                yield conn
            return
        async with self._connection(self._reader.connect, self._write_lock) as conn:
            try:
                await self._sqlite(conn, "BEGIN IMMEDIATE", ())
                yield conn
            except BaseException as exc:
                with contextlib.suppress(Exception):  # (a connection already let go after its error: nothing to undo)
                    if not _interrupted(exc):
                        await self._roll_back(conn)
                    elif self._in_memory:  # (its one connection is kept: see _install_sqlite_hooks)
                        driver: Any = (await conn.get_raw_connection()).driver_connection
                        await driver.rollback()  # after the statement cut short, which aiosqlite still runs
                    else:
                        # a statement cut short may still run in the driver's thread (BEGIN IMMEDIATE in SQLite's
                        # busy wait, up to 30 s): given back, its connection held a transaction the next operation
                        # could not begin in ("cannot start a transaction within a transaction"); it is let go
                        await conn.invalidate()
                raise

    async def _sqlite(self, conn: AsyncConnection, sql: str, params: Sequence[Any] | Mapping[str, Any], *,
                      fetch: bool = False, many: bool = False) -> Any:
        """:func:`_sqlite_run` on this store's connection ``conn``."""
        return await _sqlite_run(conn, sql, params, fetch=fetch, in_memory=self._in_memory, many=many)

    async def _roll_back(self, conn: AsyncConnection) -> None:
        """Roll back the transaction open on ``conn`` (SQLite: one begun by :meth:`_locking_transaction`, if any)."""
        if self._pg:
            await conn.rollback()
            return
        driver: Any = (await conn.get_raw_connection()).driver_connection
        if driver.in_transaction:
            await self._sqlite(conn, "ROLLBACK", ())

    @contextlib.asynccontextmanager
    async def _connection(
        self,
        open_connection: Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]],
        lock: asyncio.Lock | None,
    ) -> AsyncIterator[AsyncConnection]:
        """A connection for one operation. Counted from here (an opening it waits for included) until the
        connection is given back, so a close lets it end before disposing of the engine (:meth:`_close_all`); refused
        with StreamClosedError once the close's dispose began, which it would outlive holding a connection."""
        self._operations += 1
        try:
            opened = False  # it waited for the store's opening: a close meanwhile lets it go on (see _end_opening)
            if not self._ready:
                await self._prepare()
                opened = True
            # lock before connecting: in-memory SQLite is one shared connection (see __init__)
            async with lock if lock is not None else contextlib.nullcontext():
                if self._shut:  # (checked with no await before the connect: the close's dispose is after it)
                    raise StreamClosedError("SQLStream is closed")
                locked = lock is not None and lock is self._write_lock
                await self._check_file_now(locked=locked)
                pool = self.engine.sync_engine.pool
                try:
                    async with self._checked_out(open_connection, opened) as conn:
                        yield conn
                    if locked:
                        await self._check_file_now(locked=True, committed=True)  # (its outcome per write: _write)
                except Exception as exc:
                    if self._shut and not isinstance(exc, StreamError):
                        raise StreamClosedError("SQLStream is closed") from exc  # (its connection cut by the close)
                    if isinstance(exc, OperationalError | ProgrammingError):
                        self._explain_missing_table(exc)
                    raise
                finally:
                    if self._shut:
                        # the close gave up waiting for this operation: its connection went back to a pool that
                        # close already disposed of (or to the one its dispose made)
                        await self._close_let_go(pool, self.engine.sync_engine.pool)
        finally:
            self._operations -= 1
            ended = self._operations_ended
            if not self._operations and ended is not None and not ended.done():
                ended.set_result(None)

    @contextlib.asynccontextmanager
    async def _checked_out(
        self, open_connection: Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]],
        after_close: bool = False,
    ) -> AsyncIterator[AsyncConnection]:
        """``open_connection()`` through the store's gate (:class:`_PoolGate`): a pool that runs out makes callers
        wait, in arrival order, never fail. A caller's wait is bounded by its own time limit (which cancels it: its
        usual timeout error), not by the pool's ``pool_timeout``, which a slot's checkout outlasts only when
        connections are held outside the store (it is tried again, keeping its place). A batch's wait (the writes in
        ``_BATCH_WRITES``) ends with :class:`_Deserted`, nothing of it run, once none of its callers still waits.
        Once the store's close began (:meth:`_PoolGate.close`) it fails with its StreamClosedError, nothing run,
        unless ``after_close`` (see :meth:`_PoolGate.acquire`). Once the close disposed of the engine, none opens a
        connection (:func:`_closed_after_dispose`)."""
        gate = self._gate
        if gate is None:
            if self._shut:
                raise _closed_after_dispose()
            connection = open_connection()
            with closing_stranded(self.engine):
                conn = await connection.__aenter__()
            async with contextlib.AsyncExitStack() as stack:
                stack.push_async_exit(connection)
                yield conn
            return
        batch = _BATCH_WRITES.get()
        task = asyncio.current_task()
        if batch is not None and any(w.handed for w in batch.writes):
            after_close = True  # a running batch's writes handed on: a close lets them run, as it lets that batch
        if batch is not None:
            if not batch.waited_for():
                raise _Deserted("no caller waits for this batch's writes any more")
            batch.task = task
        held = retried = False
        lane = _WRITE_LANE if batch is not None else _LANE.get()
        try:
            try:
                await gate.acquire(lane, after_close=after_close)
                held = True
                if task is not None:
                    gate.checkouts[task] = (lane, after_close)
                while True:
                    if self._shut:
                        raise _closed_after_dispose()
                    attempt = asyncio.get_running_loop().time()
                    try:
                        connection = open_connection()
                        with closing_stranded(self.engine):
                            conn = await connection.__aenter__()
                        break
                    except PoolTimeoutError:
                        retried = True  # (connections held outside the store: still a wait for the pool)
                        if gate.closed is not None and gate.refuses(lane, after_close):  # (it waits no more)
                            raise gate.closed() from None
                        pause = _POOL_RETRY_PAUSE_S - (asyncio.get_running_loop().time() - attempt)
                        if pause > 0:  # (a pool_timeout of 0 would spin)
                            await asyncio.sleep(pause)
            except asyncio.CancelledError:
                if batch is not None and batch.deserted and task is not None and task.uncancel() == 0:
                    raise _Deserted("no caller waits for this batch's writes any more") from None
                if task in gate.cut:
                    gate.cut.discard(task)
                    if task is not None and task.uncancel() == 0 and gate.closed is not None:
                        raise gate.closed() from None
                if task is not None and (not held or retried or self._pool_full()):  # (not a slow connect's)
                    gate.gave_up[task] = asyncio.get_running_loop().time()  # (its timeout names the pool)
                raise
            finally:
                gate.checkouts.pop(task, None)  # type: ignore[arg-type]
                if batch is not None:
                    batch.task = None  # from here on its callers leaving cuts nothing: the batch runs
            async with contextlib.AsyncExitStack() as stack:
                stack.push_async_exit(connection)
                if gate.closed is not None and gate.refuses(lane, after_close):
                    # its checkout outlasted the close's start (connections held outside the store): nothing of it
                    # runs after the close began (but the write batches it lets drain)
                    raise gate.closed()
                yield conn
        finally:
            if held:
                gate.release()

    def _explain_missing_table(self, exc: Exception) -> None:
        text = str(exc)
        # the table's own name in the error, not just in the statement quoted after it: a missing column was taken
        # for a missing table
        if f"no such table: {TABLE_NAME}" in text or f'relation "{TABLE_NAME}" does not exist' in text:
            raise SchemaMissingError(
                f"table {TABLE_NAME} does not exist in {_shown(self.engine.url)}: "
                "run `iii-streams migrate URL` or open the store with create=True"
            ) from exc

    async def _fill_truncated(self, event: StreamEvent, refill: _Refill) -> bool:
        """Complete a create or update an older version of this store sent without its data (or names) from the
        row ``refill`` reads once for every watcher; ``False`` for a malformed notification (logged).
        ``StreamGapError`` when the row is gone, or for another event sent without its data: never data ``None``."""
        inner = event.get("event", {})
        ref = event.pop("ref", None)
        try:
            kind = inner["type"]
            key = bytes.fromhex(ref) if ref is not None else item_key(event["streamName"], event["groupId"],
                                                                      event["id"])
        except (AttributeError, KeyError, TypeError, ValueError):
            log.warning("stream watch: ignoring a malformed notification sent without its data")
            return False
        if kind not in ("create", "update"):
            raise lost_event_error(f"a {kind!r} event was sent without its data (by an older version of the store), "
                                   "which cannot be read back")
        row = await refill.row(self, key)
        if row is None:
            raise lost_event_error(f"the item of a {kind} too large for a notification was deleted before its "
                                   "value could be read back")
        if ref is not None:
            event.update(streamName=row.stream_name, groupId=row.group_id, id=row.item_id)
        inner["data"] = loads(row.value)  # parsed per watcher: no shared value object
        return True

    async def _read_back(self, key: bytes) -> Any:
        """The names and value of item ``key`` (``None`` once deleted), within the store's timeout."""
        query = select(items.c.stream_name, items.c.group_id, items.c.item_id, items.c.value).where(
            items.c.item_key == key)
        async def read(conn: AsyncConnection) -> Any:
            return (await conn.execute(query)).first()

        async with self._guard("watch", None):
            return await self._read_again(read)

    def _pool_full(self) -> bool:
        """Whether every connection the engine's pool may hand out is checked out (by the store or outside it)."""
        pool = self.engine.sync_engine.pool
        gate = self._gate
        return isinstance(pool, QueuePool) and gate is not None and pool.checkedout() >= gate.slots

    def _timeout_note(self, operation: str) -> str:
        gate = self._gate
        if gate is None:
            return ""
        task = asyncio.current_task() if gate.gave_up else None
        cut_at = gate.gave_up.pop(task, None) if task is not None else None
        if cut_at is None or asyncio.get_running_loop().time() - cut_at > _NOTE_FRESH_S:
            # (a wait some other limit of the task's ended earlier); a get waits on the one task reading for it and
            # the gets beside it: that task's wait at a full gate is theirs
            if not (operation == "get" and gate.full_with_waiters()):
                return ""
        return _gate_note(gate)

    def _wrap_error(self, exc: Exception, where: str) -> StreamError | None:
        dbapi_error, cause = getattr(self.engine.dialect.dbapi, "Error", None), exc.__cause__
        if isinstance(dbapi_error, type) and isinstance(exc, dbapi_error) and isinstance(cause, Exception):
            # the DBAPI's own error, which SQLAlchemy did not wrap (2.1 raises asyncpg's connect errors as it, from
            # a pool's connect): name the driver's error it carries
            exc = cause
        if isinstance(exc, PoolTimeoutError):
            # SQLAlchemy reads no pool setting from the URL: its query goes to the driver, which refuses them
            return PoolExhaustedError(f"{where}: no database connection became free in time: {exc} (raise the pool's "
                                      "size or its wait: the keyword arguments pool_size, max_overflow and "
                                      "pool_timeout of SQLStream.from_url or create_async_engine; they are not URL "
                                      "options)")
        if isinstance(exc, OperationalError) and "Could not decode to UTF-8" in str(exc):
            # a row another program wrote (a read of many rows: list, list_groups): not the connection's fault
            return StreamDataError(f"{where}: a stored value is not UTF-8 text, written by something else than a "
                                   f"stream store: {exc.orig}")
        if isinstance(exc, OperationalError) and "database is locked" in str(exc):
            return StreamTimeoutError(f"{where}: SQLite stayed locked by another writer: {exc.orig}")
        if isinstance(exc, OperationalError) and _sqlite_schema_mismatch(exc):
            # the database answered: its table is not the one this version made (a column dropped or renamed)
            return StreamBackendError(f"{where}: the table {TABLE_NAME} does not match this version's schema: "
                                      f"{error_line(exc)}{self._named()}")
        if isinstance(exc, OperationalError) and _sqlite_refused_write(exc):
            # the database answered, and refused to write its file: "unreachable" misled callers into retrying
            return StreamBackendError(f"{where}: the database refused the write: {error_line(exc)}{self._named()}")
        # (SQLAlchemy 2.0.0 raises asyncpg's errors of a connection the server ended unwrapped: no handle_error hook
        # sees them, so they are recognised here)
        lost = _lost_connection(exc)
        if isinstance(exc, OperationalError | InterfaceError | DisconnectionError) or lost or (
            (isinstance(exc, SQLAlchemyError) or _is_driver_error(exc)) and _not_connected(exc)) or (
            isinstance(exc, OSError) and not isinstance(exc, TimeoutError)  # a refused connect: the server is down
        ):
            # (SQLAlchemy 2.0.0 raises asyncpg's connect errors unwrapped)
            if lost:
                # named as what it is: the driver's words may be only its own state ("cannot switch to state 12")
                return StreamUnavailableError(f"{where}: database unreachable: its connection was lost "
                                              f"({error_line(exc)}){self._named()}")
            return StreamUnavailableError(f"{where}: database unreachable: {error_line(exc)}{self._named()}")
        if isinstance(exc, SQLAlchemyError):
            return StreamBackendError(f"{where}: the database refused the statement: {error_line(exc)}")
        if _is_driver_error(exc):
            return StreamBackendError(f"{where}: {type(exc).__name__}: {exc}")
        return super()._wrap_error(exc, where)

    async def _write(self, operation: str, timeout: float | None, stream_name: str, group_id: str, item_id: str,
                     compute: Compute | None, size: int = -1) -> tuple[Any, Any]:
        """Queue one write for the next transaction and wait until it has committed: ``(old, new)``.

        A caller that stops waiting (its timeout, a cancel) before the write's commit was sent withdraws it: the
        batch leaves it out (rolling back and running again if it already ran its statements), so a timed-out
        write is not applied later behind the caller's back; after that its outcome is unknown, and the
        ``StreamTimeoutError`` says which (``applied``). A batch runs again for withdrawals at most twice
        (``_WITHDRAWAL_RERUNS``); then its writes are pinned from the start of the next run (a caller giving up no
        longer withdraws its write), so callers that keep giving up cannot keep the others from being served; a
        pinned write whose transaction failed before its commit was sent was not applied (``applied`` False); so is
        a SQLite write whose commit (or autocommitted statement) failed writing the file, disk full or a file size
        limit (:func:`_sqlite_commit_failed`: SQLite rolled it back).
        """
        # refused before queuing: a name the driver cannot encode would fail the whole batch it joined
        check_names(stream_name, group_id, item_id, nul=not self._pg)
        if self._full():
            raise self._refused_full(operation)
        key = item_key(stream_name, group_id, item_id)
        write = _Write(stream_name, group_id, item_id, key, compute, size)
        self._in_flight += 1
        answered = False  # the batch is done with it: it gave the caller its result or error
        try:
            async with self._guard(operation, timeout):
                # the queue chosen and joined with no await between: the next write of the item sees this one
                submitted = self._writes.submit(self._queue_of(write, timeout), write)
                try:
                    result = await submitted
                except asyncio.CancelledError:
                    raise  # the caller's own limit (the guard's cancel), or a cancel: its write may still be held
                except BaseException:
                    answered = True
                    raise
                answered = True
                return result
        except StreamTimeoutError as exc:
            if write.landed is not None:
                return write.landed  # (see below)
            error = write.timeout_error(exc)
            batch, gate = write.batch, self._gate
            if batch is not None and batch.task is not None and gate is not None:
                # its batch still waited for a connection: say so, and how to have more (the error said only "did not
                # finish within 60 s", where PoolExhaustedError named the pool's options)
                error = _waited_at_gate(error, gate)
            raise error from exc
        except StreamFileLostError as exc:
            # the batch is done with it: applied (committed before the check found the file gone) only if sent
            raise exc.for_write(write.sent) from exc
        except (StreamUnavailableError, StreamClosedError, StreamBackendError) as exc:
            if write.landed is not None:
                # its commit (or statement) landed before the cut (the store's close, a timeout, the connection's
                # end): its result is known, where the caller was told "may have been applied"
                return write.landed
            # the batch is done with it: applied only if the commit (or statement) that held it was sent; a write
            # pinned by withdrawal re-runs whose transaction failed before its commit was not; a batch the database
            # refused before its commit (disk full, a column of another type) applied nothing (before: "may have
            # been applied", 1,088 of 1,088 such writes on a full SQLite file, none of them in it); nor did a SQLite
            # commit that failed writing the file (rolled_back; before: "may have been applied", 256 of 256 under a
            # file size limit, none of them in the file)
            write.give_up()
            if write.rolled_back:
                refused = type(exc)(f"{exc}; its commit failed and SQLite rolled it back: the write was not applied")
                refused.applied = False
                raise refused from exc
            raise exc.with_outcome(sent=write.sent) from exc
        except asyncio.CancelledError:
            write.give_up()
            raise
        finally:
            self._in_flight -= 1
            write.left = True
            if not answered:
                # a queue or a batch may still hold it: it stays counted against max_pending (see _full)
                self._left_held += 1
            if write.batch is not None:
                write.batch.caller_left()  # the batch waiting for a connection to run it may be waited for no more
            if not (write.sent or write.pinned):  # withdrawn, refused, or done: it no longer holds its item's
                # later writes back
                self._leave_shared(write)

    def _full(self) -> bool:
        """Whether the store holds :attr:`max_pending` writes: those whose callers wait, and those whose callers left
        while a queue or a batch still held them (recounted from the queues when the count says full: a write whose
        caller left is dropped by its queue when reached, unseen here)."""
        if self._in_flight + self._left_held < self.max_pending:
            return False
        now = time.monotonic()
        if self._left_held and now - self._recounted_at >= _RECOUNT_S:
            # (every key's queue: counted near the bound only, and at most every _RECOUNT_S)
            self._recounted_at = now
            self._left_held = max(0, len(self._writes) + self._running - self._in_flight)
        return self._in_flight + self._left_held >= self.max_pending

    def _refused_full(self, operation: str) -> StreamBackendError:
        """The error of a write refused because the store already holds :attr:`max_pending` writes.

        Example:
            >>> error = SQLStream.from_url("sqlite://", max_pending=1)._refused_full("set")
            >>> error.applied, str(error)  # doctest: +ELLIPSIS
            (False, 'SQLStream.set: 0 writes already wait or run in this store (max_pending=1); this one was not ...')
        """
        error = StreamBackendError(
            f"SQLStream.{operation}: {self._in_flight} writes already wait or run in this store (max_pending="
            f"{self.max_pending}); this one was not queued and not applied; try again later")
        error.applied = False  # refused before anything was queued or sent
        return error

    def _queue_of(self, w: _Write, timeout: float | None) -> bytes:
        """The batcher queue ``w`` joins. SQLite: the one queue. PostgreSQL: the shared queue while writes of its
        item wait there (behind them: the shared batch hands them on in order); else its item's own queue when
        that has writes (behind them), when the item's row was found locked elsewhere lately, when no write at
        all is under way (a lone caller keeps its one-statement path with no hand-over), or when the shared queue is
        full (it holds writes whose callers left, not yet skipped: the store's own bound, ``max_pending`` writes in
        flight, is checked before, by :meth:`_write`, so such writes are few); else the shared queue, noting when its
        caller (``timeout``: its own limit, ``None`` for the store's) stops waiting."""
        if not self._pg:
            return _ONE_QUEUE
        key = w.key
        if key not in self._shared and (self._writes.idle() or self._writes.active(key) or self._is_slow(key)
                                         or not self._writes.has_room(_ONE_QUEUE)):
            return key
        self._shared[key] = self._shared.get(key, 0) + 1
        w.shared = True
        limit = self.timeout if timeout is None else timeout  # (checked by the caller's guard)
        if limit is not None:
            w.deadline = asyncio.get_running_loop().time() + limit
        return _ONE_QUEUE

    def _leave_shared(self, w: _Write) -> None:
        if w.shared:
            w.shared = False
            left = self._shared[w.key] - 1
            if left:
                self._shared[w.key] = left
            else:
                del self._shared[w.key]

    def _is_slow(self, key: bytes) -> bool:
        until = self._slow.get(key)
        if until is None:
            return False
        if until > asyncio.get_running_loop().time():
            return True
        del self._slow[key]
        return False

    async def _write_batch(self, queue: bytes, writes: Sequence[_Write]) -> builtins.list[Any]:
        """Run ``writes`` in as few transactions as possible; one ``(old, new)``, exception or ``Requeue`` per
        write."""
        self._running += len(writes)
        try:
            if self._pg and queue == _ONE_QUEUE:
                return await self._shared_batch(writes)
            results: builtins.list[Any] = []
            try:
                await self._write_steps(writes, results)
            except Exception as exc:
                if not results:
                    raise
                # the steps before this one committed: their callers get their results, only the rest this error
                return results + [exc] * (len(writes) - len(results))
            return results
        finally:
            self._running -= len(writes)

    async def _write_steps(self, writes: Sequence[_Write], results: builtins.list[Any]) -> None:
        """Commit ``writes`` in steps (single statements, transactions), adding each step's results to
        ``results`` once it committed; after a step the database refused for one write's data, the rest one at a
        time (:meth:`_one_at_a_time`)."""
        start = len(results)
        # bounded by the store's timeout: a hung database must not keep the queue waiting forever
        async with self._store_deadline(), self._batch_of(writes):  # (the deadline: the store's shared timer)
            try:
                await self._steps(writes, results)
            except Exception as exc:
                rest = writes[len(results) - start:]  # (each step adds the results of the writes it committed)
                if not self._refused_together(exc, rest):
                    raise
                await self._one_at_a_time(rest, results)

    @contextlib.asynccontextmanager
    async def _batch_of(self, writes: Sequence[_Write]) -> AsyncIterator[None]:
        """The connections taken inside are for ``writes``: their wait ends once none of the callers waits
        (:class:`_BatchWait`, :meth:`_checked_out`)."""
        batch = _BatchWait(writes)
        for w in writes:
            w.batch = batch
        token = _BATCH_WRITES.set(batch)
        try:
            yield
        finally:
            _BATCH_WRITES.reset(token)
            for w in writes:
                if w.batch is batch:
                    w.batch = None

    async def _steps(self, writes: Sequence[_Write], results: builtins.list[Any]) -> None:
        """:meth:`_write_steps`' steps, with no deadline of their own."""
        pending = builtins.list(writes)
        reruns = 0
        while pending:
            done = await self._swap(pending, results)
            if done is not None:
                pending = pending[done:]
                continue
            pending, reruns = await self._locked_step(pending, reruns, results)

    def _refused_together(self, exc: Exception, pending: Sequence[_Write]) -> bool:
        """Whether ``exc`` is the database refusing a statement of a batch of several writes for one write's data
        (:func:`_refused_write`) before its commit was sent: nothing of it was applied, and each write is worth
        trying alone."""
        return _refused_write(exc) and not any(w.sent for w in pending) and sum(
            not w.abandoned for w in pending) > 1

    async def _one_at_a_time(self, writes: Sequence[_Write], results: builtins.list[Any]) -> None:
        """Commit ``writes`` one at a time, in order, each write the database refuses (:func:`_refused_write`)
        getting its own error; added to ``results`` as :meth:`_write_steps` adds them. Why: a batch is one
        transaction, so one write that a constraint, a trigger or the column's type refused failed every write of
        it (they were not applied, but they failed); the rest still fail on any other error (a lost connection)."""
        for w in writes:
            if w.abandoned:
                results.append((None, None))  # nobody waits for it, and it is not applied (as in _plan)
                continue
            try:
                await self._steps([w], results)
            except Exception as exc:
                if not (_refused_write(exc) and not w.sent):
                    raise
                results.append(exc)

    async def _locked_step(self, pending: builtins.list[_Write], reruns: int, results: builtins.list[Any],
                           lock_wait: float | None = None) -> tuple[builtins.list[_Write], int]:
        """One locking transaction over a prefix of ``pending`` (``lock_wait``: a shared batch's, waiting that many
        seconds at most for each row lock), its results added to ``results`` once committed: the writes still
        pending, and the withdrawal re-runs so far (the whole of ``pending`` again after a rollback).

        PostgreSQL: a transaction whose connection was lost before its ``COMMIT`` was sent (no write of it
        ``sent``) runs once more on a new connection: the server rolls back what a lost session had not committed,
        so none of it was applied. Lost after that, it is not run again (its writes' outcome is unknown:
        ``applied`` None)."""
        try:
            return await self._locked_step_once(pending, reruns, results, lock_wait)
        except Exception as exc:
            if not (self._pg and _lost_connection(exc)) or self._shut or any(w.sent for w in pending):
                raise
            log.debug("SQLStream: a write transaction's connection was lost before its commit, running it again: %s",
                      error_line(exc))
        return await self._locked_step_once(pending, reruns, results, lock_wait)

    async def _locked_step_once(self, pending: builtins.list[_Write], reruns: int, results: builtins.list[Any],
                                lock_wait: float | None) -> tuple[builtins.list[_Write], int]:
        if reruns >= _WITHDRAWAL_RERUNS:
            # callers kept giving up while the batch ran, each give-up costing a whole transaction: the
            # writes left are committed to now, so the callers still waiting are served (one giving up
            # from here on learns an unknown outcome)
            for w in pending:
                w.pinned = not w.abandoned
        async with self._locking_transaction() as conn:
            if lock_wait is not None:
                await conn.execute(_SHARED_LOCK_TIMEOUT, {"wait": f"{round(lock_wait * 1000)}ms"})
            step = await self._apply_writes(conn, pending)
            if step is None:
                await conn.rollback()  # (PostgreSQL's only)
                return pending, reruns  # another writer created a row after our SELECT; now it can be locked
            if lock_wait is not None and self.publish_events:
                await conn.execute(_NO_LOCK_TIMEOUT)  # before the give-up check: its await is covered by it
            applied = step[4]
            if any(w.abandoned for w in applied):
                # a caller gave up while the statements ran: run again without its write, never behind
                # its back (the next plan skips it)
                await self._roll_back(conn)
                return pending, reruns + 1
            for w in applied:
                w.sent = True  # no await from here to the commit: a caller giving up now cannot withdraw
            done, step_results, events, current, _ = step

            def committed() -> None:
                _note_landed(pending[:done], step_results)
                for key, value in current.items():
                    self._known.wrote(key, value)
                if lock_wait is not None:
                    self._shared_value_size = sum(len(v) for v in current.values() if v is not None) // len(current)
                results.extend(step_results)
                for change in events:
                    self._hub.publish(change)

            if not self._pg:
                # (PostgreSQL's events are NOTIFYs in the transaction: they are sent if it commits, cut short or not)
                commit = self._sqlite(conn, "COMMIT", ())
                try:
                    await _outlasting_cuts(commit, lambda _: self._landed(committed))
                except Exception as exc:
                    self._note_rolled_back(exc, applied)
                    raise
                # at once, still under the write lock: a cut during the connection's end (its close can await) lost
                # the events and results of a commit that had landed (1 in 8 runs of an attack, 7 events)
                self._landed(committed)
        if self._pg:
            committed()
        return pending[done:], reruns

    async def _shared_batch(self, writes: Sequence[_Write]) -> builtins.list[Any]:
        """PostgreSQL's shared queue: the writes of several items run together (``_shared_steps``); a write whose
        item has writes in its own queue or was found locked lately, and the writes of a batch left with one item,
        are handed to their item's own queue (``Requeue``, in order), which runs them as it always did."""
        answers: builtins.list[Any] = [Requeue(w.key) for w in writes]
        try:
            # decided once per item (a slow mark may expire meanwhile): an item's writes all stay or all go
            apart = {k for k in dict.fromkeys(w.key for w in writes) if self._writes.active(k) or self._is_slow(k)}
            rest = [w for w in writes if w.key not in apart]
            # (a batch of one item is handed on whole anyway: none of it leaves for a hurry)
            hurried = self._hurried(rest) if len({w.key for w in rest}) > 1 else set()
            # every write of such an item leaves with its caller's, the patient ones too (the abandoned: not handed on)
            self.hurry_requeues += sum(w.key in hurried and not w.abandoned for w in writes)
            apart |= hurried
            together = [i for i, w in enumerate(writes) if w.key not in apart]
            if len({writes[i].key for i in together}) < 2:
                return _handing_on(writes, answers)
            batch = [writes[i] for i in together]
            results: builtins.list[Any] = []
            try:
                await self._shared_steps(batch, results)
            except Exception as exc:
                # the steps before this one committed: their callers get their results, only the rest this error
                results += [exc] * (len(batch) - len(results))
            for i, result in zip(together, results, strict=False):  # the rest: handed on after a lock failure
                answers[i] = result
            return _handing_on(writes, answers)
        finally:
            for w in writes:  # handed on or done: from here on they no longer hold their items' writes here
                self._leave_shared(w)

    async def _shared_steps(self, writes: Sequence[_Write], results: builtins.list[Any]) -> None:
        """Commit ``writes`` (several items) in locking transactions that give up a row lock after a while
        (``_shared_lock_wait``), adding each one's results to ``results``; stops, leaving the rest uncommitted, once
        one item is left or when a transaction met a lock timeout or deadlock (the items whose rows are locked
        elsewhere are remembered)."""
        pending = builtins.list(writes)
        reruns = 0
        timeout = self.timeout
        ends = math.inf if timeout is None else asyncio.get_running_loop().time() + timeout
        async with self._store_deadline(), self._batch_of(writes):  # (the deadline: the store's shared timer)
            while len({w.key for w in pending}) > 1:
                # the writes up to the byte bound; those the transaction leaves (a repeated event) go first next.
                # Its lock wait is still the whole rest's: another store's batch of the same items holds them that
                # long, one step after another (sized by the step, a batch of 40 KB values waited 0.1 s where
                # the other's held them 0.25 s, and handed every write on)
                take = self._within_chars(pending)
                step, rest = pending[:take], pending[take:]
                try:
                    left, reruns = await self._locked_step(step, reruns, results, self._lock_wait(pending, ends))
                except Exception as exc:
                    if _refused_write(exc) and not any(w.sent for w in step):
                        # one write's data refused: its items' own queues run them, where only its own write fails
                        for w in pending:
                            w.sent = w.pinned = False
                        return
                    if _sqlstate(exc) not in _LOCK_FAILED:
                        raise
                    # rolled back: nothing of it was sent, so its callers may still withdraw until their item's
                    # own queue runs it (that queue waits for the row as long as the store's timeout allows)
                    for w in pending:
                        w.sent = w.pinned = False
                    self.lock_requeues += sum(not w.abandoned for w in pending)  # the abandoned are not handed on
                    await self._remember_locked(pending)
                    return
                pending = left + rest

    def _lock_wait(self, writes: Sequence[_Write], ends: float) -> float:
        """``_shared_lock_wait`` of a shared batch's ``writes`` whose store deadline is at loop time ``ends``: the
        time left is up to the first deadline of the batch and of its callers still waiting (``_hurried`` left
        out those that would cut it short)."""
        for w in writes:
            if not w.abandoned:
                ends = min(ends, w.deadline)
        left = None if ends == math.inf else ends - asyncio.get_running_loop().time()
        return _shared_lock_wait(len(writes), self._value_chars(writes), left)

    def _value_chars(self, writes: Sequence[_Write]) -> int:
        """Characters of the values ``writes`` write, a write of unknown size (an update, a delete) counted as the
        mean value of the last shared transaction."""
        guess = self._shared_value_size
        return sum(guess if w.size < 0 else w.size for w in writes if not w.abandoned)

    def _within_chars(self, writes: Sequence[_Write]) -> int:
        """How many of ``writes``, from the first, one shared transaction takes: as many as keep their values
        (counted as ``_value_chars`` counts them) within ``_MAX_SHARED_CHARS``, and at least one."""
        guess, total = self._shared_value_size, 0
        for n, w in enumerate(writes):  # one loop, no call per write: measured at a third of the cost
            if not w.abandoned:
                total += guess if w.size < 0 else w.size
                if total > _MAX_SHARED_CHARS and n:
                    return n
        return len(writes)

    def _hurried(self, writes: Sequence[_Write]) -> set[bytes]:
        """The items of a shared batch's ``writes`` with a caller in a hurry: one whose time left is below half of
        what the batch's lock wait needs (that wait, ``_shared_lock_wait`` of the batch as if its writes all had the
        time its median write has, is a quarter of it: below 0.2 s for the usual 0.1 s). Its deadline would cut the
        whole batch's wait short (one caller with a 10 ms timeout: ~2.5 ms, and two stores' batches of the same rows
        then hand everything on); its item's writes go to its
        own queue instead, all of them (so they keep their order), which waits for the row as long as each allows.
        Callers in a hurry together (the store's own short timeout) are not: the batch is all of them."""
        deadlines = sorted(w.deadline for w in writes if not w.abandoned)
        if not deadlines:
            return set()
        now = asyncio.get_running_loop().time()
        median = deadlines[len(deadlines) // 2]
        needs = _shared_lock_wait(len(writes), self._value_chars(writes), None if median == math.inf else median - now)
        bar = now + needs / _SHARED_LOCK_SHARE / 2
        return {w.key for w in writes if not w.abandoned and w.deadline < bar}

    async def _remember_locked(self, writes: Sequence[_Write]) -> None:
        """Mark the items of ``writes`` whose rows another transaction holds now as slow for ``_SLOW_S`` (one
        autocommitted probe; a row held only briefly is free again by then and is not marked)."""
        keys = builtins.list(dict.fromkeys(w.key for w in writes))
        try:
            # bounded: the shared queue waits for it (a pool whose connections all wait for locked rows)
            async with asyncio.timeout(_PROBE_S), self._read() as conn:
                locked = (await conn.execute(_LOCKED_ROWS, {"keys": keys})).scalars().all()
        except Exception as exc:  # only a hint: the writes are handed on either way
            log.debug("SQLStream: could not probe locked rows: %s", error_line(exc))
            return
        until = asyncio.get_running_loop().time() + _SLOW_S
        for key in locked:
            self._slow.pop(key, None)  # re-inserted: the dict stays in marking order
            self._slow[key] = until
        while len(self._slow) > _SLOW_MAX:
            del self._slow[next(iter(self._slow))]

    def _plan(self, writes: Sequence[_Write], stored: dict[bytes, str]) -> _Plan:
        """Apply a prefix of ``writes`` in Python to the rows ``stored`` (key → JSON text; missing = absent; bytes
        that are not UTF-8 decoded with ``surrogateescape``, so they round-trip). The writes of an item whose stored
        value is not JSON (not UTF-8 included: the parser refuses surrogates) are refused with
        :class:`StreamDataError`, and the item is left as it is."""
        plan = _Plan(current={key: stored.get(key) for key in dict.fromkeys(w.key for w in writes)})
        current = plan.current
        # one event head per item and batch: its writes commit together, so their events share one timestamp
        heads: dict[bytes, tuple[str, str]] = {}
        for w in writes:
            if w.abandoned:
                plan.results.append((None, None))  # nobody waits for it, and it is not applied
                continue
            old_text = current[w.key]
            try:
                # parsed per write, so no two callers share (and could mutate) one value object
                old = None if old_text is None else loads(old_text)
            except ValueError as exc:
                assert old_text is not None
                # its bytes again, so the error can tell text that is not UTF-8 from text that is not JSON
                raw = old_text.encode("utf-8", "surrogateescape")
                error = unreadable_value(w.stream_name, w.group_id, w.item_id, raw, exc)
                plan.results.append(error.for_write(applied=False))
                plan.refused.add(w.key)
                continue
            try:
                if w.compute is None:
                    new, new_text, kind = None, None, "delete"
                else:
                    new, new_text = w.compute(old)
                    kind = "create" if old is None else "update"
            except Exception as exc:  # this caller's own failure (a value dumps refuses)
                plan.results.append(exc)
                continue
            if old_text is None and new_text is None:
                plan.results.append((None, None))  # deleting a missing item changes nothing
                continue
            event_text = new_text if new_text is not None else old_text
            assert event_text is not None
            if self.publish_events and self._pg:
                parts = heads.get(w.key)
                if parts is None:
                    parts = heads[w.key] = event_json_parts(w.stream_name, w.group_id, w.item_id)
                head, tail = parts
                payloads = _notify_payloads(f'{head}{kind}","data":{event_text}{tail}')
                if len(payloads) == 1:  # a part's tag is new each time: only a whole payload can repeat
                    if payloads[0] in plan.sent:
                        break  # PostgreSQL would deliver it once: this write and the rest go into the next transaction
                    plan.sent.add(payloads[0])
                plan.notify.extend(payloads)
            elif self.publish_events and self._hub.active:
                plan.events.append(make_event(w.stream_name, w.group_id, w.item_id, kind, loads(event_text)))
            if new_text is None:
                plan.deleted.add(w.key)
                creator = plan.created.pop(w.key, None)
                if creator is not None and old_text is not None:  # (a delete of a missing item never gets here)
                    plan.transient[w.key] = (creator, old_text)
            elif old_text is None:
                plan.created[w.key] = w
                plan.transient.pop(w.key, None)
            current[w.key] = new_text
            plan.results.append((old, new))
            plan.applied.append(w)
        return plan

    async def _apply_writes(
        self, conn: AsyncConnection, writes: Sequence[_Write]
    ) -> tuple[int, builtins.list[Any], builtins.list[StreamEvent], dict[bytes, str | None],
               builtins.list[_Write]] | None:
        """Apply a prefix of ``writes`` in ``conn``'s transaction: ``(how many, their results, events to publish
        after commit, every key's value after them, the writes applied)``, or ``None`` when a row to create
        appeared meanwhile (roll back and run again)."""
        keys = builtins.list(dict.fromkeys(w.key for w in writes))
        stored: dict[bytes, str]
        if self._pg:
            # one key (a lone caller, or one item) is the common case: '=' avoids IN's per-call expansion
            query = _READ_ROWS.where(items.c.item_key == keys[0] if len(keys) == 1 else items.c.item_key.in_(keys))
            query = query.order_by(items.c.item_key).with_for_update()  # one lock order: no deadlocks
            stored = {row.item_key: row.value for row in await conn.execute(query)}
        else:
            # a text that is not UTF-8 (another program's) kept as it is, its writes refused by the plan
            stored = {key: raw.decode("utf-8", "surrogateescape")
                      for key, raw in await self._sqlite(conn, _READ_ROWS_SQLITE + _key_test(len(keys)), keys,
                                                         fetch=True)}
        plan = self._plan(writes, stored)
        current, deleted = plan.current, plan.deleted
        if plan.refused:
            # their rows stay as they are, and are not known: a known text that is not JSON refused every later
            # write of the item from the cache, even once another program had repaired its row
            for key in plan.refused:
                del current[key]
                self._known.forget(key)
            keys = [k for k in keys if k not in plan.refused]
        gone = [k for k in keys if k in stored and (current[k] is None or k in deleted)]
        changed = [{"k": k, "v": current[k]} for k in keys
                   if k in stored and k not in deleted and current[k] is not None and current[k] != stored[k]]
        rows = [self._row(w, current[k]) for k, w in plan.created.items() if current[k] is not None]
        if not self._pg:
            # BEGIN IMMEDIATE holds the database: no one else can have created the rows to insert
            if gone:
                await self._sqlite(conn, _DELETE_ROWS_SQLITE + _key_test(len(gone)), gone)
            if changed:
                await self._sqlite(conn, _WRITE_VALUE_SQLITE, changed[0] if len(changed) == 1 else changed,
                                   many=len(changed) > 1)
            if rows:
                await self._sqlite(conn, _INSERT_SQLITE, rows[0] if len(rows) == 1 else rows, many=len(rows) > 1)
            return len(plan.results), plan.results, plan.events, current, plan.applied
        if gone:
            await conn.execute(delete(items).where(items.c.item_key.in_(gone)))
        if changed:
            # one row (the usual single caller): a plain execute; several: one executemany
            await conn.execute(_WRITE_VALUE, changed[0] if len(changed) == 1 else changed)
        if rows or plan.transient:
            # An item created and deleted again in this prefix is inserted too, then deleted: the insert is what
            # finds a row another writer created after our read (and run again), and what holds that row off
            # until we commit. Skipped, watchers got create(theirs), create(ours), delete(ours) and took the item
            # for gone while the row held theirs.
            transient = [self._row(w, text) for w, text in plan.transient.values()]
            # in key order, as the rows were locked: two batches creating the same items wait for each other in
            # one order, never in a circle. One statement for all: a row missing from what it returns was created
            # by another writer meanwhile, and the transaction runs again (rolled back, as it was at a row's
            # conflict when each row had its own INSERT)
            new = sorted(rows + transient, key=lambda row: row["item_key"])
            params = {name: [row[column] for row in new] for name, column in _INSERT_COLUMNS}
            if len((await conn.execute(_INSERT_NEW, params)).all()) != len(new):
                return None
            if transient:
                await conn.execute(delete(items).where(items.c.item_key.in_(builtins.list(plan.transient))))
        # in this transaction, after the writes: sent at its commit, only if it commits, in the writes' order
        for start in range(0, len(plan.notify), _NOTIFY_CHUNK):
            chunk = plan.notify[start:start + _NOTIFY_CHUNK]
            await conn.execute(_NOTIFY_MANY, {"channel": NOTIFY_CHANNEL, "payloads": chunk})
        return len(plan.results), plan.results, plan.events, current, plan.applied

    async def _swap(self, writes: Sequence[_Write], results: builtins.list[Any]) -> int | None:
        """Run a prefix of ``writes`` as one compare-and-set statement when they all touch one item whose committed
        value this process knows: how many it ran (their results added to ``results``, their events published), or
        ``None`` to use the locking transaction (several items, value unknown, a delete or create, or the item
        changed meanwhile).

        PostgreSQL: a statement that the driver refused to send on a connection it had found ended (:func:`_unsent`)
        leaves its writes unsent, and they go on once more on a new connection (the item's value is forgotten, so the
        locking transaction runs them); one sent may have been applied and is not run again."""
        try:
            return await self._swap_once(writes, results)
        except Exception as exc:
            if not (self._pg and _lost_connection(exc)) or self._shut or any(w.sent for w in writes):
                raise
            log.debug("SQLStream: a write's connection was found ended before its statement was sent, writing on a "
                      "new one: %s", error_line(exc))
        return await self._swap_once(writes, results)

    async def _swap_once(self, writes: Sequence[_Write], results: builtins.list[Any]) -> int | None:
        key = writes[0].key
        old_text = self._known.get(key)
        if old_text is None or any(w.compute is None or w.key != key for w in writes):
            return None
        # autocommit: the statement is its own transaction (SQLite: under this store's writer lock, like a batch)
        async with self._connection(self._reader.connect, self._write_lock) as conn:
            # planned once connected (no await from here to the statement): a caller that gave up while the
            # connection was awaited is left out, and every write planned is marked sent
            plan = self._plan(writes, {key: old_text})
            if any(isinstance(result, BaseException) for result in plan.results):
                # a write refused against the value this process wrote last (an update over its max_bytes, an op
                # that does not fit the value, a text that is not JSON) is decided on the row the locking
                # transaction reads instead: another process may have changed it since, and a refusal writes
                # nothing, so no compare-and-set would tell (before, an update that fitted the row another process
                # had shrunk was refused for good)
                self._known.forget(key)
                return None
            if not plan.applied:
                results.extend(plan.results)  # (only writes whose callers gave up: nothing to write)
                return len(plan.results)
            new_text = plan.current[key]
            if new_text is None:  # pragma: no cover - only a delete removes a row, and deletes took the other path
                return None
            if len(plan.notify) > _NOTIFY_CHUNK:
                return None  # too big for one statement's parameters (with the value): the transaction chunks them
            for w in plan.applied:
                w.sent = True
            params: dict[str, Any] = {"new": new_text, "k": key, "old": old_text}
            settled = False

            def written_once() -> None:
                nonlocal settled
                settled = True
                self._known.wrote(key, new_text)
                _note_landed(writes, plan.results)
                results.extend(plan.results)
                for change in plan.events:
                    self._hub.publish(change)

            try:
                if self._pg:
                    params.update(channel=NOTIFY_CHANNEL, payloads=plan.notify)
                    written = (await conn.execute(_SWAP, params)).one().written
                else:
                    statement = self._sqlite(conn, _SWAP_SQLITE, params)
                    written = await _outlasting_cuts(
                        statement, lambda n: self._landed(written_once) if n == 1 else None)
            except BaseException as exc:
                if not settled:
                    # cut short (a timeout, a cancel) or failed with the statement perhaps applied: the value this
                    # store knows may be old, and every later compare-and-set of the item would miss (while each,
                    # cut short too, left its writes' outcome unknown: 30 times more such callers than applied
                    # writes)
                    self._known.forget(key)
                if isinstance(exc, Exception) and (_refused_write(exc) or _unsent(exc)):
                    # the database refused the statement, which it ran as its own transaction; or it never left
                    for w in plan.applied:
                        w.sent = False
                elif isinstance(exc, Exception):
                    self._note_rolled_back(exc, plan.applied)
                raise
            if written != 1:
                for w in plan.applied:
                    # nothing was written: the locking transaction runs them, and may still leave them out (marked
                    # before the connection's end, whose check of the SQLite file tells sent writes committed)
                    w.sent = False
            else:
                self._landed(written_once)  # at once: see _locked_step
        if written != 1:
            # another process wrote the item: its value is unknown, and it may keep writing for a while
            self.swap_misses += 1
            self._known.distrust(key)
            return None
        return len(plan.results)

    def _note_rolled_back(self, exc: Exception, writes: Sequence[_Write]) -> None:
        """Mark ``writes`` not applied when ``exc``, the failure of the SQLite commit (or autocommitted statement) that
        carried them, is certain to have rolled them back (:func:`_sqlite_commit_failed`; a file database only: its
        journal or WAL is what makes a failed commit roll back). Why: they had been sent, so their callers were told
        "may have been applied" though nothing was (a disk full, a file size limit: none of them in the file)."""
        if not self._pg and self._file is not None and _sqlite_commit_failed(exc):
            for w in writes:
                w.rolled_back = True

    def _landed(self, apply: Callable[[], None]) -> None:
        """``apply`` the bookkeeping of a statement or commit that landed (known values, results, change events), its
        batch cut short or not, unless the SQLite database file was found lost meanwhile (then the connection's end
        raises, and each write's caller learns it was sent)."""
        try:
            self._check_file(committed=True)
        except StreamFileLostError:
            return  # the store is failed for good; its callers learn it from their outcome (``sent``)
        apply()

    @staticmethod
    def _row(w: _Write, value: str | None) -> dict[str, Any]:
        return {
            "item_key": w.key,
            "group_key": group_key(w.stream_name, w.group_id),
            "stream_key": stream_key(w.stream_name),
            "stream_name": w.stream_name,
            "group_id": w.group_id,
            "item_id": w.item_id,
            "value": value,
        }

    # -- IStream -----------------------------------------------------------------------------------------------

    async def get(self, input: StreamGetInput, *, timeout: float | None = None) -> Any:
        """The item's value (one ``SELECT`` by its key), ``None`` when it is missing.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     async with SQLStream.from_url("sqlite+aiosqlite://") as s:
            ...         await s.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data={"big": 2**70}))
            ...         return await s.get(StreamGetInput(stream_name="s", group_id="g", item_id="i"))
            >>> asyncio.run(demo())
            {'big': 1180591620717411303424}
        """
        check_names(input.stream_name, input.group_id, input.item_id, nul=not self._pg)
        key = item_key(input.stream_name, input.group_id, input.item_id)
        async with self._guard("get", timeout):
            raw = await self._reads.submit(key)
        if raw is None:
            return None
        try:
            return loads(raw)
        except ValueError as exc:
            raise unreadable_value(input.stream_name, input.group_id, input.item_id, raw, exc) from None

    async def _read_values(self, keys: Sequence[bytes]) -> builtins.list[bytes | str | None]:
        """The stored texts of ``keys`` (``None``: no such item), in one statement on one connection: the reads of
        concurrent gets (:class:`~iii_streams.coalescing.ReadCoalescer`), run in a waiting caller's guard. Why: 32
        gets in flight took 15 pooled connections, each its own aiosqlite thread, and cost twice the CPU of one at a
        time (440 against 220 us a get); read together they take one statement and one trip to that thread."""
        lane = _LANE.set(_GET_LANE)  # (in a caller's own task too: reset below)
        try:
            return await self._read_keys(keys)
        finally:
            _LANE.reset(lane)

    async def _read_keys(self, keys: Sequence[bytes]) -> builtins.list[bytes | str | None]:
        """:meth:`_read_values`, in the gate's lane of gets."""
        if len(keys) == 1:
            key = keys[0]

            async def one(conn: AsyncConnection) -> builtins.list[bytes | str | None]:
                return [await (_pg_value(conn, key) if self._pg else
                               _sqlite_value(conn, key, in_memory=self._in_memory))]

            return await self._read_again(one)
        unique = builtins.list(dict.fromkeys(keys))

        async def many(conn: AsyncConnection) -> Mapping[bytes, bytes | str]:
            return await (
                _pg_values(conn, unique) if self._pg else _sqlite_values(conn, unique, in_memory=self._in_memory))

        found = await self._read_again(many)
        return [found.get(key) for key in keys]

    async def set(self, input: StreamSetInput, *, timeout: float | None = None) -> StreamSetResult[Any]:
        """Write the item (batched with concurrent writes of its group); returns the old and the new value.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     async with SQLStream.from_url("sqlite+aiosqlite://") as s:
            ...         await s.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
            ...         r = await s.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=2))
            ...         return r.old_value, r.new_value
            >>> asyncio.run(demo())
            (1, 2)
        """
        text = json_text(input.data, "data")  # refused before anything is queued
        old, _ = await self._write("set", timeout, input.stream_name, input.group_id, input.item_id,
                                   lambda _old: (input.data, text), len(text))
        return SetResult(old_value=old, new_value=input.data)

    async def _update(self, stream_name: str, group_id: str, item_id: str, ops: builtins.list[Op],
                      timeout: float | None, *, max_bytes: int | None = None) -> StreamUpdateResult[Any]:
        def compute(old: Any) -> tuple[Any, str]:
            new = apply_update(old, ops)[1]
            # refused here, inside the batch, fails this caller alone (the plan catches it per write): measured
            # on the value the transaction read, so concurrent updates of the item cannot pass max_bytes together
            text = json_text(new, "the updated value")
            check_value_bytes(text, max_bytes)
            return new, text

        old, new = await self._write("update", timeout, stream_name, group_id, item_id, compute)
        return UpdateResult(old_value=old, new_value=new)

    async def delete(self, input: StreamDeleteInput, *, timeout: float | None = None) -> StreamDeleteResult:
        """Remove the item; returns its old value (``None`` when it was missing).

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     async with SQLStream.from_url("sqlite+aiosqlite://") as s:
            ...         await s.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=[1]))
            ...         r = await s.delete(StreamDeleteInput(stream_name="s", group_id="g", item_id="i"))
            ...         return r.old_value, await s.list_groups(StreamListGroupsInput(stream_name="s"))
            >>> asyncio.run(demo())
            ([1], [])
        """
        old, _ = await self._write("delete", timeout, input.stream_name, input.group_id, input.item_id, None)
        return StreamDeleteResult(old_value=old)

    async def list(self, input: StreamListInput, *, timeout: float | None = None) -> builtins.list[Any]:
        """Every item value of a group, in the order the items were created.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     async with SQLStream.from_url("sqlite+aiosqlite://") as s:
            ...         for item_id in ("b", "a"):
            ...             await s.set(StreamSetInput(stream_name="s", group_id="g", item_id=item_id, data=item_id))
            ...         return await s.list(StreamListInput(stream_name="s", group_id="g"))
            >>> asyncio.run(demo())
            ['b', 'a']
        """
        texts = await self._group_texts(input, timeout)
        try:
            return [loads(text) for text in texts]
        except ValueError:
            raise await self._not_json_in(input) from None

    async def list_text(self, input: StreamListInput, *, max_bytes: int | None = None) -> str:
        """:meth:`list` as one JSON array text: the stored texts joined, none decoded. With ``max_bytes``, the
        database sums the texts' bytes in the same statement that reads them, and a group over it raises
        :class:`~iii_streams.errors.StreamTooLargeError` without one text being sent.

        Example:
            >>> import asyncio
            >>> from iii_streams.errors import StreamTooLargeError
            >>> async def demo(bound: int) -> Any:  # '["é"]': 6 UTF-8 bytes
            ...     async with SQLStream.from_url("sqlite+aiosqlite://") as s:
            ...         await s.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data="é"))
            ...         try:
            ...             return await s.list_text(StreamListInput(stream_name="s", group_id="g"), max_bytes=bound)
            ...         except StreamTooLargeError as exc:
            ...             return exc.size
            >>> asyncio.run(demo(6)), asyncio.run(demo(5))
            ('["é"]', 6)
        """
        check_names(input.stream_name, input.group_id, nul=not self._pg)
        params: dict[str, Any] = {"group_key": group_key(input.stream_name, input.group_id)}
        if max_bytes is not None:
            params["max_bytes"] = max_bytes

        async def read(conn: AsyncConnection) -> Sequence[Any]:  # str, and None for a text json_valid refused
            try:
                result = await conn.execute(_list_text_query(self._pg, max_bytes is not None), params)
                if max_bytes is None:
                    texts: Sequence[Any] = result.scalars().all()
                    return texts
                rows = result.all()
                check_list_bytes(input, rows[0][1] if rows else 1, max_bytes)  # (no rows: an empty group)
                return [value for value, _ in rows]
            except DBAPIError as exc:
                # PostgreSQL's cast of a text that is not JSON: invalid_text_representation
                if not (self._pg and _sqlstate(exc) == "22P02"):
                    raise
                return [None]

        async with self._guard("list", None):
            texts = await self._read_again(read)
        if not self._pg and None not in texts:
            try:
                texts = [raw.decode() for raw in texts]
            except UnicodeDecodeError:
                texts = [None]
        if None in texts:
            # the texts are spliced, not parsed: one that is not JSON (another program's) made the whole answer
            # something no reader could parse (a worker's reading of frames ended on it), or a wrong list (an empty
            # text left out an item, "1,2" made two)
            raise await self._not_json_in(input)
        if max_bytes is not None:
            # the database counted bytes in its own encoding (UTF-8 unless set otherwise): the answer's are the bound
            check_list_bytes(input, sum(map(utf8_size, texts)) + len(texts) + 1, max_bytes)
        return f"[{','.join(texts)}]"

    async def _not_json_in(self, input: StreamListInput) -> StreamDataError:
        """The error for a group one of whose stored texts is not JSON, naming the first such item (the group read
        again, only once the database found one)."""
        value = items.c.value if self._pg else cast(items.c.value, LargeBinary)
        query = select(items.c.item_id, value).where(
            items.c.group_key == group_key(input.stream_name, input.group_id)).order_by(items.c.id)
        async with self._guard("list", None), self._read() as conn:
            rows = (await conn.execute(query)).all()
        for item_id, raw in rows:
            try:
                loads(raw)
            except ValueError as exc:
                return unreadable_value(input.stream_name, input.group_id, item_id, raw, exc)
        return StreamDataError(f"group {input.group_id!r} of stream {input.stream_name!r}: a stored value is not JSON "
                               "text (a BLOB?), written by something else than a stream store")

    async def _group_texts(self, input: StreamListInput, timeout: float | None) -> Sequence[str | bytes]:
        """The stored JSON texts of a group's items, in the order the items were created, unchecked (:meth:`list`
        parses each); SQLite's as bytes (see :func:`_list_text_query`)."""
        check_names(input.stream_name, input.group_id, nul=not self._pg)
        query = (
            select(items.c.value if self._pg else cast(items.c.value, LargeBinary))
            .where(items.c.group_key == group_key(input.stream_name, input.group_id))
            .order_by(items.c.id)
        )
        async def read(conn: AsyncConnection) -> Sequence[str | bytes]:
            return (await conn.execute(query)).scalars().all()

        async with self._guard("list", timeout):
            return await self._read_again(read)

    async def list_groups(
        self, input: StreamListGroupsInput, *, timeout: float | None = None
    ) -> builtins.list[str]:
        """Every non-empty group of a stream, in the order the groups were created.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     async with SQLStream.from_url("sqlite+aiosqlite://") as s:
            ...         for group_id in ("work", "home"):
            ...             await s.set(StreamSetInput(stream_name="todos", group_id=group_id, item_id="1", data=1))
            ...         return await s.list_groups(StreamListGroupsInput(stream_name="todos"))
            >>> asyncio.run(demo())
            ['work', 'home']
        """
        check_names(input.stream_name, "", nul=not self._pg)
        query = (
            select(items.c.group_id)
            .where(items.c.stream_key == stream_key(input.stream_name))
            .group_by(items.c.group_key, items.c.group_id)
            .order_by(func.min(items.c.id))
        )
        async def read(conn: AsyncConnection) -> builtins.list[str]:
            return builtins.list((await conn.execute(query)).scalars().all())

        async with self._guard("list_groups", timeout):
            return await self._read_again(read)

    # -- Backend extras ------------------------------------------------------------------------------------------

    async def list_all(self) -> builtins.list[tuple[str, builtins.list[str]]]:
        """Every stream with its non-empty groups, both sorted.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     async with SQLStream.from_url("sqlite+aiosqlite://") as s:
            ...         for stream, group in [("b", "y"), ("a", "z"), ("a", "x")]:
            ...             await s.set(StreamSetInput(stream_name=stream, group_id=group, item_id="1", data=1))
            ...         return await s.list_all()
            >>> asyncio.run(demo())
            [('a', ['x', 'z']), ('b', ['y'])]
        """
        query = select(items.c.stream_name, items.c.group_id).distinct()
        async def read(conn: AsyncConnection) -> Sequence[Any]:
            return (await conn.execute(query)).all()

        async with self._guard("list_all", None):
            rows = await self._read_again(read)
        streams: dict[str, builtins.list[str]] = {}
        for name, group in rows:
            streams.setdefault(name, []).append(group)
        return [(name, sorted(groups)) for name, groups in sorted(streams.items())]

    async def send(self, stream_name: str, group_id: str, id: str | None, type: str, data: Any) -> None:
        """Publish a custom event to the watchers (``NOTIFY`` on PostgreSQL); stores nothing.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     async with SQLStream.from_url("sqlite+aiosqlite://") as s, s.watch("chat") as events:
            ...         await s.send("chat", "room-1", None, "typing", {"user": "ada"})
            ...         return (await anext(events))["event"]
            >>> asyncio.run(demo())
            {'type': 'event', 'event': {'type': 'typing', 'data': {'user': 'ada'}}}
        """
        json_text(data, "data", room=SEND_ROOM)  # the event's own check leaves no room for a trigger's call
        await self.publish(custom_event(stream_name, group_id, id, type, data))  # (publish copies it)

    async def publish(self, event: StreamEvent) -> None:
        """Publish an already built event: to this object's watchers on SQLite, to every LISTEN on PostgreSQL.

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     async with SQLStream.from_url("sqlite+aiosqlite://") as s, s.watch("s") as events:
            ...         await s.publish(make_event("s", "g", "i", "update", {"n": 1}))
            ...         return (await anext(events))["event"]
            >>> asyncio.run(demo())
            {'type': 'update', 'data': {'n': 1}}
        """
        # refuse what could not be sent over PostgreSQL, on SQLite too
        payload = json_text(event, "the event", room=0)
        if not self._pg:
            self._hub.publish(loads(payload), payload)  # watchers get copies, never the caller's event
            return
        payloads = _notify_payloads(payload)
        if len(payloads) > _NOTIFY_CHUNK:
            # one transaction all the same (its notifications arrive together and in order), in bounded statements
            async with self._guard("publish", None), self._transaction() as conn:
                for start in range(0, len(payloads), _NOTIFY_CHUNK):
                    chunk = payloads[start:start + _NOTIFY_CHUNK]
                    await conn.execute(_NOTIFY_MANY, {"channel": NOTIFY_CHANNEL, "payloads": chunk})
            return
        async with self._guard("publish", None), self._read() as conn:
            if len(payloads) == 1:
                await conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, payloads[0])))
            else:  # one statement, so one transaction: its notifications arrive together and in order
                await conn.execute(_NOTIFY_MANY, {"channel": NOTIFY_CHANNEL, "payloads": payloads})

    def watch(
        self, stream_name: str | None = None, group_id: str | None = None, item_id: str | None = None
    ) -> Watch:
        """Change events, optionally filtered by stream, group and item (a LISTEN connection on PostgreSQL).

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     async with SQLStream.from_url("sqlite+aiosqlite://") as s, s.watch("todos", "work") as events:
            ...         await s.set(StreamSetInput(stream_name="todos", group_id="home", item_id="1", data="x"))
            ...         await s.set(StreamSetInput(stream_name="todos", group_id="work", item_id="2", data="y"))
            ...         event = await anext(events)  # the "home" write was filtered out
            ...         return event["id"], event["event"]
            >>> asyncio.run(demo())
            ('2', {'type': 'create', 'data': 'y'})
        """
        event_filter = self._filter(stream_name, group_id, item_id)

        async def opener() -> Subscription:
            if self._pg:
                async with self._guard("watch", None):
                    if self._close_once.closing:
                        raise StreamClosedError("SQLStream is closed")
                    if self._listener is None:
                        self._listener = _Listener(self)
                    return await self._listener.subscribe(self._watch_queue_size)
            if not self._ready:
                # a store that cannot open (a file in a missing directory) fails its watch as its reads and writes
                # fail, not with a watch that opens and never hears anything
                async with self._guard("watch", None):
                    await self._prepare()
            return self._hub.subscribe(event_filter)

        return Watch(opener, event_filter)

    async def aclose(self) -> None:
        """End the watches and the write batches, and dispose of the engine this store made; idempotent (a call while a
        close is under way returns once that close ended, however it ended: :class:`~iii_streams.close_once.CloseOnce`;
        one after a close whose caller was cancelled finishes it).

        Example:
            >>> import asyncio
            >>> async def demo() -> Any:
            ...     s = SQLStream.from_url("sqlite+aiosqlite://")
            ...     await s.aclose()
            ...     await s.aclose()  # idempotent
            ...     await s.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
            >>> asyncio.run(demo())
            Traceback (most recent call last):
            iii_streams.errors.StreamClosedError: SQLStream.set: the store is closed; nothing was applied
        """
        await self._close_once.run(self._close_all)

    async def _close_all(self) -> None:
        try:
            await self._close_steps()
        finally:
            if self._gate is not None:
                # (a close cancelled before its writes' wait ended: the lane it let drain must not stay open)
                self._gate.end_drain()

    async def _close_steps(self) -> None:
        give_up_at = asyncio.get_running_loop().time() + MIGRATION_CLOSE_WAIT_S
        opening = self._opening
        if opening is not None:
            await self._end_opening(opening)  # (its waiters are not at the gate yet: they go on as before)
        if self._gate is not None:
            # the reads waiting for a connection fail now, and none starts from here (with no await since the close
            # began, or since the opening ended): the close waited as long as they would (forever with no timeout:
            # 0 of 200 ended in 40 s), and a connection given back started them after it; the write batches under
            # way wait on within the close's bound (_end_writes), as they ran before the gate
            self._gate.close(_closed_at_gate, drain=_WRITE_LANE)
        if self._listener is not None:
            await self._listener.stop()
        self._watch_retries.close()
        writes_ended = await self._end_writes(give_up_at)
        self._reads.close()
        await self._let_operations_end(give_up_at)
        # gets still waiting past that wait: told as a get refused by the close is (a batch started after the
        # dispose connected again)
        await self._reads.finish(0, closed_unapplied("SQLStream.get"))
        if self._ready and not self._operations and not self._wal_defused:
            # a file replaced since the store's last operation: its -wal's writes must not reach the new one either
            with contextlib.suppress(StreamError):
                await self._check_file_now(locked=False)
        self._shut = True
        if self._owns_engine:
            await self._dispose()
            if self._operations and self._cancels_openings():
                # past the wait: cut, they end at once (their connections are lost, StreamClosedError) instead of
                # holding one past the close; on SQLite each closes its own once it ended (_connection)
                cut_connections(self.engine, self._connections)
                await self._let_operations_end(asyncio.get_running_loop().time() + DISPOSE_TIMEOUT_S)
        if self._gate is not None:
            self._gate.close_all(cut_let_through=self._cancels_openings())
        # connections cut short in their set-up by the close's cuts (closing_stranded) are closed before it returns
        await stranded_closes_ended(self.engine, DISPOSE_TIMEOUT_S)
        if not writes_ended.done():
            # a batch that got its connection during the drain and then waited on the database (a lock held
            # elsewhere): held the close as long (13 s for a 12 s lock); its callers learn its outcome when it ends
            await asyncio.wait((writes_ended,), timeout=DISPOSE_TIMEOUT_S)
            if not writes_ended.done():
                self._writes_let_go = writes_ended
                log.warning("SQLStream %s: write batches still under way at the end of its close (waiting on the "
                            "database); let go, their callers get their outcome when they end", _shown(self.engine.url))

    async def _end_writes(self, give_up_at: float) -> asyncio.Future[None]:
        """End the write batches (:meth:`KeyedBatcher.aclose`: the writes not started fail, those under way run), and
        return that end. With a pool gate, the batches waiting there for a connection wait on until ``give_up_at``
        (the close's :data:`MIGRATION_CLOSE_WAIT_S`), then fail unapplied (:meth:`_PoolGate.end_drain`), and the
        close goes on past those still running (they end by its dispose, or let go); without one it awaits them."""
        closing = asyncio.ensure_future(self._writes.aclose())
        gate = self._gate
        if gate is None:
            await closing
            return closing
        try:
            await asyncio.wait((closing,), timeout=max(0.0, give_up_at - asyncio.get_running_loop().time()))
        finally:
            gate.end_drain()
        return closing

    async def _let_operations_end(self, give_up_at: float) -> None:
        """Let the operations under way (those an opening let through as it ended included: they resume after the
        close saw it end) end before the dispose, until ``give_up_at`` (the close's :data:`MIGRATION_CLOSE_WAIT_S`):
        disposed of under them, they connected again from the pool the dispose made, which nothing closed (two
        connections and their aiosqlite threads left after the close, attack F2)."""
        loop = asyncio.get_running_loop()
        while self._operations and (left := give_up_at - loop.time()) > 0:
            ended = self._operations_ended = loop.create_future()
            try:
                await asyncio.wait((ended,), timeout=left)
            finally:
                self._operations_ended = None

    async def _end_opening(self, opening: _Opening) -> None:
        """Let an opening under way (the migration, the first connect) finish within :data:`MIGRATION_CLOSE_WAIT_S`
        while operations wait for it, so they go on as they would have (the writes in flight commit: a close that
        stopped it at once refused them, 0 of 20 committed); past it, or at once when none waits, give up on it. Its
        callers then fail with StreamClosedError; on PostgreSQL (asyncpg) it is cancelled (a first connect to a
        server that never answers would otherwise run to the driver's timeout, 60 s for asyncpg, and open a
        connection after the dispose), and its connections cut if it still has not ended :data:`DISPOSE_TIMEOUT_S`
        later (a rollback waiting on a server gone silent). On SQLite it is left to end by itself, bounded by SQLite's
        busy wait: aiosqlite cannot interrupt its thread, and a cancel inside its connect left a connection holding the
        file's lock (a later store's open then hung); a close that gave up on it at once waits for its end at most
        :data:`OPENING_LEFT_WAIT_S` (waiting for it whole held the close up to 30 s on a locked file).
        A cancel of the close's own caller leaves the opening as it is (a later close comes back to it)."""
        task = opening.task
        waited = opening.waiting and not opening.left.done()
        if waited:
            done, _ = await asyncio.wait((task,), timeout=MIGRATION_CLOSE_WAIT_S)
            if done:
                return  # its callers resume with its outcome
        if task.done():
            return
        if not opening.left.done():
            opening.left.set_result(None)
        _OPENINGS_LEFT.add(task)  # held until it ends, its outcome retrieved then (_opening_ended)
        if not self._cancels_openings():
            # It closes its own connection once it ended (_run_opening). Given up on at once (none waited for it), it
            # is waited for a moment (OPENING_LEFT_WAIT_S); not again after the wait above.
            if not waited:
                await asyncio.wait((task,), timeout=OPENING_LEFT_WAIT_S)
            return
        task.cancel()
        done, _ = await asyncio.wait((task,), timeout=DISPOSE_TIMEOUT_S)
        if not done and self._owns_engine:
            # its rollback, or its connection's orderly close, waits on a server gone silent: cut, it ends at once
            cut_connections(self.engine, self._connections)
            await asyncio.wait((task,), timeout=DISPOSE_TIMEOUT_S)

    async def _dispose(self) -> None:
        """``engine.dispose()`` within :data:`DISPOSE_TIMEOUT_S`; past it the connections still open are cut, so
        the dispose ends without the server (one warning)."""
        await dispose_within(self.engine, self._connections, DISPOSE_TIMEOUT_S, self._database(), log)


@functools.cache
def _list_text_query(pg: bool, bounded: bool) -> Select[Any]:
    """:meth:`SQLStream.list_text`'s statement, built once each (parameter ``group_key``; bounded, also
    ``max_bytes``: see :func:`_bounded_list_query`), its rows the stored texts (bounded, each with the group's
    total). The database checks each text as it reads it, in its own thread or server: SQLite's ``json_valid``
    (built in since SQLite 3.38, and in the JSON1 extension before) gives ``NULL`` in place of a text that is not JSON,
    PostgreSQL's cast to ``json`` keeps the text as it is and refuses one with an error. One column: a second, and a
    check of it per row, made a 50,000-item group's answer twice as slow. SQLite's texts come as bytes, decoded by
    the caller: a text that is not UTF-8 failed the fetch, and with aiosqlite 0.20 the failed fetch's cursor stayed
    open, so that pooled connection kept its read snapshot and served old values from then on.

    Example:
        >>> from sqlalchemy.dialects import postgresql, sqlite
        >>> lite = str(_list_text_query(False, False).compile(dialect=sqlite.dialect()))
        >>> pg = str(_list_text_query(True, True).compile(dialect=postgresql.dialect()))
        >>> "CASE WHEN json_valid(iii_stream_items.value) THEN CAST(iii_stream_items.value AS BLOB) END" in lite
        True
        >>> "CAST(CAST(iii_stream_items.value AS JSON) AS TEXT)" in pg
        True
    """
    # (PostgreSQL: cast back to text in the statement, so the driver's json codec does not parse it)
    value = cast(cast(items.c.value, JSON), Text) if pg else case(
        (func.json_valid(items.c.value), cast(items.c.value, LargeBinary)))
    if bounded:
        return _bounded_list_query(pg, value)
    return select(value).where(items.c.group_key == bindparam("group_key", type_=LargeBinary)).order_by(items.c.id)


def _bounded_list_query(pg: bool, value: ColumnElement[Any]) -> Select[Any]:
    """:meth:`SQLStream.list_text`'s statement with ``max_bytes`` (parameters ``group_key`` and ``max_bytes``; built
    once per dialect). One statement, one round trip: the group's total (its texts' bytes, a comma between two, the
    brackets: as :func:`~iii_streams.errors.check_list_bytes` counts), then its rows in order, each with its text
    (``value``) when the total is within ``max_bytes``; over it, one row ``(None, total)`` and no text leaves the
    database
    (when the texts were read to be counted, 8 callers refused a 40 x 1 MB group took the engine up 300 MB).
    PostgreSQL's ``octet_length`` takes a TOASTed text's size from its header, without reading the text. A scan of
    the items (not a join to the total, which SQLite sorted again: 4 MB read in 20 ms instead of 6 ms) keeps the
    index's order.

    Example:
        >>> from sqlalchemy.dialects import postgresql, sqlite
        >>> pg = str(_bounded_list_query(True, items.c.value).compile(dialect=postgresql.dialect()))
        >>> lite = str(_bounded_list_query(False, items.c.value).compile(dialect=sqlite.dialect()))
        >>> "sum(octet_length(iii_stream_items.value))" in pg, "length(CAST(iii_stream_items.value AS BLOB))" in lite
        (True, True)
    """
    key = bindparam("group_key", type_=LargeBinary)
    size = func.octet_length(items.c.value) if pg else func.length(cast(items.c.value, LargeBinary))
    totals = select((func.coalesce(func.sum(size), 0) + func.count() + 1).label("total")) \
        .where(items.c.group_key == key).cte("total")  # one evaluation, however often it is named
    total = select(totals.c.total).scalar_subquery()
    fits = total <= bindparam("max_bytes", type_=BigInteger)
    every_row = null() if pg else literal(-1)  # (PostgreSQL's LIMIT NULL, SQLite's LIMIT -1)
    return select(case((fits, value)), total).where(items.c.group_key == key).order_by(items.c.id) \
        .limit(case((fits, every_row), else_=literal(1)))

