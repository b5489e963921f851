"""``register_worker`` at a server that is not an iii engine logs its failure once: the tries before it gives up
(a 404 gets three) were each logged as a warning of their own, telling one failure up to three times. Once a client
has connected, each failed try is a failure of its own and is still logged."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from iii import InitOptions, ReconnectionConfig, register_worker
from iii.connection import NOT_AN_ENGINE_TRIES

FAST = ReconnectionConfig(initial_delay_ms=10, max_delay_ms=20, jitter_factor=0.0)

pytestmark = pytest.mark.timeout(30)


class _HttpServers:
    """Plain aiohttp servers answering every request with one status, on a loop and thread of their own."""

    def __init__(self) -> None:
        self.hits = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def start(self, status: int) -> str:
        async def answer(_request: web.Request) -> web.Response:
            self.hits += 1
            return web.Response(status=status, text="not here\n")

        async def up() -> str:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", answer)
            runner = web.AppRunner(app)
            await runner.setup()
            self.runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.Server)
            return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"

        return asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)

    def stop(self) -> None:
        for runner in self.runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def http_servers() -> Iterator[_HttpServers]:
    servers = _HttpServers()
    yield servers
    servers.stop()


def _told(caplog: pytest.LogCaptureFixture, url: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("iii") and url in r.getMessage()]


@pytest.mark.parametrize("status", [404, 403])
def test_an_http_server_that_is_no_engine_is_told_once(
        http_servers: _HttpServers, caplog: pytest.LogCaptureFixture, status: int) -> None:
    caplog.set_level(logging.DEBUG, logger="iii")
    url = http_servers.start(status)
    with pytest.raises(ConnectionError, match=f"did not answer as an iii engine: HTTP {status}"):
        register_worker(url, InitOptions(reconnection_config=FAST))
    assert http_servers.hits == (NOT_AN_ENGINE_TRIES if status == 404 else 1)
    told = _told(caplog, url)
    assert len(told) == 1, told
    assert f"did not answer as an iii engine: HTTP {status}" in told[0]


def test_a_server_closing_at_once_is_retried_and_each_failed_try_told_once(
        caplog: pytest.LogCaptureFixture) -> None:
    # Closed before any answer is what a forwarder with no engine behind it yet does: retried, not "no engine".
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = 0

    def close_each() -> None:
        nonlocal accepted
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted += 1
            conn.close()

    thread = threading.Thread(target=close_each, daemon=True)
    thread.start()
    url = f"ws://127.0.0.1:{listener.getsockname()[1]}"
    config = ReconnectionConfig(initial_delay_ms=10, max_delay_ms=20, jitter_factor=0.0, max_retries=2)
    try:
        with pytest.raises(ConnectionError, match="failed after max retries"):
            register_worker(url, InitOptions(reconnection_config=config))
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone does not)
        listener.close()
        thread.join(10)
    told = _told(caplog, url)
    assert accepted == 3
    assert len([m for m in told if m.startswith(f"Connection to {url} failed")]) == 3, told
    assert not any("not an iii engine" in m for m in told), told
