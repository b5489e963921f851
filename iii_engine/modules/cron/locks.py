"""Which engine fires a cron tick: each tick is fired by exactly one engine among those sharing a lock store. The
lock records the last tick fired per trigger, so an engine that wakes late can never fire a tick twice.

Example:
    >>> type(open_cron_lock(CronSettings())).__name__
    'KvCronLock'
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, Protocol

from .settings import DEFAULT_LOCK_TTL_MS, CronSettings, RedisCronSettings

__all__ = ["CronLock", "KvCronLock", "RedisCronLock", "open_cron_lock"]

log = logging.getLogger(__name__)


# Atomically, for each key: fire only if its tick (ARGV[i + 1]) is newer than the last fired one, and remember it
# for ARGV[1] ms. One answer per key, in order; a key given twice is won once.
_TRY_FIRE_LUA = """
local won = {}
for i, key in ipairs(KEYS) do
  local tick = ARGV[i + 1]
  local last = redis.call('GET', key)
  if last and tonumber(last) >= tonumber(tick) then
    won[i] = 0
  else
    redis.call('SET', key, tick, 'PX', ARGV[1])
    won[i] = 1
  end
end
return won
"""


_PRUNE_FLOOR = 64
# How long connecting to Redis, or its answer to a lock, may take. Without it a Redis that stopped answering (accepts,
# never replies) held every tick for good, each holding a max_fired_calls slot: one trigger every second took the
# whole bound, and with it every other trigger-fired call of the engine. A tick is worth little once late.
_REDIS_TIMEOUT_S = 5.0
# Shortest time a fired tick is remembered in Redis. The key lived lock_ttl_ms from the firing, so with a short one
# (1 ms) each engine that tried a tick a moment after another found no key and fired it too: every tick on every
# engine. One integer per trigger id: a minute costs nothing and covers an engine's short stall.
_MIN_MEMORY_MS = 60_000
# Keys one lock script takes at most: a script blocks Redis while it runs (1,000 keys: about a millisecond).
_KEYS_PER_SCRIPT = 1000
# Lock scripts of one engine in flight at most; the ticks asked meanwhile go in the next ones. Why batches: one
# round trip per trigger per tick through the 50-connection pool lost the ticks waiting for a connection (2,000
# every-second triggers: 49 % of ticks never fired on one engine, 93 % on two, "PoolExhaustedError ... all 50
# connections stayed busy for 5 s").
_SCRIPTS_IN_FLIGHT = 8


class CronLock(Protocol):
    """Decides which engine fires a tick."""

    #: whether other engines may share this lock (then an engine that cannot deliver a tick leaves it to them)
    shared: bool

    async def prepare(self) -> None:
        """Check the lock store answers, at the module's start (raises when it does not)."""

    async def try_fire(self, job_id: str, tick_ms: int, *, lock_key: str | None = None) -> bool:
        """True exactly once per ``(lock, tick_ms)`` among engines sharing this lock store: the lock is the config's
        ``lock_key`` when given, else the trigger id ``job_id``. The two are kept apart: a ``lock_key`` equal to
        some trigger's id is not that trigger's lock."""

    async def fired(self, job_id: str, tick_ms: int, *, lock_key: str | None = None) -> bool:
        """Whether an engine sharing this lock fired ``tick_ms`` (or a later tick) of this lock."""

    async def close(self) -> None:
        """Release connections."""


class KvCronLock:
    """In-process lock: one engine, so it only guards against a tick being fired twice by the same engine.

    Example:
        >>> import asyncio
        >>> lock = KvCronLock()
        >>> asyncio.run(lock.try_fire("j", 1000)), asyncio.run(lock.try_fire("j", 1000))
        (True, False)
        >>> asyncio.run(lock.try_fire("other", 1000, lock_key="j"))  # a lock_key is not a trigger id's lock
        True
    """

    shared = False

    def __init__(self, ttl_ms: int = DEFAULT_LOCK_TTL_MS) -> None:
        self._ttl_ms = ttl_ms
        # (trigger id, None) or (its lock_key, True) -> (last tick fired, when that entry expires); expired entries
        # are never consulted
        self._last: dict[tuple[str, bool | None], tuple[int, float]] = {}
        self._prune_at = _PRUNE_FLOOR

    def __len__(self) -> int:
        return len(self._last)

    async def prepare(self) -> None:
        """Nothing to check: the lock lives in this process."""

    async def try_fire(self, job_id: str, tick_ms: int, *, lock_key: str | None = None) -> bool:
        """See :class:`CronLock`."""
        now = time.monotonic()
        key = (job_id, None) if lock_key is None else (lock_key, True)
        last = self._last.get(key)
        if last is not None and last[1] > now and last[0] >= tick_ms:
            return False
        self._last[key] = (tick_ms, now + self._ttl_ms / 1000)
        if len(self._last) >= self._prune_at:
            self._prune(now)
        return True

    async def fired(self, job_id: str, tick_ms: int, *, lock_key: str | None = None) -> bool:
        """See :class:`CronLock`."""
        last = self._last.get((job_id, None) if lock_key is None else (lock_key, True))
        return last is not None and last[0] >= tick_ms

    def _prune(self, now: float) -> None:
        """Forget expired entries: trigger ids come and go (a restarted worker registers new ones), and before,
        each id ever fired stayed here for good. Runs when the table doubled since the last prune: amortised
        O(1) per tick."""
        self._last = {job: entry for job, entry in self._last.items() if entry[1] > now}
        self._prune_at = max(_PRUNE_FLOOR, 2 * len(self._last))

    async def close(self) -> None:
        """Nothing to release."""


class RedisCronLock:
    """Lock shared by every engine using the same Redis: key ``<prefix>cron_lock:<trigger id>`` (production's
    layout), or ``<prefix>cron_lock_key:<lock_key>`` for a trigger whose config names a ``lock_key`` (ours: see
    :func:`~iii_engine.modules.cron.module.lock_key_of`). Apart, so that a worker naming another trigger's id as its
    ``lock_key`` does not take that trigger's ticks.

    Example:
        >>> lock = RedisCronLock("redis://127.0.0.1:6379/0", key_prefix="test:")  # doctest: +SKIP
    """

    shared = True

    def __init__(self, redis_url: str, *, ttl_ms: int = DEFAULT_LOCK_TTL_MS, key_prefix: str = "") -> None:
        from redis.asyncio import Redis

        from iii_streams.redis import waiting_client

        # A blocking pool (50 connections, or the URL's ?max_connections=): ticks beyond it wait for one (5 s, or
        # ?timeout=) where Redis.from_url's pool failed them at once ("Too many connections").
        self._redis: Redis = waiting_client(redis_url, pool_timeout=_REDIS_TIMEOUT_S, socket_timeout=_REDIS_TIMEOUT_S,
                                            socket_connect_timeout=_REDIS_TIMEOUT_S)
        self._key_ms = max(ttl_ms, _MIN_MEMORY_MS)
        self._prefix = key_prefix
        self._script = self._redis.register_script(_TRY_FIRE_LUA)
        # ticks asked and not yet sent: (key, tick_ms, the asker's future)
        self._asked: list[tuple[str, int, asyncio.Future[bool]]] = []
        self._flush_due = False
        self._sending: set[asyncio.Task[None]] = set()
        # keys in a script in flight: their later ticks wait for its answer (see _flush)
        self._keys_sending: set[str] = set()
        self._shared_prefix = f"{key_prefix}cron_lock_key:"
        #: ticks of a lock_key won for a trigger unregistered while its script was on its way (fired by nobody)
        self.ticks_taken_unfired = 0

    async def prepare(self) -> None:
        """Check Redis answers (a ``PING`` within 5 s), so a module on a Redis that is down fails its start in one
        line naming it instead of failing every tick; see :func:`iii_streams.redis.check_reachable`.

        Example:
            >>> import asyncio
            >>> async def down() -> None:
            ...     lock = RedisCronLock("redis://:secret@127.0.0.1:1/0")
            ...     try:
            ...         await lock.prepare()
            ...     finally:
            ...         await lock.close()
            >>> asyncio.run(down())  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            iii_streams.errors.StreamUnavailableError: Redis at redis://127.0.0.1:1/0 unreachable: Error 111 ...
        """
        from iii_streams.redis import check_reachable

        await check_reachable(self._redis, timeout=_REDIS_TIMEOUT_S)

    async def try_fire(self, job_id: str, tick_ms: int, *, lock_key: str | None = None) -> bool:
        """See :class:`CronLock`; raises (a ``redis`` error) when Redis did not answer within 5 s. A fired tick is
        remembered ``max(lock_ttl_ms, 60 s)``: an engine later than that for it may fire it again.

        The ticks asked in one turn of the event loop (the schedules of one instant go on in batches of turns) are
        locked together, up to 1,000 per round trip, at most 8 round trips in flight."""
        asked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._asked.append((self._key(job_id, lock_key), tick_ms, asked))
        if not self._flush_due and len(self._sending) < _SCRIPTS_IN_FLIGHT:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await asked

    def _flush(self) -> None:
        """Send the ticks asked, as many scripts as may be in flight; the rest wait for one of them to end.

        A key's ticks reach Redis in the order of their times: in a script, sorted; and a key with a script in flight
        has its later ticks wait for its answer. Scripts on different pooled connections are run in any order, and
        the lock takes a tick older than the last one fired as fired already: after a 3 s stall of Redis, a trigger's
        tick went in after its next one and was fired by no engine, told nowhere (4-5 every-second ticks of 5
        triggers a stall)."""
        self._flush_due = False
        # an asker gone meanwhile (its trigger unregistered or replaced) must not take the tick in Redis: another
        # engine sharing the lock would lose it, fired by nobody and counted nowhere
        self._asked = [entry for entry in self._asked if not entry[2].done()]
        while self._asked and len(self._sending) < _SCRIPTS_IN_FLIGHT:
            batch: list[tuple[str, int, asyncio.Future[bool]]] = []
            waiting: list[tuple[str, int, asyncio.Future[bool]]] = []
            for entry in self._asked:
                (batch if len(batch) < _KEYS_PER_SCRIPT and entry[0] not in self._keys_sending else waiting).append(
                    entry)
            if not batch:
                return  # each waits for its key's script in flight; its end sends them (_sent)
            self._asked = waiting
            batch.sort(key=_tick_of)
            keys = {key for key, _, _ in batch}
            self._keys_sending |= keys
            task = asyncio.get_running_loop().create_task(self._send(batch), name="cron-lock")
            self._sending.add(task)
            task.add_done_callback(functools.partial(self._sent, keys))

    def _sent(self, keys: set[str], task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._keys_sending -= keys
        if self._asked and not self._flush_due:
            self._flush()

    async def _send(self, batch: list[tuple[str, int, asyncio.Future[bool]]]) -> None:
        try:
            won: list[Any] = await self._script(keys=[key for key, _, _ in batch],
                                                args=[self._key_ms, *(tick for _, tick, _ in batch)])
        except BaseException as exc:
            for _, _, asked in batch:
                if not asked.done():
                    if isinstance(exc, asyncio.CancelledError):
                        asked.cancel()
                    else:
                        asked.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        gone = 0
        for (key, _, asked), one in zip(batch, won, strict=True):
            if not asked.done():  # its asker may have gone (its trigger unregistered)
                asked.set_result(bool(one))
            elif one and key.startswith(self._shared_prefix):
                gone += 1
        if gone:
            # taken in Redis for a trigger unregistered here while its script was on its way: the other engines
            # sharing its lock_key found it taken, so none fired it (a worker leaving during a stall of Redis: a tick
            # of each of its 50 triggers, and nothing said). A trigger id's own lock is nobody else's: no loss there.
            self.ticks_taken_unfired += gone
            log.warning("cron: %d tick(s) of a shared lock_key taken in the lock store after their trigger was "
                        "unregistered here: the engines sharing the lock did not fire them (%d in all)", gone,
                        self.ticks_taken_unfired)

    async def fired(self, job_id: str, tick_ms: int, *, lock_key: str | None = None) -> bool:
        """See :class:`CronLock` (within the lock's memory of fired ticks); raises when Redis did not answer."""
        last = await self._redis.get(self._key(job_id, lock_key))
        return last is not None and int(last) >= tick_ms

    def _key(self, job_id: str, lock_key: str | None) -> str:
        return f"{self._prefix}cron_lock:{job_id}" if lock_key is None else f"{self._shared_prefix}{lock_key}"

    async def close(self) -> None:
        """Cancel the ticks not yet answered and close the connection pool."""
        asked, self._asked = self._asked, []
        for _, _, future in asked:
            future.cancel()
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        await self._redis.aclose()


def _tick_of(entry: tuple[str, int, asyncio.Future[bool]]) -> int:
    return entry[1]


def open_cron_lock(settings: CronSettings) -> CronLock:
    """The lock store the settings' ``adapter`` names."""
    adapter = settings.lock_adapter[1]
    if isinstance(adapter, RedisCronSettings):
        return RedisCronLock(adapter.redis_url, ttl_ms=adapter.lock_ttl_ms, key_prefix=adapter.key_prefix)
    return KvCronLock(adapter.lock_ttl_ms)
