"""Modules with listeners of their own follow the engine: its host, and a free port when the engine has one."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.http.api import RestApiModule
from iii_engine.modules.stream import StreamModule

pytestmark = pytest.mark.our_engine("engine-core test: starts engines with their own listeners")


async def test_two_default_engines_on_free_ports_do_not_collide() -> None:
    async with Engine(port=0) as first, Engine(port=0) as second:
        for engine in (first, second):
            assert engine.unavailable_modules == {}
        streams = [engine.module("stream") for engine in (first, second)]
        apis = [engine.module("http_api") for engine in (first, second)]
        assert all(isinstance(m, StreamModule) for m in streams)
        assert all(isinstance(m, RestApiModule) for m in apis)
        ports = {m.port for m in streams} | {m.port for m in apis}  # type: ignore[union-attr]
        assert len(ports) == 4 and not ports & {3111, 3112}
        # the stream socket answers on the port it reports
        async with websockets.connect(streams[0].url) as ws:  # type: ignore[union-attr]
            await ws.send('{"type":"join","data":{"subscriptionId":"s","streamName":"x","groupId":"g"}}')
            frame = await asyncio.wait_for(ws.recv(), 5)
            assert "sync" in str(frame)
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{apis[1].base_url}/nothing/here")  # type: ignore[union-attr]
            assert response.status_code == 404


async def test_explicit_module_settings_win() -> None:
    config = EngineConfig(host="127.0.0.1", port=0, modules=[
        ModuleSpec("modules::stream::StreamModule", {"port": 0, "host": "127.0.0.1"}),
    ])
    async with Engine(config=config) as engine:
        module = engine.module("stream")
        assert isinstance(module, StreamModule)
        assert module.url.startswith("ws://127.0.0.1:")
        assert module.port not in (0, 3112)
