"""A local OTLP/HTTP collector for tests: takes each POST to ``/v1/<signal>``, keeps it, answers as told.

Example::

    async with OtlpCollector() as collector:  # or the ``otlp_collector`` fixture of tests/integration/modules
        settings = {"exporter": "otlp", "endpoint": collector.url, ...}
        ...
        await until(lambda: collector.bodies("/v1/logs"))
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any

from aiohttp import web


class OtlpCollector:
    """``status``: what each POST is answered (200: taken); ``stall``: hold each POST unanswered until the collector
    closes (a collector that never answers)."""

    def __init__(self, *, status: int = 200, stall: bool = False) -> None:
        self.status = status
        self.stall = stall
        #: (path, body) of each POST, in the order they arrived (answered or not)
        self.requests: list[tuple[str, bytes]] = []
        #: set once a POST arrived
        self.arrived = asyncio.Event()
        self.port = 0
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The endpoint to configure (``/v1/<signal>`` is added by the exporter)."""
        return f"http://127.0.0.1:{self.port}"

    def bodies(self, path: str) -> list[Any]:
        """The JSON bodies of the POSTs to ``path`` (``/v1/logs``...), in order."""
        return [json.loads(body) for posted, body in self.requests if posted == path]

    async def __aenter__(self) -> OtlpCollector:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # an exported frame is up to max_frame_bytes
        app.router.add_post("/v1/{signal}", self._take)
        # a stalled handler is not waited for at cleanup beyond this
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _take(self, request: web.Request) -> web.Response:
        self.arrived.set()
        self.requests.append((request.path, await request.read()))
        if self.stall:
            await self._release.wait()
        return web.Response(status=self.status, text="{}")
