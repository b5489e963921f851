"""HTTP-invoked functions end to end: a worker registers an endpoint, another worker calls it through the engine,
and a real local HTTP server (aiohttp) checks what the engine sent, HMAC signature included."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.integration.engine.raw import RawWorker, disconnect

pytestmark = pytest.mark.our_engine("configures HTTP function rules and secrets")

HMAC_SECRET = "correct horse battery staple"
LOCAL_RULES = {"url_allowlist": ["localhost", "127.0.0.1"], "block_private_ips": False, "require_https": False}


@dataclass
class Endpoint:
    """A local HTTP server whose routes record every request they get."""

    base: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def _signature_ok(request_headers: Any, body: bytes) -> bool:
    timestamp = request_headers.get("x-iii-Timestamp", "")
    message = f"{timestamp}:{base64.b64encode(body).decode()}".encode()
    expected = "sha256=" + hmac.new(HMAC_SECRET.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request_headers.get("x-iii-Signature", ""), expected)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    state = Endpoint()

    async def record(request: web.Request) -> bytes:
        body = await request.read()
        state.seen.append({"path": request.path, "method": request.method, "headers": dict(request.headers),
                           "body": body})
        return body

    async def signed(request: web.Request) -> web.Response:
        body = await record(request)
        if not _signature_ok(request.headers, body):
            return web.json_response({"error": {"code": "bad_signature", "message": "signature mismatch"}},
                                     status=401)
        return web.json_response({"verified": True, "got": json.loads(body)})

    async def echo(request: web.Request) -> web.Response:
        body = await record(request)
        return web.json_response({"got": json.loads(body) if body else None})

    async def empty(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=204)

    async def text(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="<html>not json</html>")

    async def fail(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=500, text="oops")

    async def coded(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"error": {"message": "no such order"}}, status=404)

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound("/echo")

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await state.release.wait()
        return web.json_response({})

    app = web.Application()
    for path, handler in [("/signed", signed), ("/echo", echo), ("/empty", empty), ("/text", text),
                          ("/fail", fail), ("/coded", coded), ("/redirect", redirect), ("/slow", slow)]:
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    state.release.set()
    await runner.cleanup()


async def _engine(security: dict[str, Any]) -> Engine:
    spec = ModuleSpec("modules::http_functions::HttpFunctionsModule", {"security": security})
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec]))
    await engine.start()
    assert engine.module("http_functions") is not None, engine.unavailable_modules
    return engine


@pytest.fixture
async def engine(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Engine]:
    monkeypatch.setenv("III_TEST_HMAC", HMAC_SECRET)
    monkeypatch.setenv("III_TEST_WRONG_HMAC", "not the secret")
    monkeypatch.setenv("III_TEST_TOKEN", "t0ken")
    monkeypatch.setenv("III_TEST_API_KEY", "k3y")
    running = await _engine(LOCAL_RULES)
    yield running
    await running.stop()


async def _listed(worker: RawWorker) -> set[str]:
    result = await worker.result_of("engine::functions::list", {})
    return {f["function_id"] for f in result["functions"]}


async def _register(worker: RawWorker, function_id: str, invocation: dict[str, Any]) -> None:
    await worker.register(function_id, invocation=invocation)
    await worker.sync()


async def test_hmac_signature_is_verified_by_the_endpoint(engine: Engine, endpoint: Endpoint) -> None:
    owner = await RawWorker.connect(engine.url)
    caller = await RawWorker.connect(engine.url)
    await _register(owner, "ext.signed", {"url": f"{endpoint.base}/signed",
                                          "auth": {"type": "hmac", "secret_key": "III_TEST_HMAC"}})
    await _register(owner, "ext.badly_signed", {"url": f"{endpoint.base}/signed",
                                                "auth": {"type": "hmac", "secret_key": "III_TEST_WRONG_HMAC"}})
    before = int(time.time())
    result = await caller.result_of("ext.signed", {"order": 7})
    assert result == {"verified": True, "got": {"order": 7, "_caller_worker_id": caller.worker_id}}
    sent = endpoint.seen[-1]
    headers = sent["headers"]
    assert sent["method"] == "POST"
    assert headers["Content-Type"] == "application/json"
    assert headers["x-iii-Function-Path"] == "ext.signed"
    uuid.UUID(headers["x-iii-Invocation-ID"])
    assert before <= int(headers["x-iii-Timestamp"]) <= int(time.time())
    # The same endpoint refuses a request signed with another secret, and its error object reaches the caller.
    frame = await caller.call("ext.badly_signed", {"order": 8})
    assert frame["error"] == {"code": "bad_signature", "message": "signature mismatch"}


async def test_bearer_api_key_headers_and_method(engine: Engine, endpoint: Endpoint) -> None:
    worker = await RawWorker.connect(engine.url)
    await _register(worker, "ext.bearer", {"url": f"{endpoint.base}/echo", "method": "PUT",
                                           "headers": {"X-Tenant": "acme"},
                                           "auth": {"type": "bearer", "token_key": "III_TEST_TOKEN"}})
    await _register(worker, "ext.apikey", {"url": f"{endpoint.base}/echo", "method": "GET",
                                           "auth": {"type": "api_key", "header": "X-Api-Key",
                                                    "value_key": "III_TEST_API_KEY"}})
    assert await worker.result_of("ext.bearer", [1, 2]) == {"got": [1, 2]}  # non-object data: no caller id
    sent = endpoint.seen[-1]
    assert (sent["method"], sent["headers"]["Authorization"], sent["headers"]["X-Tenant"]) == (
        "PUT", "Bearer t0ken", "acme")
    assert await worker.result_of("ext.apikey", None) == {"got": None}
    sent = endpoint.seen[-1]
    assert (sent["method"], sent["headers"]["X-Api-Key"], sent["body"]) == ("GET", "k3y", b"null")


async def test_response_mapping_and_error_codes(engine: Engine, endpoint: Endpoint) -> None:
    worker = await RawWorker.connect(engine.url)
    for name in ("empty", "text", "fail", "coded", "redirect"):
        await _register(worker, f"ext.{name}", {"url": f"{endpoint.base}/{name}"})
    frame = await worker.call("ext.empty", {})
    assert "error" not in frame and frame.get("result") is None
    assert (await worker.call("ext.text", {}))["error"]["code"] == "invalid_response"
    assert (await worker.call("ext.fail", {}))["error"] == {"code": "http_error",
                                                           "message": "HTTP 500 Internal Server Error"}
    assert (await worker.call("ext.coded", {}))["error"] == {"code": "http_error", "message": "no such order"}
    redirected = len(endpoint.seen)
    assert (await worker.call("ext.redirect", {}))["error"] == {"code": "http_error", "message": "HTTP 302 Found"}
    assert len(endpoint.seen) == redirected + 1  # the redirect target was not requested


async def test_timeout_and_refused_connection_are_request_failures(engine: Engine, endpoint: Endpoint) -> None:
    worker = await RawWorker.connect(engine.url)
    await _register(worker, "ext.slow", {"url": f"{endpoint.base}/slow", "timeout_ms": 200})
    await _register(worker, "ext.down", {"url": "http://127.0.0.1:1/nothing"})
    frame = await worker.call("ext.slow", {})
    assert frame["error"]["code"] == "http_request_failed"
    assert "timed out after 200 ms" in frame["error"]["message"]
    frame = await worker.call("ext.down", {})
    assert frame["error"]["code"] == "http_request_failed"


async def test_rejected_registrations_are_not_listed(engine: Engine, endpoint: Endpoint,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    worker = await RawWorker.connect(engine.url)
    await _register(worker, "ext.ok", {"url": f"{endpoint.base}/echo"})
    await _register(worker, "ext.elsewhere", {"url": "http://example.org/hook"})
    await _register(worker, "ext.nosecret", {"url": f"{endpoint.base}/echo",
                                             "auth": {"type": "bearer", "token_key": "III_TEST_UNSET"}})
    listed = await _listed(worker)
    assert "ext.ok" in listed
    assert not {"ext.elsewhere", "ext.nosecret"} & listed
    workers = await worker.result_of("engine::workers::list", {"worker_id": worker.worker_id})
    assert "ext.ok" in workers["workers"][0]["functions"]
    assert "ext.elsewhere not registered: url_validation_failed: URL not in allowlist" in caplog.text
    assert "ext.nosecret not registered: token_not_found" in caplog.text


async def test_unregister_and_disconnect_remove_the_function(engine: Engine, endpoint: Endpoint) -> None:
    owner = await RawWorker.connect(engine.url)
    caller = await RawWorker.connect(engine.url)
    await _register(owner, "ext.a", {"url": f"{endpoint.base}/echo"})
    await _register(owner, "ext.b", {"url": f"{endpoint.base}/echo"})
    await owner.send({"type": "unregisterfunction", "id": "ext.a"})
    await owner.sync()
    assert (await caller.call("ext.a", {}))["error"]["code"] == "function_not_found"
    assert await caller.result_of("ext.b", {}) == {"got": {"_caller_worker_id": caller.worker_id}}
    await disconnect(engine, owner)
    assert (await caller.call("ext.b", {}))["error"]["code"] == "function_not_found"
    module = engine.module("http_functions")
    assert module is not None and getattr(module, "functions", None) == {}


async def test_private_addresses_and_plain_http_blocked_by_default_rules(
        endpoint: Endpoint, caplog: pytest.LogCaptureFixture) -> None:
    engine = await _engine({"url_allowlist": ["*"], "block_private_ips": True, "require_https": False})
    strict = await _engine({})
    try:
        worker = await RawWorker.connect(engine.url)
        await _register(worker, "ext.loopback", {"url": f"{endpoint.base}/echo"})
        await _register(worker, "ext.localhost", {"url": endpoint.base.replace("127.0.0.1", "localhost") + "/echo"})
        assert not {"ext.loopback", "ext.localhost"} & await _listed(worker)
        other = await RawWorker.connect(strict.url)
        await _register(other, "ext.plain", {"url": "http://example.org/hook"})
        assert "ext.plain" not in await _listed(other)
        assert "ext.loopback not registered: url_validation_failed: Private IP blocked" in caplog.text
        assert "ext.localhost not registered: url_validation_failed: Private IP blocked" in caplog.text
        assert "ext.plain not registered: url_validation_failed: HTTPS is required" in caplog.text
    finally:
        await engine.stop()
        await strict.stop()


async def test_an_overwritten_http_function_is_restored_with_its_own_endpoint(
        engine: Engine, endpoint: Endpoint) -> None:
    """E5 with two owners of one HTTP-invoked id: the one restored when the other leaves calls its own endpoint
    (the module kept one endpoint per id, so the restored one answered function_not_found)."""
    c, d = await RawWorker.connect(engine.url), await RawWorker.connect(engine.url)
    caller = await RawWorker.connect(engine.url)
    await _register(c, "ext.g", {"url": f"{endpoint.base}/echo"})
    await _register(d, "ext.g", {"url": f"{endpoint.base}/empty"})
    assert await caller.result_of("ext.g", {}) is None  # d's endpoint: an empty body
    await disconnect(engine, d)
    assert await caller.result_of("ext.g", {}) == {"got": {"_caller_worker_id": caller.worker_id}}
    await disconnect(engine, c)
    module = engine.module("http_functions")
    assert module is not None and getattr(module, "functions", None) == {}


async def test_an_http_function_overwritten_by_a_plain_one_leaves_no_endpoint_behind(
        engine: Engine, endpoint: Endpoint) -> None:
    """A's HTTP-invoked registration, overwritten by B's worker function, is forgotten with A (before: its endpoint
    stayed in the module for good, one per such cycle)."""
    a, b = await RawWorker.connect(engine.url), await RawWorker.connect(engine.url)
    await _register(a, "ext.f", {"url": f"{endpoint.base}/echo"})
    await b.register("ext.f")
    await b.sync()
    await disconnect(engine, a)
    module = engine.module("http_functions")
    assert module is not None and getattr(module, "functions", None) == {}
    await a.close()
    await _register(b, "ext.h", {"url": f"{endpoint.base}/echo"})
    await b.register("ext.h")  # its own HTTP-invoked registration replaced by a plain one
    await b.sync()
    assert getattr(module, "functions", None) == {}
