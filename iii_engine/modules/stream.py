"""Stream module (``modules::stream::StreamModule``, protocol/streams.md §6): the ``stream::*`` functions, the
``stream``, ``stream:join`` and ``stream:leave`` trigger types, and the client stream socket.

Settings (unknown keys rejected, as production does):

- production: ``port`` (3112; 0 = a free port, read it back from :attr:`StreamModule.port`), ``host``
  (``127.0.0.1`` here; production binds ``0.0.0.0``), ``auth_function`` (a function id), ``adapter {class,
  config}`` (see :mod:`iii_engine.modules.stream_store`);
- ours: ``store_url`` (any ``iii_streams`` URL, wins over ``adapter``), ``auth_reject`` (ST5, default false),
  ``client_queue_size`` (frames a client may fall behind before it is closed with 1013; default 1024),
  ``custom_stream_fallback`` (default false: a stream a worker served through ``create_stream`` fails with
  ``stream_unavailable`` while no worker serves it; true: production's silent fall back to the engine's store),
  ``custom_streams`` (names served by workers, known as such from start-up, before any worker registers them).

Example:
    >>> StreamSettings.parse({"port": 0, "store_url": "memory://"}).socket.port
    0
    >>> StreamSettings.parse({"prot": 1})
    Traceback (most recent call last):
    ...
    iii_engine.modules.stream.StreamSettingsError: stream settings: unknown key 'prot' (allowed: adapter, \
auth_function, auth_reject, client_queue_size, custom_stream_fallback, custom_streams, host, port, store_url)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from iii_streams import Backend

from .base import EngineModule, EngineServices
from .stream_api import StreamFunctions
from .stream_socket import SocketSettings, StreamSocketServer
from .stream_store import open_module_store
from .stream_triggers import JoinLeaveTriggers, StreamTriggers

__all__ = ["StreamModule", "StreamSettings", "StreamSettingsError"]

_KEYS = frozenset({"port", "host", "auth_function", "adapter", "store_url", "auth_reject", "client_queue_size",
                   "custom_stream_fallback", "custom_streams"})


class StreamSettingsError(ValueError):
    """A stream module setting is unknown or has the wrong type; the message names it."""


@dataclass(frozen=True)
class StreamSettings:
    """Parsed stream module settings; ``store`` is the raw mapping the store is chosen from."""

    socket: SocketSettings
    store: Mapping[str, Any]
    custom_stream_fallback: bool = False
    custom_streams: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> StreamSettings:
        """Validate ``raw`` (the module's ``config`` mapping)."""
        extra = sorted(set(raw) - _KEYS)
        if extra:
            allowed = ", ".join(sorted(_KEYS))
            raise StreamSettingsError(f"stream settings: unknown key {extra[0]!r} (allowed: {allowed})")
        defaults = SocketSettings()
        port = raw.get("port", defaults.port)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise StreamSettingsError(f"stream settings: 'port' must be an integer 0-65535, got {port!r}")
        host = raw.get("host", defaults.host)
        if not isinstance(host, str):
            raise StreamSettingsError(f"stream settings: 'host' must be a string, got {host!r}")
        auth = raw.get("auth_function")
        if auth is not None and not isinstance(auth, str):
            raise StreamSettingsError(f"stream settings: 'auth_function' must be a function id, got {auth!r}")
        reject = raw.get("auth_reject", False)
        if not isinstance(reject, bool):
            raise StreamSettingsError(f"stream settings: 'auth_reject' must be true or false, got {reject!r}")
        size = raw.get("client_queue_size", defaults.client_queue_size)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise StreamSettingsError(f"stream settings: 'client_queue_size' must be a positive integer, got {size!r}")
        fallback = raw.get("custom_stream_fallback", False)
        if not isinstance(fallback, bool):
            raise StreamSettingsError(
                f"stream settings: 'custom_stream_fallback' must be true or false, got {fallback!r}")
        custom = raw.get("custom_streams", [])
        if not isinstance(custom, list) or not all(isinstance(name, str) and name for name in custom):
            raise StreamSettingsError(
                f"stream settings: 'custom_streams' must be a list of non-empty stream names, got {custom!r}")
        store = {k: raw[k] for k in ("adapter", "store_url") if k in raw}
        return cls(SocketSettings(host, port, auth or None, reject, size), store, fallback, frozenset(custom))


class StreamModule(EngineModule):
    """Streams in the engine: functions, triggers, the client socket, and the engine's own store.

    Example:
        >>> StreamModule.class_names
        ('modules::stream::StreamModule',)
    """

    name: ClassVar[str] = "stream"
    class_names: ClassVar[tuple[str, ...]] = ("modules::stream::StreamModule",)
    has_listener: ClassVar[bool] = True

    def __init__(self, services: EngineServices, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self.settings = StreamSettings.parse(self.config)
        self.store: Backend | None = None
        self.functions: StreamFunctions | None = None
        self.socket: StreamSocketServer | None = None
        self._triggers: list[StreamTriggers | JoinLeaveTriggers] = []

    @property
    def port(self) -> int:
        """The bound port of the client stream socket."""
        if self.socket is None:
            raise RuntimeError("the stream module is not started")
        return self.socket.port

    @property
    def url(self) -> str:
        """``ws://host:port/`` of the client stream socket."""
        if self.socket is None:
            raise RuntimeError("the stream module is not started")
        return self.socket.url

    async def start(self) -> None:
        """Open the store, register functions and trigger types, then listen for clients."""
        self.store = open_module_store("stream", self.settings.store, publish_events=True)
        changes, join, leave = (StreamTriggers(self.services), JoinLeaveTriggers(self.services),
                                JoinLeaveTriggers(self.services))
        self._triggers = [changes, join, leave]
        self.functions = StreamFunctions(self.services, self.store, changes,
                                         fallback=self.settings.custom_stream_fallback,
                                         served=self.settings.custom_streams)
        self.socket = StreamSocketServer(self.services, self.settings.socket, self.functions, self.store, join, leave)
        try:
            await self.socket.start()
        except BaseException:
            await self.store.aclose()
            raise
        for function in self.functions.builtins():
            self.services.register_function(function)
        self.functions.follow_registrations()
        self.services.register_trigger_type("stream", "Stream item changes and custom events", changes)
        self.services.register_trigger_type("stream:join", "A client joined a stream subscription", join)
        self.services.register_trigger_type("stream:leave", "A client left a stream subscription", leave)

    async def stop(self) -> None:
        """Close the socket, cancel running trigger tasks and close the store."""
        if self.socket is not None:
            await self.socket.close()
        for triggers in self._triggers:
            await triggers.close()
        if self.store is not None:
            await self.store.aclose()
