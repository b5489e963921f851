"""The reference SDK (its own venv, in a subprocess) as an HTTP worker against our engine's REST API: what the
reference integration tests do with ``iii.utils.http`` — JSON with ``ApiResponse``, streamed request bodies,
streamed responses with status and headers, SSE."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.http.api import RestApiModule
from tests.services import reference_python

pytestmark = [
    pytest.mark.our_engine("configures the REST API module"),
    pytest.mark.interop,
]

REF_WORKER = r"""
import asyncio, hashlib, json, sys
from iii import register_worker
from iii.types import ApiResponse
from iii.utils import http

iii = register_worker(sys.argv[1])

async def echo(req, res):
    return ApiResponse(statusCode=201, body={"params": req.path_params, "query": req.query_params,
                                              "body": req.body}, headers={"x-ref": "1"})

async def digest(req, res):
    data = await req.request_body.read_all()
    await res.status(202)
    await res.headers({"content-type": "text/plain", "x-size": str(len(data))})
    await res.writer.write(hashlib.sha256(data).hexdigest().encode())
    await res.writer.close_async()
    return None

async def events(req, res):
    await res.headers({"content-type": "text/event-stream"})
    for n in range(3):
        await res.writer.write(f"data: {n}\n\n".encode())
    await res.writer.close_async()
    return None

for fid, handler, path, method in [("ref.echo", echo, "ref/echo/:id", "POST"),
                                    ("ref.digest", digest, "ref/digest", "POST"),
                                    ("ref.events", events, "ref/events", "GET")]:
    iii.register_function(fid, http(handler))
    iii.register_trigger({"type": "http", "function_id": fid, "config": {"api_path": path, "http_method": method}})
iii.list_functions()  # one round trip: every registration above has been handled by the engine
print("READY", flush=True)
sys.stdin.read()
iii.shutdown()
"""


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, asyncio.subprocess.Process]]:
    spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0})
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec])) as engine:
        module = engine.module("http_api")
        assert isinstance(module, RestApiModule)
        script = tmp_path / "ref_http_worker.py"
        script.write_text(REF_WORKER)
        proc = await asyncio.create_subprocess_exec(reference_python(), str(script), engine.url,
                                                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None and proc.stdin is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line.strip() == b"READY", line
            async with httpx.AsyncClient(base_url=module.base_url, timeout=20) as client:
                yield client, proc
        finally:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_reference_worker_over_http(setup: tuple[httpx.AsyncClient, asyncio.subprocess.Process]) -> None:
    client, _ = setup
    response = await client.post("/ref/echo/9?x=1", json={"hello": "world"})
    assert response.status_code == 201  # ApiResponse dumped by alias: M5
    assert response.headers["x-ref"] == "1"  # M4
    assert response.json() == {"params": {"id": "9"}, "query": {"x": "1"}, "body": {"hello": "world"}}

    payload = os.urandom(3 * 1024 * 1024 + 7)
    response = await client.post("/ref/digest", content=payload, headers={"content-type": "application/octet-stream"})
    assert response.status_code == 202
    assert response.headers["x-size"] == str(len(payload))
    assert response.text == hashlib.sha256(payload).hexdigest()

    response = await client.post("/ref/digest", data={"a": "1", "b": "two"})
    assert response.text == hashlib.sha256(b"a=1&b=two").hexdigest()

    response = await client.get("/ref/events")
    assert response.headers["content-type"] == "text/event-stream"
    assert response.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
