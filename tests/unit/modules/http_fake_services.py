""":class:`FakeServices` with what the HTTP functions module needs beyond it (``HttpCore``): the engine's
configuration and its worker events, which a test can emit.

Example::

    services = HttpFakeServices(EngineConfig(max_message_size=4096))
    module = HttpFunctionsModule(services, {"security": {...}})
    services.emit_worker_event("worker_disconnected", "w1")
"""

from __future__ import annotations

from collections.abc import Callable

from fake_services import FakeServices

from iii_engine.config import EngineConfig


class HttpFakeServices(FakeServices):
    """:class:`FakeServices` with ``config``, worker listeners and connected workers."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        super().__init__()
        self.config = config or EngineConfig()
        self.worker_listeners: list[Callable[[str, str], None]] = []
        #: the workers connected, by id (a call made by one not here counts as left running by its worker)
        self.workers: dict[str, object] = {}

    def add_worker_listener(self, listener: Callable[[str, str], None]) -> None:
        self.worker_listeners.append(listener)

    def emit_worker_event(self, event: str, worker_id: str) -> None:
        for listener in self.worker_listeners:
            listener(event, worker_id)
