"""HttpFunctionsModule without an engine: invocation parsing, call-time URL re-validation and result mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from http_fake_services import HttpFakeServices

from iii_engine.modules.base import EngineError, InvocationContext
from iii_engine.modules.http.functions import HttpFunctionsModule, parse_invocation
from iii_engine.modules.http.security import UrlRules

LOCAL = {"security": {"url_allowlist": ["127.0.0.1"], "block_private_ips": False, "require_https": False}}


@pytest.fixture
async def module() -> AsyncIterator[HttpFunctionsModule]:
    mod = HttpFunctionsModule(HttpFakeServices(), LOCAL, env={"TOKEN": "t"})
    await mod.start()
    yield mod
    await mod.stop()


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "200"))
        return web.Response(status=status, body=request.query.get("body", "").encode())

    app = web.Application()
    app.router.add_route("*", "/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    await runner.cleanup()


@pytest.mark.parametrize("raw, fragment", [
    ("https://x", "invocation must be an object"),
    ({}, "invocation.url must be a non-empty string"),
    ({"url": "https://x", "method": "HEAD"}, "invocation.method 'HEAD'"),
    ({"url": "https://x", "timeout_ms": 0}, "timeout_ms must be a positive integer"),
    ({"url": "https://x", "headers": {"a": 1}}, "headers must map strings to strings"),
])
def test_parse_invocation_errors(raw: Any, fragment: str) -> None:
    with pytest.raises(EngineError) as info:
        parse_invocation("fn", raw, {})
    assert info.value.code == "invalid_invocation" and fragment in info.value.message


def test_parse_invocation_defaults() -> None:
    fn = parse_invocation("fn", {"url": "https://x/h", "timeout_ms": None, "headers": None}, {}, "w1")
    assert (fn.method, fn.timeout_ms, fn.headers, fn.auth, fn.owner_worker_id) == ("POST", 30000, (), None, "w1")


async def test_register_returns_a_builtin_that_calls_the_url(module: HttpFunctionsModule, server: str) -> None:
    builtin = await module.register_external("fn", {"url": f"{server}?body=%7B%22a%22%3A1%7D"}, "w1")
    assert builtin.id == "fn"
    assert await builtin.handler({"x": 1}, InvocationContext()) == {"a": 1}


async def test_url_is_revalidated_on_each_call(module: HttpFunctionsModule, server: str) -> None:
    await module.register_external("fn", {"url": server}, "w1")
    module.rules = UrlRules(url_allowlist=("*.example.com",), block_private_ips=False, require_https=False)
    with pytest.raises(EngineError) as info:
        await module.call("fn", {})
    assert (info.value.code, info.value.message) == ("url_validation_failed", "URL not in allowlist")


async def test_registration_errors(module: HttpFunctionsModule) -> None:
    with pytest.raises(EngineError) as info:
        await module.register_external("fn", {"url": "http://localhost/"}, "w1")
    assert (info.value.code, info.value.message) == ("url_validation_failed", "URL not in allowlist")
    with pytest.raises(EngineError) as info:
        await module.register_external("fn", {"url": "http://127.0.0.1/", "auth": {"type": "bearer",
                                                                                  "token_key": "NOPE"}}, "w1")
    assert info.value.code == "token_not_found"
    assert module.functions == {}


async def test_unknown_function_and_unregister(module: HttpFunctionsModule, server: str) -> None:
    await module.register_external("fn", {"url": server}, "w1")
    module.unregister_external("fn", "w2")  # another owner's registration: this one stays
    assert list(module.functions) == ["fn"]
    module.unregister_external("fn", "w1")
    module.unregister_external("never-registered", "w1")  # no error
    with pytest.raises(EngineError) as info:
        await module.call("fn", {})
    assert (info.value.code, info.value.message) == ("function_not_found", "Function fn not found")


@pytest.mark.parametrize("query, outcome", [
    ("status=200", None),
    ("status=200&body=%5B1%2C2%5D", [1, 2]),
    ("status=418", ("http_error", "HTTP 418 I'm a Teapot")),
    ("status=599", ("http_error", "HTTP 599")),
    ("status=400&body=%7B%22error%22%3A%7B%22code%22%3A%22bad%22%7D%7D", ("bad", "HTTP request failed")),
    ("status=400&body=%7B%22error%22%3A%22flat%22%7D", ("http_error", "HTTP 400 Bad Request")),
    ("status=200&body=nope", ("invalid_response", None)),
])
async def test_result_mapping(module: HttpFunctionsModule, server: str, query: str, outcome: Any) -> None:
    await module.register_external("fn", {"url": f"{server}?{query}"}, "w1")
    if not isinstance(outcome, tuple):
        assert await module.call("fn", None) == outcome
        return
    with pytest.raises(EngineError) as info:
        await module.call("fn", None)
    assert info.value.code == outcome[0]
    if outcome[1] is not None:
        assert info.value.message == outcome[1]
