"""Settings of the cron module: ``adapter: {class, config}`` with ``modules::cron::KvCronAdapter`` (default,
in-process; ``lock_ttl_ms``, ``lock_index``) or ``modules::cron::RedisCronAdapter`` (``redis_url``,
``lock_ttl_ms``; ours: ``key_prefix``). Unknown keys are logged and ignored.

Example:
    >>> CronSettings.parse({"adapter": {"class": "modules::cron::KvCronAdapter", "config": {"lock_ttl_ms": 0}}})
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: adapter.config.lock_ttl_ms: must be >= 1, got 0
"""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar, Self

from pydantic import model_validator

from ...settings import AdapterSpec, Field, RedisAdapterSettings, Settings, UnknownKeys, pick_adapter

__all__ = ["DEFAULT_LOCK_TTL_MS", "KV_ADAPTER", "MAX_LOCK_TTL_MS", "REDIS_ADAPTER", "CronSettings", "KvCronSettings",
           "RedisCronSettings"]

DEFAULT_LOCK_TTL_MS = 30_000
#: longest lock TTL accepted (~31 years): Redis refuses a ``SET … PX`` past its integer range, so a larger one
#: failed every tick of every trigger at run time instead of at start
MAX_LOCK_TTL_MS = 10**12
KV_ADAPTER = "modules::cron::KvCronAdapter"
REDIS_ADAPTER = "modules::cron::RedisCronAdapter"


class KvCronSettings(Settings):
    """``KvCronAdapter``: one engine; the lock only keeps it from firing a tick twice."""

    unknown_keys: ClassVar[UnknownKeys] = "warn"
    label: ClassVar[str] = "cron adapter.config"

    lock_ttl_ms: int = Field(DEFAULT_LOCK_TTL_MS, ge=1, le=MAX_LOCK_TTL_MS)
    lock_index: str | None = None  # production's key space for the lock; one process needs none


class RedisCronSettings(RedisAdapterSettings):
    """``RedisCronAdapter``: engines sharing the Redis fire each tick once."""

    lock_ttl_ms: int = Field(DEFAULT_LOCK_TTL_MS, ge=1, le=MAX_LOCK_TTL_MS)


class CronSettings(Settings):
    """The cron module's settings."""

    unknown_keys: ClassVar[UnknownKeys] = "warn"
    label: ClassVar[str] = "cron settings"

    adapter: AdapterSpec | None = None

    @cached_property
    def lock_adapter(self) -> tuple[str, KvCronSettings | RedisCronSettings]:
        """The adapter class and its settings."""
        class_name, settings = pick_adapter(self.adapter, KV_ADAPTER,
                                            {KV_ADAPTER: KvCronSettings, REDIS_ADAPTER: RedisCronSettings})
        assert isinstance(settings, KvCronSettings | RedisCronSettings)
        return class_name, settings

    @model_validator(mode="after")
    def _checked(self) -> Self:
        self.lock_adapter  # noqa: B018 - validates the adapter's config at start-up
        return self
