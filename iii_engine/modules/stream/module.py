"""Stream module (``modules::stream::StreamModule``, docs/reference/payloads.md#streams-stream): the ``stream::*``
functions, the
``stream``, ``stream:join`` and ``stream:leave`` trigger types, and the client stream socket.

Settings: :class:`~iii_engine.modules.stream.settings.StreamSettings`.

Example:
    >>> StreamModule.class_names
    ('modules::stream::StreamModule',)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from iii_streams import Backend

from ...closing import close_store
from ..answers import AnswerBound, ConfiguredServices
from ..base import EngineModule
from .api import StreamFunctions
from .settings import StreamSettings
from .socket import StreamSocketServer
from .store import HEALTH_ITEM, open_module_store, prepare_module_store, store_health
from .triggers import JoinLeaveTriggers, StreamTriggers

__all__ = ["StreamModule"]


class StreamModule(EngineModule):
    """Streams in the engine: functions, triggers, the client socket, and the engine's own store.

    Example:
        >>> StreamModule.class_names
        ('modules::stream::StreamModule',)
    """

    name: ClassVar[str] = "stream"
    class_names: ClassVar[tuple[str, ...]] = ("modules::stream::StreamModule",)
    has_listener: ClassVar[bool] = True

    def __init__(self, services: ConfiguredServices, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self.core = services
        self.settings = StreamSettings.parse(self.config)
        self.store: Backend | None = None
        self.functions: StreamFunctions | None = None
        self.socket: StreamSocketServer | None = None
        self._triggers: list[StreamTriggers | JoinLeaveTriggers] = []

    def listen_address(self) -> tuple[str, int] | None:
        """Where the client stream socket is to listen (see :meth:`EngineModule.listen_address`)."""
        return self.settings.host, self.settings.port

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
        self.store = await prepare_module_store(
            "stream", open_module_store("stream", self.settings, publish_events=True))
        changes, join, leave = (StreamTriggers(self.services), JoinLeaveTriggers(self.services),
                                JoinLeaveTriggers(self.services))
        self._triggers = [changes, join, leave]
        self.functions = StreamFunctions(self.services, self.store, changes,
                                         fallback=self.settings.custom_stream_fallback,
                                         served=self.settings.custom_streams,
                                         call_timeout_s=self.settings.custom_call_timeout_ms / 1000,
                                         answers=AnswerBound(self.core.config.max_message_size))
        self.socket = StreamSocketServer(self.services, self.settings, self.functions, self.store, join, leave)
        try:
            await self.socket.start()
        except BaseException:
            store, self.store = self.store, None  # closed here: the stop after a failed start need not wait again
            await close_store(store.aclose(), f"the stream module's store ({type(store).__name__})")
            raise
        for function in self.functions.builtins():
            self.services.register_function(function)
        self.functions.follow_registrations()
        self.services.register_trigger_type("stream", "Stream item changes and custom events", changes)
        self.services.register_trigger_type("stream:join", "A client joined a stream subscription", join)
        self.services.register_trigger_type("stream:leave", "A client left a stream subscription", leave)

    async def health(self) -> dict[str, dict[str, Any]]:
        """``stream``: whether the store answers a read now (see
        :func:`~iii_engine.modules.stream.store.store_health`)."""
        return {"stream": await store_health(self.store, HEALTH_ITEM)}

    async def stop(self) -> None:
        """Close the socket, cancel running trigger tasks and close the store."""
        if self.socket is not None:
            await self.socket.close()
        for triggers in self._triggers:
            await triggers.close()
        if self.store is not None:
            await close_store(self.store.aclose(), f"the stream module's store ({type(self.store).__name__})")
