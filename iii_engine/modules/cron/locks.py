"""Which engine fires a cron tick: each tick is fired by exactly one engine among those sharing a lock store. The
lock records the last tick fired per trigger, so an engine that wakes late can never fire a tick twice.

Example:
    >>> type(open_cron_lock(CronSettings())).__name__
    'KvCronLock'
"""

from __future__ import annotations

import time
from typing import Protocol

from .settings import DEFAULT_LOCK_TTL_MS, CronSettings, RedisCronSettings

__all__ = ["CronLock", "KvCronLock", "RedisCronLock", "open_cron_lock"]


# Atomically: fire only if this tick is newer than the last fired one, and remember it.
_TRY_FIRE_LUA = """
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
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
        remembered ``max(lock_ttl_ms, 60 s)``: an engine later than that for it may fire it again."""
        won = await self._script(keys=[self._key(job_id, lock_key)], args=[tick_ms, self._key_ms])
        return bool(won)

    async def fired(self, job_id: str, tick_ms: int, *, lock_key: str | None = None) -> bool:
        """See :class:`CronLock` (within the lock's memory of fired ticks); raises when Redis did not answer."""
        last = await self._redis.get(self._key(job_id, lock_key))
        return last is not None and int(last) >= tick_ms

    def _key(self, job_id: str, lock_key: str | None) -> str:
        return f"{self._prefix}cron_lock:{job_id}" if lock_key is None else f"{self._prefix}cron_lock_key:{lock_key}"

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def open_cron_lock(settings: CronSettings) -> CronLock:
    """The lock store the settings' ``adapter`` names."""
    adapter = settings.lock_adapter[1]
    if isinstance(adapter, RedisCronSettings):
        return RedisCronLock(adapter.redis_url, ttl_ms=adapter.lock_ttl_ms, key_prefix=adapter.key_prefix)
    return KvCronLock(adapter.lock_ttl_ms)
