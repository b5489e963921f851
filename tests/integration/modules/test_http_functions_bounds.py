"""The bounds of HTTP-invoked functions: one endpoint that never answers holds only its own connections, a response
is bounded by the engine's max_message_size, the calls in flight are bounded engine-wide and per endpoint, an
answered call ends with its caller, the engine's stop ends the calls cleanly, and an unregister drops the calls
not sent yet."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import EngineError, InvocationContext
from iii_engine.modules.http.functions import HttpFunctionsModule, parse_invocation
from tests.integration.engine.raw import RawWorker, disconnect
from tests.integration.modules.test_http_functions import LOCAL_RULES

pytestmark = pytest.mark.our_engine("calls our engine's HTTP functions module and its bounds")

OLD_TOTAL_CAP = 100  # aiohttp's default connection limit, once shared by every HTTP function
MAX_TIMEOUT_MS = 24 * 3600 * 1000  # the documented maximum of an invocation's timeout_ms (README)


@dataclass
class Endpoint:
    """A local HTTP/1.1 server. ``/stuck`` reads the request and answers only once :attr:`release` is set; ``/ok``
    answers ``{"ok": 1}``; ``/body`` answers :attr:`body` with :attr:`status`. Each request is counted in
    :attr:`requests` (by path); each connection the client closed while stuck is counted in :attr:`dropped`."""

    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    requests: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    body: bytes = b"{}"
    status: int = 200

    async def until(self, what: str, n: int) -> None:
        """Wait until ``what`` (a path, or "dropped") reached ``n``."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.count(what) >= n), 10)

    def count(self, what: str) -> int:
        return self.dropped if what == "dropped" else self.requests.get(what, 0)

    async def note(self, what: str) -> None:
        async with self.changed:
            if what == "dropped":
                self.dropped += 1
            else:
                self.requests[what] = self.requests.get(what, 0) + 1
            self.changed.notify_all()


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    state = Endpoint()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            path = (await reader.readline()).split()[1].decode().strip("/")
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            await state.note(path)
            if path == "stuck":
                gone = asyncio.ensure_future(reader.read(1))  # b"": the client closed the connection
                released = asyncio.ensure_future(state.release.wait())
                await asyncio.wait((gone, released), return_when=asyncio.FIRST_COMPLETED)
                if gone.done() and not released.done():
                    released.cancel()
                    await state.note("dropped")
                    return
                gone.cancel()
            body = b'{"ok":1}' if path in ("ok", "stuck") else state.body
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nContent-Type: application/json\r\n\r\n"
                         % (state.status if path == "body" else 200, len(body)) + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield state
    state.release.set()
    server.close()


async def _engine(settings: dict[str, Any] | None = None, **config: Any) -> tuple[Engine, HttpFunctionsModule]:
    spec = ModuleSpec("modules::http_functions::HttpFunctionsModule", {"security": LOCAL_RULES, **(settings or {})})
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[spec], **config))
    await engine.start()
    module = engine.module("http_functions")
    assert isinstance(module, HttpFunctionsModule)
    return engine, module


@pytest.fixture
async def engine() -> AsyncIterator[tuple[Engine, HttpFunctionsModule]]:
    running = await _engine()
    yield running
    await running[0].stop()


async def _stuck_calls(module: HttpFunctionsModule, endpoint: Endpoint, n: int,
                       function_id: str = "stuck") -> list[asyncio.Task[Any]]:
    """``n`` calls of ``function_id`` (registered on ``/stuck``) started, each in a task of its own."""
    if function_id not in module.functions:
        await module.register_external(function_id, {"url": f"{endpoint.url}/stuck", "timeout_ms": 20_000}, None)
    return [asyncio.ensure_future(module.call(function_id, {"i": i})) for i in range(n)]


async def test_an_endpoint_that_never_answers_does_not_hold_up_another_hosts_calls(
        engine: tuple[Engine, HttpFunctionsModule], endpoint: Endpoint) -> None:
    _, module = engine
    other_host = endpoint.url.replace("127.0.0.1", "localhost")
    await module.register_external("healthy", {"url": f"{other_host}/ok", "timeout_ms": 1000}, None)
    stuck = await _stuck_calls(module, endpoint, OLD_TOTAL_CAP + 1)
    await endpoint.until("stuck", OLD_TOTAL_CAP)
    # before: the 100 connections of the client were all the stuck endpoint's, and this call "timed out after
    # 1000 ms" although it was never sent
    assert await module.call("healthy", {}) == {"ok": 1}
    stats = module.stats()
    assert stats["in_flight"] == OLD_TOTAL_CAP + 1 and stats["waiting_for_connection"] == 1
    # a call to the stuck host past its connections waits for one, and says so when its timeout_ms runs out
    await module.register_external("stuck_short", {"url": f"{endpoint.url}/stuck", "timeout_ms": 200}, None)
    with pytest.raises(EngineError) as caught:
        await module.call("stuck_short", {})
    assert caught.value.code == "http_request_failed"
    assert "not sent: no connection to 127.0.0.1:" in caught.value.message
    assert "within 200 ms (100 in use, max_connections_per_host)" in caught.value.message
    assert module.stats()["connection_waits_timed_out"] == 1
    endpoint.release.set()
    assert await asyncio.gather(*stuck) == [{"ok": 1}] * (OLD_TOTAL_CAP + 1)
    assert module.stats()["in_flight"] == 0 and module._hosts == {}


async def test_calls_in_flight_are_bounded_engine_wide_and_per_endpoint(endpoint: Endpoint) -> None:
    engine, module = await _engine({"max_connections_per_host": 2, "max_waiting_per_host": 1,
                                    "max_calls_in_flight": 4})
    try:
        stuck = await _stuck_calls(module, endpoint, 3)  # 2 sent, 1 waiting
        await endpoint.until("stuck", 2)
        with pytest.raises(EngineError) as caught:
            await module.call("stuck", {})
        assert caught.value.code == "too_many_calls"
        assert "1 calls wait for a connection to 127.0.0.1:" in caught.value.message
        assert "(max_waiting_per_host 1)" in caught.value.message
        await module.register_external("other", {"url": endpoint.url.replace("127.0.0.1", "localhost") + "/stuck",
                                                 "timeout_ms": 20_000}, None)
        stuck.append(asyncio.ensure_future(module.call("other", {})))  # another endpoint: the 4th call
        await endpoint.until("stuck", 3)
        with pytest.raises(EngineError) as caught:
            await module.call("other", {})
        # before: no bound at all; a caller reconnecting got a new max_calls_per_worker each time
        assert caught.value.code == "too_many_calls"
        assert "4 HTTP calls are in flight engine-wide (max_calls_in_flight 4)" in caught.value.message
        assert module.stats()["refused"] == 2
        endpoint.release.set()
        assert len(await asyncio.gather(*stuck)) == 4
    finally:
        await engine.stop()


async def test_one_workers_calls_to_a_slow_endpoint_give_way_to_another_workers(endpoint: Endpoint) -> None:
    engine, module = await _engine({"max_connections_per_host": 1, "max_waiting_per_host": 4})
    try:
        await module.register_external("stuck", {"url": f"{endpoint.url}/stuck", "timeout_ms": 20_000}, None)
        a = [asyncio.ensure_future(module.call("stuck", {"i": i}, InvocationContext("worker-a"))) for i in range(5)]
        await endpoint.until("stuck", 1)  # 1 sent, 4 waiting: every waiting place is worker-a's
        b = [asyncio.ensure_future(module.call("stuck", {"b": 0}, InvocationContext("worker-b")))]
        # before: refused at once ("4 calls wait for a connection"), for as long as worker-a kept the places filled
        done, _ = await asyncio.wait(a + b, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert done == {a[4]}
        with pytest.raises(EngineError) as caught:
            a[4].result()
        assert caught.value.code == "too_many_calls"
        assert caught.value.message == (
            f"HTTP function stuck refused its call, not sent: 4 calls waited for a connection to 127.0.0.1:"
            f"{endpoint.url.rsplit(':', 1)[1]} (max_waiting_per_host 4), 4 of them from worker worker-a; its newest "
            "gave way to a call from worker worker-b")
        b.append(asyncio.ensure_future(module.call("stuck", {"b": 1}, InvocationContext("worker-b"))))
        done, _ = await asyncio.wait(a[:4] + b, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert done == {a[3]}  # worker-a had 3 waiting to worker-b's 1: its newest gave way again
        assert isinstance(a[3].exception(), EngineError)
        # 2 each now: neither gives way to the other (they would take turns), the newcomer is refused at once
        with pytest.raises(EngineError) as caught:
            await module.call("stuck", {"b": 2}, InvocationContext("worker-b"))
        assert caught.value.message.endswith("refused its call: 4 calls wait for a connection to 127.0.0.1:"
                                             f"{endpoint.url.rsplit(':', 1)[1]} (max_waiting_per_host 4)")
        assert module.stats()["refused"] == 3 and module.stats()["waiting_for_connection"] == 4
        endpoint.release.set()
        assert await asyncio.gather(*a[:3], *b) == [{"ok": 1}] * 5
        assert endpoint.count("stuck") == 5  # the calls that gave way were never sent
        assert module._hosts == {}
    finally:
        await engine.stop()


async def test_a_response_over_max_message_size_is_not_read(endpoint: Endpoint) -> None:
    engine, module = await _engine(max_message_size=64 * 1024)
    try:
        await module.register_external("big", {"url": f"{endpoint.url}/body"}, None)
        endpoint.body = json.dumps([0] * 40_000).encode()  # 120,001 bytes: read whole before (64 MiB bound)
        with pytest.raises(EngineError) as caught:
            await module.call("big", {})
        assert caught.value.code == "result_not_sent"
        assert "larger than 65536 bytes, the engine's limit (max_message_size)" in caught.value.message
        endpoint.body = json.dumps([0] * 20_000).encode()
        assert len(await module.call("big", {})) == 20_000
    finally:
        await engine.stop()


async def test_an_endpoints_error_code_and_message_are_clipped(engine: tuple[Engine, HttpFunctionsModule],
                                                               endpoint: Endpoint) -> None:
    _, module = engine
    await module.register_external("fails", {"url": f"{endpoint.url}/body"}, None)
    endpoint.status = 500
    endpoint.body = json.dumps({"error": {"code": "c" * 100_000, "message": "m" * 2_000_000}}).encode()
    with pytest.raises(EngineError) as caught:
        await module.call("fails", {})
    # before: both passed on whole (100 KB code, 2 MB message) to the caller and into logs
    assert caught.value.code == "c" * 200 + "…(100000 chars)"
    assert caught.value.message == "m" * 1000 + "…(2000000 chars)"


async def test_an_answered_call_ends_with_its_caller_a_void_one_goes_on(
        engine: tuple[Engine, HttpFunctionsModule], endpoint: Endpoint) -> None:
    running, module = engine
    owner = await RawWorker.connect(running.url)
    await owner.register("stuck", invocation={"url": f"{endpoint.url}/stuck", "timeout_ms": 20_000})
    await owner.sync()
    voider = await RawWorker.connect(running.url)
    await voider.send({"type": "invokefunction", "function_id": "stuck", "data": {}, "action": {"type": "void"}})
    await endpoint.until("stuck", 1)
    caller = await RawWorker.connect(running.url)
    await caller.send({"type": "invokefunction", "invocation_id": "00000000-0000-4000-8000-000000000001",
                       "function_id": "stuck", "data": {}})
    await endpoint.until("stuck", 2)
    await disconnect(running, voider)
    await disconnect(running, caller)
    # before: the request stayed open until its timeout_ms, whoever was left to take its answer
    await endpoint.until("dropped", 1)
    assert endpoint.dropped == 1  # the void call's request is still open: its caller asked for no answer
    assert module.stats()["in_flight"] == 1
    endpoint.release.set()


VOID = {"action": {"type": "void"}}


async def _void_calls(worker: RawWorker, function_id: str, n: int) -> None:
    """``n`` void calls of ``function_id`` sent by ``worker``."""
    for _ in range(n):
        await worker.send({"type": "invokefunction", "function_id": function_id, "data": {}, **VOID})


async def test_one_worker_holds_at_most_its_share_of_the_calls_in_flight(endpoint: Endpoint) -> None:
    engine, module = await _engine({"max_calls_in_flight": 6, "max_calls_per_caller": 2})
    try:
        owner = await RawWorker.connect(engine.url)
        await owner.register("stuck", invocation={"url": f"{endpoint.url}/stuck", "timeout_ms": 20_000})
        await owner.register("ok", invocation={"url": f"{endpoint.url}/ok", "timeout_ms": 5_000})
        await owner.sync()
        hog = await RawWorker.connect(engine.url)
        await _void_calls(hog, "stuck", 6)
        refused = (await hog.call("stuck", {}))["error"]
        assert refused["code"] == "too_many_calls"
        assert f"worker {hog.worker_id} has 2 HTTP calls in flight (max_calls_per_caller 2)" in refused["message"]
        await endpoint.until("stuck", 2)
        stats = module.stats()
        assert (stats["in_flight"], stats["busiest_caller"], stats["refused"]) == (2, 2, 5)
        # before: the hog's 6 void calls filled max_calls_in_flight and this call was refused (too_many_calls)
        other = await RawWorker.connect(engine.url)
        assert await other.result_of("ok", {}) == {"ok": 1}
        assert endpoint.requests["stuck"] == 2
        endpoint.release.set()
    finally:
        await engine.stop()


async def test_calls_left_running_by_workers_that_left_share_one_share(endpoint: Endpoint) -> None:
    engine, module = await _engine({"max_connections_per_host": 1, "max_calls_in_flight": 8,
                                    "max_calls_per_caller": 3})
    try:
        owner = await RawWorker.connect(engine.url)
        await owner.register("stuck", invocation={"url": f"{endpoint.url}/stuck", "timeout_ms": 20_000})
        await owner.register("ok", invocation={"url": f"{endpoint.url.replace('127.0.0.1', 'localhost')}/ok",
                                               "timeout_ms": 5_000})
        await owner.sync()
        for life in range(3):  # a worker reconnecting in a loop: 3 void calls each time (1 sent, then 2 waiting)
            hog = await RawWorker.connect(engine.url)
            await _void_calls(hog, "stuck", 3)
            await hog.sync()
            await endpoint.until("stuck", 1)
            await disconnect(engine, hog)
            stats = module.stats()
            # the first life's 3 calls stay; every later life's are dropped unsent (before: kept, 9 > 8 in flight)
            assert (stats["in_flight"], stats["left_running"], stats["refused"]) == (3, 3, 3 * life), stats
        other = await RawWorker.connect(engine.url)
        # before: refused, the 8 calls left by the reconnecting worker filled max_calls_in_flight
        assert await other.result_of("ok", {}) == {"ok": 1}
        endpoint.release.set()
        await endpoint.until("stuck", 3)
        assert endpoint.requests["stuck"] == 3
    finally:
        await engine.stop()


async def test_a_call_whose_worker_left_before_it_started_counts_as_left_running(endpoint: Endpoint) -> None:
    engine, module = await _engine({"max_calls_in_flight": 8, "max_calls_per_caller": 2})
    try:
        builtin = await module.register_external("stuck", {"url": f"{endpoint.url}/stuck", "timeout_ms": 20_000},
                                                 None)
        # a built-in call's task that starts after its worker's disconnect was handled (no worker "w-gone")
        calls = [asyncio.ensure_future(builtin.handler({}, InvocationContext("w-gone"))) for _ in range(3)]
        await endpoint.until("stuck", 2)
        with pytest.raises(EngineError) as caught:
            await calls[2]
        assert caught.value.code == "too_many_calls"
        assert "its worker w-gone disconnected and 2 HTTP calls are left running" in caught.value.message
        # before: counted under a worker id nobody would ever take off, with a share of its own
        assert (module.stats()["left_running"], module.stats()["busiest_caller"]) == (2, 0)
        endpoint.release.set()
        assert await asyncio.gather(*calls[:2]) == [{"ok": 1}] * 2
        assert module.stats()["left_running"] == 0
    finally:
        await engine.stop()


async def test_the_engines_stop_ends_calls_in_flight_as_invocation_stopped(
        endpoint: Endpoint, caplog: pytest.LogCaptureFixture) -> None:
    engine, _ = await _engine()
    owner = await RawWorker.connect(engine.url)
    await owner.register("stuck", invocation={"url": f"{endpoint.url}/stuck", "timeout_ms": 20_000})
    await owner.sync()
    caller = await RawWorker.connect(engine.url)
    n = OLD_TOTAL_CAP + 20  # 20 of them waiting for a connection
    for i in range(n):
        await caller.send({"type": "invokefunction", "invocation_id": f"00000000-0000-4000-8000-{i:012d}",
                           "function_id": "stuck", "data": {}})
    await endpoint.until("stuck", OLD_TOTAL_CAP)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="iii_engine"):
        await engine.stop()
    errors = [(await caller.expect("invocationresult"))["error"] for _ in range(n)]
    # before: 100 http_request_failed "Server disconnected" and 20 internal_error with a traceback each
    assert {e["code"] for e in errors} == {"invocation_stopped"}
    assert errors[0]["message"] == "Invocation of stuck stopped: the engine is stopping"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert [r.getMessage() for r in caplog.records if r.name == "iii_engine.modules.http.functions"] == [
        f"HTTP functions: {n} call(s) in flight stopped by the engine's stop"]


async def test_an_unregister_drops_the_calls_not_sent_yet(engine: tuple[Engine, HttpFunctionsModule],
                                                          endpoint: Endpoint) -> None:
    _, module = engine
    stuck = await _stuck_calls(module, endpoint, OLD_TOTAL_CAP + 3, function_id="gone")
    await endpoint.until("stuck", OLD_TOTAL_CAP)
    module.unregister_external("gone", None)
    endpoint.release.set()
    outcomes = await asyncio.gather(*stuck, return_exceptions=True)
    # before: the 3 waiting were sent once connections came free, after the unregister
    assert outcomes[:OLD_TOTAL_CAP] == [{"ok": 1}] * OLD_TOTAL_CAP
    assert [(e.code, e.message) for e in outcomes[OLD_TOTAL_CAP:] if isinstance(e, EngineError)] == [
        ("function_not_found", "Function gone not found")] * 3
    assert endpoint.requests["stuck"] == OLD_TOTAL_CAP


def test_a_timeout_ms_past_the_maximum_is_refused_at_registration() -> None:
    for timeout in (MAX_TIMEOUT_MS + 1, 10**400):
        with pytest.raises(EngineError) as caught:
            parse_invocation("f", {"url": "https://x.example/h", "timeout_ms": timeout}, {})
        # before: 10**400 registered, then every call failed with OverflowError (internal_error)
        assert caught.value.code == "invalid_invocation"
        assert f"invocation.timeout_ms must be a positive integer of at most {MAX_TIMEOUT_MS}" in caught.value.message
    assert "an integer of 1329 bits" in str(caught.value)
    assert parse_invocation("f", {"url": "https://x.example/h", "timeout_ms": MAX_TIMEOUT_MS}, {}).timeout_ms == \
        MAX_TIMEOUT_MS


@pytest.mark.parametrize("invocation", [
    {"auth": {"type": "bearer", "token_key": "T"}},
    {"auth": {"type": "api_key", "header": "authorization", "value_key": "T"}},
    {"headers": {"Authorization": "Basic eDp5"}},
])
def test_url_credentials_and_an_authorization_header_are_refused_at_registration(
        invocation: dict[str, Any]) -> None:
    with pytest.raises(EngineError) as caught:
        # before: registered, then every call failed ("Cannot combine AUTHORIZATION header with ... URL")
        parse_invocation("f", {"url": "https://user:pw@x.example/h", **invocation}, {"T": "t0k"})
    assert caught.value.code == "invalid_invocation"
    assert "invocation.url holds credentials (user:password@)" in caught.value.message
    assert "pw" not in caught.value.message
    # either alone is fine, and so is an HMAC signature (its own header)
    parse_invocation("f", {"url": "https://user:pw@x.example/h"}, {})
    parse_invocation("f", {"url": "https://x.example/h", **invocation}, {"T": "t0k"})
    parse_invocation("f", {"url": "https://user:pw@x.example/h", "auth": {"type": "hmac", "secret_key": "T"}},
                     {"T": "t0k"})


async def test_a_call_after_the_stop_began_is_stopped(endpoint: Endpoint) -> None:
    engine, module = await _engine()
    await module.register_external("ok", {"url": f"{endpoint.url}/ok"}, None)
    await engine.stop()
    with pytest.raises(EngineError) as caught:
        await module.call("ok", {})  # before: http_request_failed, "HttpFunctionsModule is not started"
    assert (caught.value.code, caught.value.message) == ("invocation_stopped",
                                                          "Invocation of ok stopped: the engine is stopping")


async def test_connections_to_every_endpoint_together_are_bounded(endpoint: Endpoint) -> None:
    # Before: no total (limit=0), so endpoints that never answer each took their 100 connections: 100 of them took
    # 1,023 of the engine's 1,024 file descriptors and workers could no longer connect. Now max_connections (an
    # eighth of the open-file limit by default) bounds them all, and one endpoint takes at most half of it.
    engine, module = await _engine({"max_connections": 6})
    try:
        assert module.per_host == 3
        other = endpoint.url.replace("127.0.0.1", "localhost")  # another endpoint, as the module keys them
        await module.register_external("other", {"url": f"{other}/stuck", "timeout_ms": 20_000}, None)
        stuck = await _stuck_calls(module, endpoint, 5)
        await endpoint.until("stuck", 3)
        more = [asyncio.ensure_future(module.call("other", {})) for _ in range(5)]
        await endpoint.until("stuck", 6)
        stats = module.stats()
        assert stats["in_flight"] == 10 and stats["waiting_for_connection"] == 4
        assert endpoint.count("stuck") == 6  # 3 + 3 requests reached the endpoints, never more than 6 connections
        endpoint.release.set()
        assert await asyncio.gather(*stuck, *more) == [{"ok": 1}] * 10
    finally:
        await engine.stop()
