"""The URLs the engine and its listening modules hand out reach them when they listen on an IPv6 address.

Before: with ``host: "::1"`` the engine's own ``url`` was ``ws://[::1]:port``, but the REST API's ``base_url`` was
``http://::1:port`` and the stream socket's ``url`` ``ws://::1:port/``: no URL parser reads a port there, and the
REST API's "listening on" line named no usable address. All three now come from one function (``url_host``).
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import aiohttp
import pytest
import websockets

from iii_engine import Engine, EngineConfig, ModuleSpec

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: its listeners' URLs")]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
async def test_module_urls_on_an_ipv6_host_parse_and_reach_the_listener() -> None:
    modules = [ModuleSpec("modules::api::RestApiModule", {"host": "::1", "port": 0}),
               ModuleSpec("modules::stream::StreamModule", {"host": "::1", "port": 0})]
    async with Engine(config=EngineConfig(host="::1", port=0, modules=modules)) as engine:
        urls = {"engine": engine.url, "http_api": engine.module("http_api").base_url,
                "stream": engine.module("stream").url}
        for name, url in urls.items():
            parts = urlsplit(url)
            assert (parts.hostname, isinstance(parts.port, int)) == ("::1", True), (name, url)
        async with aiohttp.ClientSession() as session, session.get(urls["http_api"] + "/no-such-route") as answer:
            assert answer.status == 404
        for url in (urls["engine"], urls["stream"]):
            async with websockets.connect(url, open_timeout=5) as ws:
                assert ws.state is websockets.protocol.State.OPEN
