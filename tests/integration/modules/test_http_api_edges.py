"""REST API at its edges: a bound on open connections (``max_connections``), request header bytes that are not
UTF-8, and request bodies aiohttp cannot decode, each answered without a traceback in the log."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.http.api import RestApiModule
from iii_engine.modules.http.settings import ApiSettings
from tests.integration.engine.raw import RawWorker
from tests.polling import until

pytestmark = pytest.mark.our_engine("configures the REST API module's own settings")

Start = Callable[..., Awaitable[tuple[Engine, RestApiModule]]]
API_LOG = "iii_engine.modules.http.api"


@pytest.fixture
async def api() -> AsyncIterator[Start]:
    async with AsyncExitStack() as stack:

        async def start(**settings: Any) -> tuple[Engine, RestApiModule]:
            spec = ModuleSpec("modules::api::RestApiModule", {"host": "127.0.0.1", "port": 0, **settings})
            engine = await stack.enter_async_context(Engine(config=EngineConfig(host="127.0.0.1", port=0,
                                                                                modules=[spec])))
            module = engine.module("http_api")
            assert isinstance(module, RestApiModule), engine.unavailable_modules
            return engine, module

        yield start


async def _exchange(port: int, request: bytes) -> bytes:
    """Send raw request bytes, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _body(response: bytes) -> Any:
    return json.loads(response.partition(b"\r\n\r\n")[2])


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(API_LOG) and r.levelno == level]


async def _echo_route(engine: Engine, method: str = "GET") -> RawWorker:
    worker = await RawWorker.connect(engine.url)
    await worker.register("echo")
    await worker.send({"type": "registertrigger", "id": f"t-echo-{method}", "trigger_type": "http",
                       "function_id": "echo", "config": {"api_path": "items/:id", "http_method": method}})
    await worker.sync()
    return worker


# -- max_connections --------------------------------------------------------------------------------------------


def test_max_connections_defaults_to_half_the_open_file_limit() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    expected = soft // 2 if soft != resource.RLIM_INFINITY else 10_000
    assert ApiSettings.parse({}).max_connections == expected
    assert ApiSettings.parse({"max_connections": 3}).max_connections == 3


async def test_a_connection_past_max_connections_is_answered_503_at_once(
        api: Start, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="iii_engine")
    _engine, module = await api(max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", module.port) for _ in range(2)]
    await until(lambda: module.connections == 2)
    # before: no such setting (the engine refused the configuration); without one, idle connections used up the
    # process's file descriptors and a worker's handshake timed out
    for _ in range(20):  # each refused before aiohttp reads a byte: none may lose its answer to a reset
        refused = await _exchange(module.port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(refused) == 503, refused
        assert b"Retry-After: 1" in refused and "max_connections 2" in _body(refused)["error"]
    assert module.refused_connections == 20 and module.connections == 2
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 1 and "max_connections 2" in warnings[0].getMessage()  # rate-limited: one a burst

    _reader, writer = held.pop()
    writer.close()
    await until(lambda: module.connections == 1)
    served = await _exchange(module.port, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(served) == 404  # served again, by the module's handler
    for _reader, writer in held:
        writer.close()
    await until(lambda: module.connections == 0)


# -- bytes that are not UTF-8 -----------------------------------------------------------------------------------


async def test_header_bytes_that_are_not_utf8_reach_the_handler_as_latin1(
        api: Start, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="iii_engine")
    engine, module = await api()
    worker = await _echo_route(engine)
    answer = asyncio.ensure_future(_exchange(module.port, b"GET /items/1?q=%E9&ok=caf%C3%A9 HTTP/1.1\r\nHost: x\r\n"
                                                          b"X-L: caf\xe9\r\nX-U: caf\xc3\xa9\r\n"
                                                          b"Cookie: name=Jos\xe9\r\nConnection: close\r\n\r\n"))
    served = asyncio.ensure_future(worker.serve_one({"status_code": 200, "body": "seen"}))
    await asyncio.wait((answer, served), return_when=asyncio.FIRST_COMPLETED)
    if not served.done():  # answered without the handler
        served.cancel()
    response = await answer
    # before: 500 "Server got itself in trouble" and an ERROR traceback (UnpairedSurrogateError) per request
    assert _status(response) == 200, response
    request = await served
    data = request["data"]
    assert data["headers"]["x-l"] == "café"  # ISO-8859-1, as HTTP reads bytes that are not ASCII
    assert data["headers"]["x-u"] == "café"  # UTF-8 stays UTF-8
    assert data["headers"]["cookie"] == "name=José"
    assert data["query_params"] == {"q": "\ufffd", "ok": "café"}  # %-escapes that are not UTF-8: replaced
    assert not _records(caplog, logging.ERROR)


async def test_a_path_whose_escapes_are_not_utf8_is_400(api: Start, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="iii_engine")
    engine, module = await api()
    await _echo_route(engine)
    response = await _exchange(module.port, b"GET /items/%E9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(response) == 400 and "not UTF-8" in _body(response)["error"]
    raw = await _exchange(module.port, b"GET /items/\xe9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(raw) == 400  # aiohttp's own refusal of a raw byte in the path
    assert not _records(caplog, logging.ERROR)


# -- bodies aiohttp cannot decode --------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", [b"Content-Length: 5\r\n\r\nhello",
                                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"])
async def test_a_body_that_is_not_what_its_content_encoding_says_is_400_and_one_info_line(
        api: Start, caplog: pytest.LogCaptureFixture, framing: bytes) -> None:
    caplog.set_level(logging.INFO, logger="iii_engine")
    engine, module = await api()
    await _echo_route(engine, "POST")
    caplog.clear()
    response = await _exchange(module.port, b"POST /items/1 HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                                            + framing)
    assert _status(response) == 400 and "gzip" in _body(response)["error"]
    # before: also "Unhandled exception" at ERROR with a traceback, from aiohttp reading the rest of the body
    assert not _records(caplog, logging.ERROR)
    infos = [r.getMessage() for r in _records(caplog, logging.INFO)]
    assert len(infos) == 1 and "refused with 400" in infos[0] and "gzip" in infos[0], infos


async def test_an_undecodable_body_nobody_reads_is_not_decoded(api: Start,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="iii_engine")
    _engine, module = await api()
    caplog.clear()
    response = await _exchange(module.port, b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                                            b"Connection: close\r\nContent-Length: 5\r\n\r\nhello")
    assert _status(response) == 404  # no route: the body is read only by aiohttp, after the answer
    # the engine decodes bodies itself, those it reads: before, aiohttp decoded this one too, and its failure was
    # an ERROR with a traceback (then one INFO line)
    assert not _records(caplog, logging.ERROR) and not _records(caplog, logging.INFO), caplog.records


def test_a_call_cut_by_the_engines_stop_names_its_function() -> None:
    # before: {"code": "invocation_stopped", "message": "Invocation stopped"}, naming neither function nor cause
    from iii_engine.modules.http.api import _outcome

    loop = asyncio.new_event_loop()
    try:
        cut: asyncio.Future[tuple[Any, Any]] = loop.create_future()
        cut.cancel()
        assert _outcome(cut, "api::orders") == (None, {
            "code": "invocation_stopped", "message": "Invocation of api::orders stopped: the engine is stopping"})
    finally:
        loop.close()
