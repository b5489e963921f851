"""The ``adapter: {class, config}`` setting the queue, pubsub and cron modules share (production names).

Example:
    >>> config = {"adapter": {"class": "x::RedisAdapter", "config": {"redis_url": "redis://r"}}}
    >>> choice = adapter_choice(config, "x::KvAdapter")
    >>> choice.class_name, choice.redis_url()
    ('x::RedisAdapter', 'redis://r')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AdapterChoice", "adapter_choice"]


@dataclass(frozen=True)
class AdapterChoice:
    """The adapter class a module config names and that adapter's own ``config``.

    Example:
        >>> AdapterChoice("x::RedisAdapter", {}).redis_url()
        Traceback (most recent call last):
        ...
        ValueError: x::RedisAdapter needs a string 'redis_url' in its config
    """

    class_name: str
    settings: Mapping[str, Any]

    def redis_url(self) -> str:
        """The ``redis_url`` setting; ``ValueError`` naming the adapter when it is missing or not a string."""
        url = self.settings.get("redis_url")
        if not isinstance(url, str):
            raise ValueError(f"{self.class_name} needs a string 'redis_url' in its config")
        return url


def adapter_choice(config: Mapping[str, Any], default_class: str) -> AdapterChoice:
    """Read ``config["adapter"]``; an absent adapter or class means ``default_class``.

    Example:
        >>> adapter_choice({}, "modules::pubsub::LocalAdapter")
        AdapterChoice(class_name='modules::pubsub::LocalAdapter', settings={})
    """
    adapter = config.get("adapter") or {}
    return AdapterChoice(adapter.get("class", default_class), adapter.get("config") or {})
