"""The ``cron`` trigger type (modules.md §7.6): call a function on a seconds-precision UTC schedule.

Each tick is fired by exactly one engine among those sharing a lock store. The lock records the last tick
fired per trigger, so an engine that wakes late can never fire a tick twice, whatever the timing.

Config (production names): ``adapter: {class, config}`` with classes ``modules::cron::KvCronAdapter``
(default, in-process; ``lock_ttl_ms``, ``lock_index``) or ``modules::cron::RedisCronAdapter`` (``redis_url``;
ours: ``key_prefix``).

Example (engine configuration):
    >>> CronModule.class_names
    ('modules::cron::CronModule',)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from iii.iii_types import TriggerInfo

from .adapter_config import adapter_choice
from .base import EngineError, EngineModule, EngineServices
from .cron_expr import CronExpression, CronSyntaxError, rfc3339

DEFAULT_LOCK_TTL_MS = 30_000
REDIS_ADAPTER = "modules::cron::RedisCronAdapter"
KV_ADAPTER = "modules::cron::KvCronAdapter"

# Atomically: fire only if this tick is newer than the last fired one, and remember it.
_TRY_FIRE_LUA = """
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class CronLock(Protocol):
    """Decides which engine fires a tick."""

    async def try_fire(self, job_id: str, tick_ms: int) -> bool:
        """True exactly once per ``(job_id, tick_ms)`` among engines sharing this lock store."""

    async def close(self) -> None:
        """Release connections."""


class KvCronLock:
    """In-process lock: one engine, so it only guards against a tick being fired twice by the same engine.

    Example:
        >>> import asyncio
        >>> lock = KvCronLock()
        >>> asyncio.run(lock.try_fire("j", 1000)), asyncio.run(lock.try_fire("j", 1000))
        (True, False)
    """

    def __init__(self, ttl_ms: int = DEFAULT_LOCK_TTL_MS) -> None:
        self._ttl_ms = ttl_ms
        self._last: dict[str, tuple[int, float]] = {}

    async def try_fire(self, job_id: str, tick_ms: int) -> bool:
        """See :class:`CronLock`."""
        now = time.monotonic()
        last = self._last.get(job_id)
        if last is not None and last[1] > now and last[0] >= tick_ms:
            return False
        self._last[job_id] = (tick_ms, now + self._ttl_ms / 1000)
        return True

    async def close(self) -> None:
        """Nothing to release."""


class RedisCronLock:
    """Lock shared by every engine using the same Redis: key ``<prefix>cron_lock:<trigger id>``.

    Example:
        >>> lock = RedisCronLock("redis://127.0.0.1:6379/0", key_prefix="test:")  # doctest: +SKIP
    """

    def __init__(self, redis_url: str, *, ttl_ms: int = DEFAULT_LOCK_TTL_MS, key_prefix: str = "") -> None:
        from redis.asyncio import Redis

        self._redis: Redis = Redis.from_url(redis_url)
        self._ttl_ms = ttl_ms
        self._prefix = key_prefix
        self._script = self._redis.register_script(_TRY_FIRE_LUA)

    async def try_fire(self, job_id: str, tick_ms: int) -> bool:
        """See :class:`CronLock`."""
        won = await self._script(keys=[f"{self._prefix}cron_lock:{job_id}"], args=[tick_ms, self._ttl_ms])
        return bool(won)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def open_cron_lock(config: Mapping[str, Any]) -> CronLock:
    """Build the lock store named by a cron module config's ``adapter``.

    Example:
        >>> type(open_cron_lock({})).__name__
        'KvCronLock'
    """
    adapter = adapter_choice(config, KV_ADAPTER)
    ttl_ms = int(adapter.settings.get("lock_ttl_ms", DEFAULT_LOCK_TTL_MS))
    if adapter.class_name == KV_ADAPTER:
        return KvCronLock(ttl_ms)
    if adapter.class_name == REDIS_ADAPTER:
        return RedisCronLock(adapter.redis_url(), ttl_ms=ttl_ms,
                             key_prefix=str(adapter.settings.get("key_prefix", "")))
    raise ValueError(f"unknown cron adapter class {adapter.class_name!r} (expected {KV_ADAPTER} or {REDIS_ADAPTER})")


async def _sleep_until(moment: datetime) -> None:
    # A timed sleep, not synchronisation: wall-clock target, monotonic loop clock, so re-check and repeat.
    delay = (moment - datetime.now(UTC)).total_seconds()
    while delay > 0:
        await asyncio.sleep(delay)
        delay = (moment - datetime.now(UTC)).total_seconds()


def parse_trigger_expression(config: Any) -> CronExpression:
    """The schedule of a ``cron`` trigger config; :class:`EngineError` ``invalid_cron_expression`` if bad.

    Example:
        >>> parse_trigger_expression({"expression": "0 * * * * *"}).source
        '0 * * * * *'
    """
    expression = config.get("expression") if isinstance(config, dict) else None
    if not isinstance(expression, str) or not expression.strip():
        raise EngineError("invalid_cron_expression", "cron trigger config needs a non-empty 'expression'")
    try:
        return CronExpression.parse(expression)
    except CronSyntaxError as exc:
        raise EngineError("invalid_cron_expression", f"Invalid cron expression {expression!r}: {exc}") from exc


class CronModule(EngineModule):
    """Engine module providing the ``cron`` trigger type."""

    name: ClassVar[str] = "cron"
    class_names: ClassVar[tuple[str, ...]] = ("modules::cron::CronModule",)

    def __init__(self, services: EngineServices, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self._lock: CronLock | None = None
        self._schedules: dict[str, asyncio.Task[None]] = {}
        self._firings: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the lock store and register the trigger type."""
        self._lock = open_cron_lock(self.config)
        self.services.register_trigger_type("cron", "Run a function on a cron schedule (UTC, seconds)", self)

    async def stop(self) -> None:
        """Cancel every schedule and close the lock store."""
        tasks = [*self._schedules.values(), *self._firings]
        self._schedules.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._lock is not None:
            await self._lock.close()
            self._lock = None

    async def register(self, trigger: TriggerInfo) -> None:
        """Start the schedule; a missing or malformed expression rejects the trigger."""
        expression = parse_trigger_expression(trigger.config)
        await self.unregister(trigger)
        self._schedules[trigger.id] = asyncio.create_task(
            self._schedule(trigger, expression), name=f"cron:{trigger.id}"
        )

    async def unregister(self, trigger: TriggerInfo) -> None:
        """Stop the schedule of ``trigger.id`` (no-op if none)."""
        task = self._schedules.pop(trigger.id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _schedule(self, trigger: TriggerInfo, expression: CronExpression) -> None:
        tick = expression.next_after(datetime.now(UTC))
        while tick is not None:
            await _sleep_until(tick)
            task = asyncio.create_task(self._fire(trigger, tick), name=f"cron-fire:{trigger.id}")
            self._firings.add(task)
            task.add_done_callback(self._firings.discard)
            now = datetime.now(UTC)
            # After a long stall, skip missed ticks rather than firing a burst of them.
            tick = expression.next_after(tick if (now - tick).total_seconds() < 1 else now)

    async def _fire(self, trigger: TriggerInfo, tick: datetime) -> None:
        lock = self._lock
        if lock is None:
            return
        try:
            if not await lock.try_fire(trigger.id, int(tick.timestamp() * 1000)):
                return
        except Exception:
            self.services.log.exception("cron %s: lock store failed; tick %s skipped", trigger.id, tick)
            return
        payload = {
            "trigger": "cron",
            "job_id": trigger.id,
            "scheduled_time": rfc3339(tick),
            "actual_time": rfc3339(datetime.now(UTC)),
        }
        condition = trigger.config.get("condition_function_id") if isinstance(trigger.config, dict) else None
        if not await self.services.condition_passes(condition, payload):
            return
        self.services.fire(trigger.function_id, payload)
