"""Which ``iii_streams`` backend an engine module keeps its data in, chosen from the module settings.

Production adapter classes map to our backends; our own ``store_url`` key (any :func:`iii_streams.open_stream`
URL) wins over ``adapter`` when both are given:

============================================  ==================================================================
``modules::stream::adapters::KvStore``        :class:`~iii_streams.MemoryStream`; ``store_method: file_based``
(and ``modules::state::adapters::KvStore``)   keeps the data in SQLite at ``<file_path>/iii_<kind>.sqlite3``
``…::adapters::RedisAdapter``                 :class:`~iii_streams.RedisStream` on ``redis_url``
                                              (default ``redis://localhost:6379``)
``…::adapters::Bridge``                       a remote engine's store (:mod:`~iii_engine.modules.bridge_stores`)
============================================  ==================================================================

The state module's Redis store (through ``RedisAdapter`` or a ``redis://`` ``store_url``) uses the production
state layout, hash ``state:<scope>`` (:data:`iii_streams.redis.STATE_LAYOUT`), so our engine and a production
engine share state through one Redis; memory and SQL stores keep state under an internal stream name.

The stream module lets its store publish the change events of store writes (``publish_events=True``: one Redis
round trip for write + event, as production's scripts do) and publishes the rest (custom streams, ``send``)
itself; the state module has no event feed and opens its store with ``publish_events=False``.

Example:
    >>> type(open_module_store("stream", {})).__name__
    'MemoryStream'
    >>> open_module_store("state", {"adapter": {"class": "modules::state::adapters::Bridge",
    ...                                         "config": {"bridge_url": "http://x"}}})
    Traceback (most recent call last):
    ...
    iii_engine.modules.stream_store.StoreConfigError: state store: bridge_url: engine URL 'http://x' has scheme \
'http'; expected ws:// or wss://
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from iii_streams import Backend, MemoryStream, open_stream
from iii_streams.urls import scheme_of

__all__ = ["StoreConfigError", "open_module_store"]

log = logging.getLogger("iii_engine.stream_store")

Kind = Literal["stream", "state"]

_KV_KEYS = frozenset({"store_method", "file_path", "save_interval_ms", "channel_size"})
_REDIS_KEYS = frozenset({"redis_url"})
_DEFAULT_REDIS_URL = "redis://localhost:6379"
_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


class StoreConfigError(ValueError):
    """The store settings name an unknown adapter or carry a bad value; the message says which."""


def _adapter(kind: Kind, raw: Any) -> tuple[str, Mapping[str, Any]]:
    if raw is None:
        return f"modules::{kind}::adapters::KvStore", {}
    if not isinstance(raw, Mapping) or not isinstance(raw.get("class"), str):
        raise StoreConfigError(f"{kind} store: 'adapter' must be a mapping with a string 'class', got {raw!r}")
    settings = raw.get("config") or {}
    if not isinstance(settings, Mapping):
        raise StoreConfigError(f"{kind} store: 'adapter.config' must be a mapping, got {type(settings).__name__}")
    return raw["class"], settings


def _unknown(kind: Kind, class_name: str, settings: Mapping[str, Any], allowed: frozenset[str]) -> None:
    extra = sorted(set(settings) - allowed)
    if extra:
        raise StoreConfigError(f"{kind} store: unknown key {extra[0]!r} for {class_name} "
                               f"(allowed: {', '.join(sorted(allowed))})")


def _kv_store(kind: Kind, class_name: str, settings: Mapping[str, Any], events: bool) -> Backend:
    _unknown(kind, class_name, settings, _KV_KEYS)
    method = settings.get("store_method", "in_memory")
    if method == "in_memory":
        return MemoryStream(publish_events=events)
    if method != "file_based":
        raise StoreConfigError(f"{kind} store: store_method must be in_memory or file_based, got {method!r}")
    directory = settings.get("file_path", "kv_store_data.db")
    if not isinstance(directory, str) or not directory:
        raise StoreConfigError(f"{kind} store: file_path must be a directory path, got {directory!r}")
    # production writes one file per index every save_interval_ms; a SQLite file gives the same durability
    # with nothing lost between saves
    Path(directory).mkdir(parents=True, exist_ok=True)
    path = Path(directory).resolve() / f"iii_{kind}.sqlite3"
    log.info("%s store: file_based KvStore kept in SQLite at %s", kind, path)
    return open_stream(f"sqlite+aiosqlite:///{path}", publish_events=events, create=True)


def _open_url(kind: Kind, url: str, publish_events: bool) -> Backend:
    options: dict[str, Any] = {"publish_events": publish_events}
    if kind == "state" and scheme_of(url) in _REDIS_SCHEMES:
        from iii_streams.redis import STATE_LAYOUT  # imported here: redis is only needed for Redis stores

        options["layout"] = STATE_LAYOUT
    return open_stream(url, **options)


def open_module_store(kind: Kind, config: Mapping[str, Any], *, publish_events: bool = False) -> Backend:
    """The backend for the ``stream`` or ``state`` module configured by ``config`` (its whole settings mapping).

    Example:
        >>> open_module_store("stream", {"store_url": "memory://"}).publish_events
        False
    """
    url = config.get("store_url")
    if url is not None:
        if not isinstance(url, str) or not url:
            raise StoreConfigError(f"{kind} store: 'store_url' must be a non-empty string, got {url!r}")
        try:
            return _open_url(kind, url, publish_events)
        except ValueError as exc:
            raise StoreConfigError(f"{kind} store: {exc}") from None
    class_name, settings = _adapter(kind, config.get("adapter"))
    prefix = f"modules::{kind}::adapters::"
    short = class_name[len(prefix):] if class_name.startswith(prefix) else None
    if short == "KvStore":
        return _kv_store(kind, class_name, settings, publish_events)
    if short == "RedisAdapter":
        _unknown(kind, class_name, settings, _REDIS_KEYS)
        redis_url = settings.get("redis_url", _DEFAULT_REDIS_URL)
        if not isinstance(redis_url, str) or not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise StoreConfigError(f"{kind} store: redis_url must be a redis://, rediss:// or unix:// URL, "
                                   f"got {redis_url!r}")
        return _open_url(kind, redis_url, publish_events)
    if short == "Bridge":
        from .bridge_stores import open_bridge_store  # the data lives on a remote engine

        try:
            return open_bridge_store(kind, class_name, settings)
        except ValueError as exc:
            raise StoreConfigError(str(exc)) from None
    raise StoreConfigError(f"{kind} store: unknown adapter class {class_name!r} (expected {prefix}KvStore, "
                           f"{prefix}RedisAdapter or a store_url)")
