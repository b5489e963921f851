"""The REST API's plain JSON request path does less work per request (H-REST) and keeps its guarantees.

A free concurrency slot is taken without a coroutine (``iii_engine.limits.Slots``, not ``asyncio.Semaphore``),
yet a request never passes one that waits; the waits written out for the invocation's start and for the outcome
still end at the deadline (504) and at the module's stop (503) and leave the task uncancelled, while anyone else's
cancellation still goes through; a header-less answer skips the head checks but keeps its status rules.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from types import FrameType
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from aiohttp.web import BaseRequest

from iii_engine.channels import ChannelRelay
from iii_engine.limits import Slots
from iii_engine.modules.http.api import RestApiModule, _Timeout, result_response
from iii_engine.modules.http.routes import parse_http_trigger
from tests.polling import until
from tests.unit.modules.test_http_race import _Started

ANSWER = ({"status_code": 200, "body": {"ok": True}}, None)


class _Transport:
    """An open client connection, as far as the request path looks."""

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _Services:
    """The relay, and calls answered on the next loop turn; with ``hold``, each call waits for ``go`` first (a
    worker whose queue is full) and is answered only once ``go`` is set."""

    def __init__(self, hold: bool = False) -> None:
        self.channels = ChannelRelay()
        self.hold = hold
        self.go = asyncio.Event()
        self.started: list[str] = []
        self.entered: asyncio.Queue[str] = asyncio.Queue()

    async def start_invocation(self, function_id: str, payload: dict[str, Any]) -> _Started:
        name = payload["headers"].get("x-name", "")
        self.entered.put_nowait(name)
        if self.hold:
            await self.go.wait()
        self.started.append(name)
        loop = asyncio.get_running_loop()
        started = _Started(loop.create_future())
        loop.call_soon(started.future.set_result, ANSWER)
        return started


async def _module(services: _Services, config: dict[str, Any] | None = None, slots: int = 8) -> RestApiModule:
    module = RestApiModule(services, {"port": 0, **(config or {})})  # type: ignore[arg-type]
    module._limit = Slots(slots)
    module._stopping = asyncio.get_running_loop().create_future()
    module.routes.add(parse_http_trigger("t", "f", {"api_path": "json"}))
    return module


def _request(name: str = "", origin: str | None = None) -> BaseRequest:
    headers = {"Host": "x", "X-Name": name}
    if origin is not None:
        headers["Origin"] = origin
    return make_mocked_request("GET", "/json", headers=headers, transport=_Transport())


async def test_a_free_slot_is_taken_without_a_coroutine(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _Services()
    module = await _module(services, slots=3)
    assert module._limit is not None
    acquired: list[int] = []
    take = Slots.take

    async def counting_take(self: Slots) -> None:
        acquired.append(1)
        await take(self)

    monkeypatch.setattr(Slots, "take", counting_take)
    seen: list[tuple[int, int]] = []
    start = services.start_invocation

    async def watching_start(function_id: str, payload: dict[str, Any]) -> _Started:
        assert module._limit is not None
        seen.append((module._limit.free, module.in_flight))
        return await start(function_id, payload)

    monkeypatch.setattr(services, "start_invocation", watching_start)
    responses = [await module._handle(_request()) for _ in range(3)]
    assert [r.status for r in responses] == [200, 200, 200]
    assert acquired == []  # before: one Semaphore.acquire coroutine per request
    assert seen == [(2, 1)] * 3  # the slot was held while the call ran ...
    assert module._limit.free == 3 and module.in_flight == 0  # ... and given back


async def test_a_request_never_passes_one_waiting_for_a_slot() -> None:
    services = _Services(hold=True)
    module = await _module(services, slots=1)
    assert module._limit is not None
    first = asyncio.ensure_future(module._handle(_request("first")))
    assert await asyncio.wait_for(services.entered.get(), 5) == "first"  # holds the only slot
    second = asyncio.ensure_future(module._handle(_request("second")))
    await until(lambda: bool(module._limit and module._limit._waiters), 5)  # `second` waits for the slot
    services.go.set()
    third = asyncio.ensure_future(module._handle(_request("third")))  # arrives while `second` waits
    responses = await asyncio.wait_for(asyncio.gather(first, second, third), 5)
    assert [r.status for r in responses] == [200, 200, 200]
    assert services.started == ["first", "second", "third"]
    assert module._limit.free == 1 and not module._races and len(services.channels) == 0


async def test_a_deadline_or_a_stop_ends_a_start_that_waits_for_room() -> None:
    services = _Services(hold=True)  # the worker's queue stays full
    module = await _module(services, {"default_timeout": 50})
    response = await asyncio.wait_for(module._handle(_request()), 5)
    assert response.status == 504
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the deadline's cancellation was withdrawn

    services = _Services(hold=True)
    module = await _module(services, {"default_timeout": 30_000})
    waiting = asyncio.ensure_future(module._handle(_request()))
    await asyncio.wait_for(services.entered.get(), 5)
    await module.stop()
    response = await asyncio.wait_for(waiting, 5)
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert not module._races and services.started == []


@pytest.mark.parametrize("hold", [True, False])  # waiting for room in the worker's queue / for the outcome
async def test_a_shutdown_cancellation_of_a_waiting_request_goes_through(hold: bool) -> None:
    services = _Services(hold=hold)
    if not hold:
        services.start_invocation = _never_answered  # type: ignore[method-assign]
    module = await _module(services)
    request = asyncio.ensure_future(module._handle(_request()))
    if hold:
        await asyncio.wait_for(services.entered.get(), 5)
    else:
        await until(lambda: any(race.armed for race in module._races), 5)  # waits for its outcome
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert not module._races and module.in_flight == 0


async def _never_answered(function_id: str, payload: dict[str, Any]) -> _Started:
    return _Started(asyncio.get_running_loop().create_future())


async def test_the_outcome_wait_ends_at_the_deadline_and_drops_the_call() -> None:
    services = _Services()
    services.start_invocation = _never_answered  # type: ignore[method-assign]
    module = await _module(services, {"default_timeout": 50})
    match = module.routes.match("GET", "/json")
    assert match is not None
    with pytest.raises(_Timeout):
        await asyncio.wait_for(module._run(_request(), match, bytearray(), asyncio.get_running_loop().time() + 0.05),
                               5)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert not module._races and len(services.channels) == 0


@pytest.mark.parametrize(("result", "status", "headers", "body"), [
    ({"status_code": 201, "body": {"ok": True}}, 201, {"Content-Type": "application/json"}, b'{"ok":true}'),
    ({"statusCode": 202}, 202, {"Content-Type": "application/json"}, b"{}"),
    ({"status_code": 103, "body": 1}, 502, {"Content-Type": "application/json"},
     b'{"error":"status 103 is informational, not a final response status"}'),
    ({"status_code": 200, "body": "x", "headers": {"x-a": "1", "Content-Length": "9"}}, 200,
     {"Content-Type": "application/json", "x-a": "1"}, b'"x"'),
])
def test_answers_with_and_without_headers(result: dict[str, Any], status: int, headers: dict[str, str],
                                          body: bytes) -> None:
    response = result_response(result)
    assert (response.status, dict(response.headers), response.body) == (status, headers, body)


async def test_cors_headers_only_for_a_request_with_an_origin() -> None:
    module = await _module(_Services())
    plain = await module._handle(_request())
    assert "Access-Control-Allow-Origin" not in plain.headers
    cross = await module._handle(_request(origin="https://a.example"))
    assert cross.headers["Access-Control-Allow-Origin"] == "*" and cross.status == 200


async def test_the_plain_json_path_stays_within_its_call_budget() -> None:
    """A guard for the hot path's cost: Python calls (and coroutine resumptions) made in this module and in asyncio's
    locks by one plain JSON request. It was 41 + 10 before H-REST, 33 + 5 after. Raise the budget only for work
    the request needs, and measure it (bench/http_api.py)."""
    services = _Services()
    module = await _module(services)
    await module._handle(_request())  # warm: the relay's first timers and id batch
    calls: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            path = frame.f_code.co_filename.replace("\\", "/")
            if "/iii_engine/modules/http/" in path:
                calls["module"] += 1
            elif path.endswith("/asyncio/locks.py") and frame.f_code.co_name in ("acquire", "locked", "<genexpr>"):
                calls["semaphore"] += 1

    sys.setprofile(profile)
    try:
        response = await module._handle(_request())
    finally:
        sys.setprofile(None)
    assert response.status == 200
    assert calls["semaphore"] == 0, calls
    assert calls["module"] <= 35, calls
