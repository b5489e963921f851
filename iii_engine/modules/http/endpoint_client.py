"""The HTTP client side of HTTP-invoked functions: a connection pool that never hands out a connection holding bytes
nobody asked for, and responses that read at most :data:`MAX_INTERIM_RESPONSES` interim responses before the final
one. Their bodies are decoded by :mod:`iii_engine.modules.http.content_coding`, whole or not at all.

Why not aiohttp's own: its pool gives an idle kept-alive connection to the next request even when the server wrote
on it while idle (a late second response), so that request read the other's answer as its own; and its automatic
decompression takes a gzip body that stops before its end (no last block, no checksum) for a whole one, so a
cut-off result passed for a complete one.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import aiohttp

from iii.loss_log import LossLog

log = logging.getLogger(__name__)

ACCEPT_ENCODING: Final = "gzip, deflate"
"""What the engine asks endpoints for, and all it decodes (a worker's headers may not change it)."""


class StaleConnectionError(aiohttp.ClientConnectionError):
    """Every idle connection the pool offered held bytes nobody asked for (a server writing on idle connections)."""


MAX_INTERIM_RESPONSES: Final = 16
"""Interim (1xx) responses one request takes before its final one: past it, the request fails. aiohttp's client reads
them in a loop with no end: an endpoint sending ``103 Early Hints`` for ever kept the engine's loop busy until the
call's timeout (10 such calls took other calls from 2-4 ms to 1.5-2.4 s)."""


class InterimResponsesError(aiohttp.ClientError):
    """An endpoint sent more than :data:`MAX_INTERIM_RESPONSES` interim (1xx) responses to one request."""


class BoundedResponse(aiohttp.ClientResponse):
    """aiohttp's response, reading at most :data:`MAX_INTERIM_RESPONSES` interim responses before the final one
    (the session's ``response_class``)."""

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        if protocol is None:
            return await super().start(connection)
        read = protocol.read
        interim = 0

        async def bounded_read() -> Any:
            nonlocal interim
            message, payload = await read()
            if 100 <= message.code < 200 and message.code != 101:  # (101 is final: aiohttp's own test)
                interim += 1
                if interim > MAX_INTERIM_RESPONSES:
                    raise InterimResponsesError(f"the endpoint sent more than {MAX_INTERIM_RESPONSES} interim (1xx) "
                                                f"responses, the latest {message.code}, before a final one")
            return message, payload

        # The protocol outlives the request (a kept-alive connection): its own read is back once the head is read.
        try:
            setattr(protocol, "read", bounded_read)  # noqa: B010 - an instance attribute over the class's method
        except AttributeError:  # a protocol class with slots (a later aiohttp): unbounded rather than no call at all
            return await super().start(connection)
        try:
            return await super().start(connection)
        finally:
            delattr(protocol, "read")


STRAY_BYTES_MEMORY_S: Final = 600.0
"""How long an endpoint that wrote on an idle connection gets a new connection per request."""
_MAX_STRAY_ENDPOINTS: Final = 4096
STRAY_LOG_INTERVAL_S: Final = 10.0


class FreshConnector(aiohttp.TCPConnector):
    """A :class:`aiohttp.TCPConnector` whose pooled connections are given out only if nothing arrived on them while
    they were idle: bytes there are an answer to no request of ours (a server's late second response), and the next
    request would read them as its own. Such a connection is closed and another taken, and that endpoint's
    connections are not kept alive for :data:`STRAY_BYTES_MEMORY_S` (each used for one request): a late answer
    arriving just after the next request went out cannot be told from that request's answer, so only not reusing
    the connection rules it out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # endpoint (aiohttp's connection key) -> until when it gets no reuse; in order of that time
        self._stray: dict[Any, float] = {}
        #: endpoints seen writing on an idle connection (each then served without reuse for a while)
        self.stray_endpoints = 0
        self._stray_log = LossLog(_log_stray, STRAY_LOG_INTERVAL_S)

    async def connect(self, req: Any, traces: Any, timeout: Any) -> aiohttp.connector.Connection:  # noqa: ASYNC109
        key = req.connection_key
        # Each stale connection is closed, so the pool shrinks by one per pass: bounded by its size, plus one.
        for _ in range(self.limit + 1 if self.limit else 1025):
            connection = await super().connect(req, traces, timeout)
            if _holds_unasked_bytes(connection):
                connection.close()
                self._no_reuse(key)
                continue
            until = self._stray.get(key)
            if until is not None:
                if time.monotonic() < until:
                    _not_kept_alive(connection)
                else:
                    del self._stray[key]
            return connection
        raise StaleConnectionError("every pooled connection held bytes no request asked for")

    def _no_reuse(self, key: Any) -> None:
        now = time.monotonic()
        if self._stray.pop(key, None) is None:  # (an endpoint seen again moves to the end: the order is expiry's)
            self.stray_endpoints += 1
            self._stray_log.lost("stray", f"{getattr(key, 'host', key)}:{getattr(key, 'port', '')}")
            if len(self._stray) >= _MAX_STRAY_ENDPOINTS:
                for expired in [k for k, until in self._stray.items() if until <= now] or [next(iter(self._stray))]:
                    del self._stray[expired]
        self._stray[key] = now + STRAY_BYTES_MEMORY_S

    def flush_log(self) -> None:
        """Write out the stray-endpoint warnings counted and not yet logged (at the module's stop)."""
        self._stray_log.close()


def _log_stray(counts: Any, latest: str | None) -> None:
    log.warning("HTTP functions: %d endpoint(s) wrote on an idle kept-alive connection (an answer to no request)%s: "
                "those connections are closed, and each such endpoint's connections are used for one request each "
                "for %d s", counts["stray"], f", latest {latest}" if latest else "", STRAY_BYTES_MEMORY_S)


def _not_kept_alive(connection: aiohttp.connector.Connection) -> None:
    """The connection is closed once its response is read, never pooled (aiohttp's protocol's own switch)."""
    protocol = connection.protocol
    force_close = getattr(protocol, "force_close", None)
    if callable(force_close):
        force_close()


def _holds_unasked_bytes(connection: aiohttp.connector.Connection) -> bool:
    """Whether a connection about to carry a request already holds (part of) a response: a fresh connection or a
    clean idle one does not. ``should_close`` is aiohttp's own test for a connection it will not pool."""
    protocol = connection.protocol
    return bool(getattr(protocol, "should_close", False)) if protocol is not None else False
