"""SSRF through a real engine (issue #8): the address checked is the address connected to (no DNS rebinding),
the original host name still travels in ``Host``, and redirects towards private addresses are never followed.

DNS is scripted by replacing ``getaddrinfo`` on the running loop for one made-up name; the "internet" is a
``sock_connect`` stand-in that records each attempt and refuses every non-loopback address, so no packet leaves
the machine. The loopback server is real."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.integration.engine.raw import RawWorker

pytestmark = pytest.mark.our_engine("configures HTTP function rules and resolvers")

PUBLIC = "8.8.8.8"  # never really contacted: the sock_connect stand-in refuses it


@dataclass
class Loopback:
    """A real HTTP server on 127.0.0.1 that records every request."""

    port: int = 0
    seen: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def loopback() -> AsyncIterator[Loopback]:
    state = Loopback()

    async def record(request: web.Request) -> web.Response:
        state.seen.append({"path": request.path, "host": request.host})
        if request.path == "/bounce":
            raise web.HTTPFound(f"http://127.0.0.1:{state.port}/secret")
        return web.json_response({"secret": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.port = runner.addresses[0][1]
    yield state
    await runner.cleanup()


class Network:
    """Scripted DNS for ``name`` plus a record of every TCP connect the loop makes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.name = name
        self.script: list[str] = []
        self.lookups = 0
        self.connects: list[str] = []
        self._getaddrinfo = loop.getaddrinfo
        self._sock_connect = loop.sock_connect

    async def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != self.name:
            return await self._getaddrinfo(host, port, *args, **kwargs)
        self.lookups += 1
        address = self.script[min(self.lookups, len(self.script)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        self.connects.append(address[0])
        if address[0] != "127.0.0.1":
            raise ConnectionRefusedError(111, f"test network: {address[0]} is not reachable")
        await self._sock_connect(sock, address)

    def answer(self, *addresses: str) -> None:
        """Answer the next lookups with ``addresses`` in turn (the last one repeats); forget earlier counts."""
        self.script = list(addresses)
        self.lookups = 0
        self.connects.clear()


@pytest.fixture
async def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    loop = asyncio.get_running_loop()
    net = Network(loop, "rebind.test")
    monkeypatch.setattr(loop, "getaddrinfo", net.getaddrinfo)
    monkeypatch.setattr(loop, "sock_connect", net.sock_connect)
    return net


async def _engine(security: dict[str, Any]) -> Engine:
    spec = ModuleSpec("modules::http_functions::HttpFunctionsModule", {"security": security})
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec]))
    await engine.start()
    assert engine.module("http_functions") is not None, engine.unavailable_modules
    return engine


@pytest.fixture
async def blocking_engine() -> AsyncIterator[Engine]:
    engine = await _engine({"url_allowlist": ["rebind.test", "127.0.0.1"], "block_private_ips": True,
                            "require_https": False})
    yield engine
    await engine.stop()


async def _register(worker: RawWorker, function_id: str, url: str) -> None:
    await worker.register(function_id, invocation={"url": url, "timeout_ms": 5000})
    await worker.sync()
    listed = await worker.result_of("engine::functions::list", {})
    assert function_id in {f["function_id"] for f in listed["functions"]}


async def test_dns_rebinding_never_reaches_loopback(blocking_engine: Engine, loopback: Loopback,
                                                    network: Network) -> None:
    worker = await RawWorker.connect(blocking_engine.url)
    network.answer(PUBLIC)
    await _register(worker, "ext.rebind", f"http://rebind.test:{loopback.port}/secret")
    # The attacker's DNS answers a public address first and loopback afterwards.
    network.answer(PUBLIC, "127.0.0.1")
    frame = await worker.call("ext.rebind", {})
    assert loopback.seen == []
    assert "127.0.0.1" not in network.connects
    assert network.connects == [PUBLIC]  # connected to exactly the vetted address
    assert network.lookups == 1  # one lookup per call: nothing left to rebind between check and connect
    assert frame["error"]["code"] == "http_request_failed", frame


async def test_a_call_whose_lookup_turns_private_is_refused(blocking_engine: Engine, loopback: Loopback,
                                                            network: Network) -> None:
    worker = await RawWorker.connect(blocking_engine.url)
    network.answer(PUBLIC)
    await _register(worker, "ext.turns", f"http://rebind.test:{loopback.port}/secret")
    network.answer("127.0.0.1", PUBLIC)
    frame = await worker.call("ext.turns", {})
    assert frame["error"]["code"] == "url_validation_failed", frame
    assert frame["error"]["message"].startswith("Private IP blocked: rebind.test resolves to 127.0.0.1")
    assert loopback.seen == [] and network.connects == []


async def test_opt_in_connects_through_the_vetting_resolver_and_keeps_the_host_name(
        loopback: Loopback, network: Network) -> None:
    engine = await _engine({"url_allowlist": ["rebind.test"], "block_private_ips": False, "require_https": False})
    try:
        worker = await RawWorker.connect(engine.url)
        network.answer("127.0.0.1")
        await _register(worker, "ext.named", f"http://rebind.test:{loopback.port}/named")
        network.answer("127.0.0.1")
        assert await worker.result_of("ext.named", {}) == {"secret": True}
        assert loopback.seen == [{"path": "/named", "host": f"rebind.test:{loopback.port}"}]
        assert network.connects == ["127.0.0.1"] and network.lookups == 1
    finally:
        await engine.stop()


async def test_redirect_to_a_private_address_is_not_followed(loopback: Loopback, network: Network) -> None:
    engine = await _engine({"url_allowlist": ["rebind.test"], "block_private_ips": False, "require_https": False})
    try:
        worker = await RawWorker.connect(engine.url)
        network.answer("127.0.0.1")
        await _register(worker, "ext.bounce", f"http://rebind.test:{loopback.port}/bounce")
        frame = await worker.call("ext.bounce", {})
        assert frame["error"] == {"code": "http_error", "message": "HTTP 302 Found"}
        assert [seen["path"] for seen in loopback.seen] == ["/bounce"]
    finally:
        await engine.stop()
