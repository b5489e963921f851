"""Settings of the stream module, and the store settings it shares with the state module.

Stream module keys (unknown keys refused, as production does):

- production: ``port`` (3112; 0 = a free port), ``host`` (``127.0.0.1`` here; production binds ``0.0.0.0``),
  ``auth_function`` (a function id), ``adapter {class, config}`` (see :mod:`iii_engine.modules.stream.store`);
- ours: ``store_url`` (any ``iii_streams`` URL, wins over ``adapter``), ``auth_reject`` (ST5, default false),
  ``client_queue_size`` (frames a client may fall behind before it is closed with 1013; default 1024),
  ``client_queue_bytes`` (the same in bytes of queued frames; default 32 MiB),
  ``max_queued_bytes`` (bytes of frames waiting for all clients together, each frame once, the frame being written
  to a client and its next one not counted; past it the client with the most waiting behind its next frame is
  closed with 1013; default 256 MiB),
  ``slow_close_timeout_ms`` (how long that close may wait for a client that stopped reading to take the close
  frame before the connection is reset, and how long a client may take nothing of a frame being written to it, a
  sync or an event, before it is reset; default 10,000),
  ``max_clients`` (socket connections, counted from their TCP accept: those still in their opening handshake or
  auth call count with the connected clients; default a quarter of the process's open-file limit ``RLIMIT_NOFILE``,
  at most 10,000; past it a new connection takes the place of the oldest that has not sent its whole upgrade
  request yet, which is closed; else a few more connections are kept only to answer their request with HTTP 503
  naming the setting, and any beyond those is closed as it is accepted),
  ``join_timeout_ms`` (how long one socket join, its ``stream:join`` handlers and its sync read, may take; default
  10,000; past it the client gets an ``error`` event with code ``join_timeout``),
  ``custom_stream_fallback`` (default false: a stream a worker served through ``create_stream`` fails with
  ``stream_unavailable`` while no worker serves it; true: production's silent fall back to the engine's store),
  ``custom_streams`` (names served by workers, known as such from start-up, before any worker registers them;
  a name starting with ``__iii_``, the engine's own, is refused),
  ``custom_call_timeout_ms`` (how long the module waits for a worker's ``stream::<op>(NAME)``; default 30,000).
  Every ``*_timeout_ms`` is at most 10**12 (:data:`MAX_TIMEOUT_MS`).

Example:
    >>> StreamSettings.parse({"port": 0, "store_url": "memory://"}).port
    0
    >>> StreamSettings.parse({"adapter": {"class": "modules::stream::adapters::RedisAdapter",
    ...                                   "config": {"redis_url": "http://r"}}})
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: adapter.config.redis_url: must be a redis://, rediss:// or unix:// URL, \
got 'http://r'
"""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar, Literal, Self

from pydantic import field_validator, model_validator

from ...fd_limits import open_files_share
from ...settings import MAX_TIMEOUT_MS, AdapterSpec, Field, NonEmpty, Port, Settings, UnknownKeys, pick_adapter
from .. import bridge as _bridge  # noqa: F401 - the package before its modules (CPython gh-83065)
from ..bridge.settings import BridgeAdapterSettings
from .inputs import reserved_name

__all__ = ["MAX_TIMEOUT_MS", "KvStoreSettings", "RedisStoreSettings", "SocketSettings", "StateSettings",
           "StoreSettings", "StreamSettings", "default_max_clients"]

DEFAULT_REDIS_URL = "redis://localhost:6379"
_REDIS_PREFIXES = ("redis://", "rediss://", "unix://")


class KvStoreSettings(Settings):
    """``…::adapters::KvStore``: in memory, or ``file_based`` (kept in SQLite under ``file_path``)."""

    store_method: Literal["in_memory", "file_based"] = "in_memory"
    file_path: NonEmpty = "kv_store_data.db"
    # production's write-behind knobs: accepted; a SQLite file needs neither
    save_interval_ms: int | None = Field(None, ge=0)
    channel_size: int | None = Field(None, ge=0)


class RedisStoreSettings(Settings):
    """``…::adapters::RedisAdapter``: the Redis server."""

    redis_url: str = DEFAULT_REDIS_URL

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        if not url.startswith(_REDIS_PREFIXES):
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL, got {url!r}")
        return url


class StoreSettings(Settings):
    """Where a module keeps its data: ``store_url`` (ours, wins) or a production ``adapter``."""

    store_kind: ClassVar[Literal["stream", "state"]] = "stream"

    adapter: AdapterSpec | None = None
    store_url: NonEmpty | None = None

    @cached_property
    def store_adapter(self) -> tuple[str, Settings]:
        """The adapter's short class name (``KvStore``, ``RedisAdapter``, ``Bridge``) and its settings."""
        prefix = f"modules::{self.store_kind}::adapters::"
        class_name, settings = pick_adapter(self.adapter, f"{prefix}KvStore", {
            f"{prefix}KvStore": KvStoreSettings, f"{prefix}RedisAdapter": RedisStoreSettings,
            f"{prefix}Bridge": BridgeAdapterSettings})
        return class_name.removeprefix(prefix), settings

    @model_validator(mode="after")
    def _adapter_checked(self) -> Self:
        if self.store_url is None:
            self.store_adapter  # noqa: B018 - validates the adapter's config now, not when the store opens
        return self


class StateSettings(StoreSettings):
    """The state module's settings: only its store (unknown keys are logged and ignored)."""

    store_kind: ClassVar[Literal["stream", "state"]] = "state"
    unknown_keys: ClassVar[UnknownKeys] = "warn"
    label: ClassVar[str] = "state settings"


DEFAULT_SLOW_CLOSE_TIMEOUT_MS = 10_000
"""How long a slow stream client's 1013 close waits for it by default (``slow_close_timeout_ms``)."""


DEFAULT_CLIENT_QUEUE_BYTES = 32 * 1024 * 1024
"""How many bytes of frames a stream client may fall behind by default (``client_queue_bytes``)."""

DEFAULT_MAX_QUEUED_BYTES = 256 * 1024 * 1024
"""How many bytes of frames may wait for all stream clients together by default (``max_queued_bytes``)."""

DEFAULT_JOIN_TIMEOUT_MS = 10_000
"""How long a stream socket join (its handlers and its sync read) may take by default (``join_timeout_ms``)."""

MAX_DEFAULT_CLIENTS = 10_000
"""``max_clients`` by default: at most this many, and at most a quarter of the open-file limit (see
:func:`default_max_clients`)."""


def default_max_clients() -> int:
    """A quarter of the process's soft open-file limit, at most :data:`MAX_DEFAULT_CLIENTS`.

    Why: each client holds a file descriptor; 10,000 whatever the limit let stream clients under ``ulimit -n 1024``
    take every descriptor, and then workers could not connect. The REST API's connections take half the limit
    (``max_connections``); the last quarter stays for workers, stores and files.

    Example:
        >>> import resource
        >>> soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        >>> default_max_clients() == (min(soft // 4, 10_000) if soft != resource.RLIM_INFINITY else 10_000)
        True
    """
    return open_files_share(4, at_most=MAX_DEFAULT_CLIENTS)


class SocketSettings(Settings):
    """Listener settings of the client stream socket."""

    host: str = "127.0.0.1"
    port: Port = 3112
    auth_function: str | None = None
    auth_reject: bool = False
    client_queue_size: int = Field(1024, ge=1)
    #: ours: bytes of queued frames a client may fall behind before it is closed with 1013 (events of big items
    #: reach the frame count late: 1024 frames of 4 MiB items are 4 GiB held for one client that stopped reading)
    client_queue_bytes: int = Field(DEFAULT_CLIENT_QUEUE_BYTES, ge=1)
    #: ours: bytes of frames waiting for all clients together (each frame once, however many clients it waits for;
    #: neither the frame being written to a client nor its next one counted); past it the client furthest behind is
    #: closed with 1013 (client_queue_bytes alone let each of max_clients silent clients hold 32 MiB of its own
    #: syncs: 20 of them took an engine from 68 to 682 MB)
    max_queued_bytes: int = Field(DEFAULT_MAX_QUEUED_BYTES, ge=1)
    #: ours: a slow client's 1013 close waits this long for it to read up to the close frame, then resets it (a
    #: client that resumes reading within it still learns why it was closed; one that never does is not held); a
    #: client that takes no byte of a frame being written to it for this long is reset too (one that joined a big
    #: group and never read held its sync, under client_queue_bytes, for as long as its connection lived)
    slow_close_timeout_ms: int = Field(DEFAULT_SLOW_CLOSE_TIMEOUT_MS, ge=1, le=MAX_TIMEOUT_MS)
    #: ours: joins past this many live subscriptions on one socket are refused with an ``error`` event
    max_subscriptions_per_client: int = Field(1000, ge=1)
    #: ours: socket connections from their TCP accept, in their handshake or served; one more takes the place of
    #: the oldest that has not sent its whole upgrade request, else it is refused (HTTP 503 to its request, or closed
    #: as accepted past the few kept for that answer). None: derived from the process's open-file limit when read
    #: (:func:`default_max_clients`)
    max_clients_setting: int | None = Field(None, ge=1, alias="max_clients")
    #: ours: how long one join may take, its ``stream:join`` handlers and its sync read together; past it the
    #: client gets an ``error`` event (code ``join_timeout``) and the socket goes on with its next message
    join_timeout_ms: int = Field(DEFAULT_JOIN_TIMEOUT_MS, ge=1, le=MAX_TIMEOUT_MS)

    @field_validator("auth_function")
    @classmethod
    def _empty_is_none(cls, function_id: str | None) -> str | None:
        return function_id or None

    @property
    def max_clients(self) -> int:
        """Socket connections at most, counted from their TCP accept (handshakes under way too); one more is
        refused.

        Example:
            >>> SocketSettings.parse({"max_clients": 3}).max_clients
            3
        """
        if self.max_clients_setting is not None:
            return self.max_clients_setting
        return default_max_clients()


class StreamSettings(SocketSettings, StoreSettings):
    """Parsed stream module settings."""

    label: ClassVar[str] = "stream settings"

    custom_stream_fallback: bool = False
    custom_streams: frozenset[NonEmpty] = Field(frozenset(), strict=False)
    #: ours: how long the module waits for a worker's stream::<op>(NAME) (a composed update holds the item's lock
    #: across its get and set); past it the call fails with the invocation's timeout
    custom_call_timeout_ms: int = Field(30_000, ge=1, le=MAX_TIMEOUT_MS)

    @field_validator("custom_streams")
    @classmethod
    def _not_reserved(cls, names: frozenset[str]) -> frozenset[str]:
        # a worker's stream::<op>(__iii_...) is never called, so such a name was accepted and did nothing
        for name in sorted(names):
            refusal = reserved_name(name)
            if refusal is not None:
                raise ValueError(f"{refusal}, so no worker can serve it")
        return names
