"""Settings of the pubsub module: ``adapter`` (``modules::pubsub::LocalAdapter``, the default, or
``modules::pubsub::RedisAdapter`` with ``redis_url``). Unknown keys are logged and ignored.

Example:
    >>> PubSubSettings.parse({"adapter": {"class": "modules::pubsub::RedisAdapter"}})
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: adapter.config.redis_url: is required
"""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar, Self

from pydantic import model_validator

from ...settings import AdapterSpec, NoSettings, RedisAdapterSettings, Settings, UnknownKeys, pick_adapter

__all__ = ["LOCAL_ADAPTER", "REDIS_ADAPTER", "PubSubSettings"]

LOCAL_ADAPTER = "modules::pubsub::LocalAdapter"
REDIS_ADAPTER = "modules::pubsub::RedisAdapter"


class PubSubSettings(Settings):
    """The pubsub module's settings."""

    unknown_keys: ClassVar[UnknownKeys] = "warn"
    label: ClassVar[str] = "pubsub settings"

    adapter: AdapterSpec | None = None

    @cached_property
    def bus_adapter(self) -> tuple[str, Settings]:
        """The adapter class and its settings."""
        return pick_adapter(self.adapter, LOCAL_ADAPTER,
                            {LOCAL_ADAPTER: NoSettings, REDIS_ADAPTER: RedisAdapterSettings})

    @model_validator(mode="after")
    def _checked(self) -> Self:
        self.bus_adapter  # noqa: B018 - validates the adapter's config at start-up
        return self
