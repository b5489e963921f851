"""The REST API's per-request waits end at the request's deadline through one shared timer (no ``asyncio.timeout``
per request), and static routes are found without a scan; behaviour is unchanged (504 at the deadline, 503 on
stop, route precedence)."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any
from unittest import mock
from urllib.parse import unquote

import pytest
from aiohttp.test_utils import make_mocked_request

from iii_engine.channels import ChannelRelay
from iii_engine.limits import Slots
from iii_engine.modules.http import routes as routes_module
from iii_engine.modules.http.api import _STOPPING, RestApiModule, _Interrupted, _Timeout
from iii_engine.modules.http.routes import RouteTable, parse_http_trigger
from tests.unit.modules.test_http_race import _Started

ANSWER = ({"status_code": 200, "body": {"ok": True}}, None)


class _Services:
    """The relay, and calls that are answered on the next loop turn unless ``answer`` is off."""

    def __init__(self, answer: bool = True) -> None:
        self.channels = ChannelRelay()
        self.answer = answer
        self.calls: list[_Started] = []
        self.called = asyncio.Event()

    async def start_invocation(self, function_id: str, payload: dict[str, Any]) -> _Started:
        loop = asyncio.get_running_loop()
        started = _Started(loop.create_future())
        if self.answer:
            loop.call_soon(started.future.set_result, ANSWER)
        self.calls.append(started)
        self.called.set()
        return started


async def _module(config: dict[str, Any] | None = None, answer: bool = True) -> tuple[RestApiModule, _Services]:
    services = _Services(answer)
    module = RestApiModule(services, {"port": 0, **(config or {})})  # type: ignore[arg-type]
    module._limit = Slots(64)
    module._stopping = asyncio.get_running_loop().create_future()
    module.routes.add(parse_http_trigger("t", "f", {"api_path": "json"}))
    return module, services


async def _dispatch(module: RestApiModule) -> Any:
    """One GET /json through the module's entry point (its client still connected)."""
    transport = mock.Mock()
    transport.is_closing.return_value = False
    request = make_mocked_request("GET", "/json", headers={"Host": "x"}, transport=transport)
    return await module._handle(request)


async def test_requests_schedule_no_timer_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    module, services = await _module()
    assert (await _dispatch(module)).status == 200  # arms the shared timers (ours, and the relay's attach deadline)
    loop = asyncio.get_running_loop()
    scheduled: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        scheduled.append(when)
        return call_at(when, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    responses = [await _dispatch(module) for _ in range(20)]
    monkeypatch.undo()
    assert {r.status for r in responses} == {200}
    # one shared timer at the oldest deadline, already armed, not one per request (asyncio.timeout_at armed one each)
    assert scheduled == []
    assert not module._races and len(services.channels) == 0
    await module.stop()
    assert module._sweep is None


async def test_an_unanswered_request_gets_504_at_its_deadline() -> None:
    module, services = await _module({"default_timeout": 50}, answer=False)
    first = asyncio.ensure_future(_dispatch(module))
    second = asyncio.ensure_future(_dispatch(module))  # ends through the re-armed shared timer
    responses = await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert [r.status for r in responses] == [504, 504]
    assert [s.abandoned for s in services.calls] == [1, 1]
    assert not module._races and len(services.channels) == 0


async def test_a_deadline_earlier_than_one_queued_still_ends_on_time() -> None:
    module, services = await _module({"default_timeout": 30_000}, answer=False)
    slow = asyncio.ensure_future(_dispatch(module))  # queues a deadline 30 s away
    await asyncio.wait_for(services.called.wait(), 5)
    request = make_mocked_request("GET", "/json", headers={"Host": "x"})
    match = module.routes.match("GET", "/json")
    assert match is not None
    with pytest.raises(_Timeout):
        await asyncio.wait_for(module._run(request, match, bytearray(), asyncio.get_running_loop().time() + 0.05), 5)
    assert not slow.done()
    await module.stop()
    refused = await asyncio.wait_for(slow, 5)
    assert refused.status == 503 and refused.headers["Retry-After"] == "1" and not module._races


async def test_a_stop_between_waits_ends_the_next_wait_at_once() -> None:
    module, _ = await _module()
    race = module._open_race(asyncio.get_running_loop().time() + 30)
    race.interrupt(_STOPPING)  # the task is not waiting: nothing to cancel, the stop is kept

    async def never() -> None:
        await asyncio.get_running_loop().create_future()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine left un-awaited and unclosed would warn
        with pytest.raises(_Interrupted) as interrupted:
            await module._interruptible(race, never(), None)
    assert interrupted.value.reason is _STOPPING
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    module._close_race(race)
    assert not module._races


def _table(*paths: str) -> RouteTable:
    table = RouteTable()
    for n, path in enumerate(paths):
        table.add(parse_http_trigger(f"t{n}", f"f{n}", {"api_path": path}))
    return table


def test_a_static_route_is_found_without_unquoting(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting_unquote(part: str) -> str:
        calls.append(part)
        return unquote(part)

    monkeypatch.setattr(routes_module, "unquote", counting_unquote)
    table = _table("items/:id", "items/special", "health")
    match = table.match("get", "/items/special")
    assert match is not None and (match.route.function_id, match.path_params) == ("f1", {})
    assert table.match("GET", "/health") is not None
    assert calls == []  # the scan (and its per-segment unquoting) was skipped


@pytest.mark.parametrize(
    "url, expected",
    [
        ("/items/special", ("f1", {})),
        ("/items/spec%69al", ("f1", {})),  # an escaped URL takes the scan and still finds the static route
        ("/items/42", ("f0", {"id": "42"})),
        ("/items/a%2Fb", ("f0", {"id": "a/b"})),
        ("/items/special/", None),
        ("/health/", None),
        ("health", ("f2", {})),
    ],
)
def test_matches_are_those_of_the_scan(url: str, expected: tuple[str, dict[str, str]] | None) -> None:
    match = _table("items/:id", "items/special", "health").match("GET", url)
    assert (None if match is None else (match.route.function_id, match.path_params)) == expected


def test_a_lone_colon_route_is_a_literal_and_beats_a_parameter_whatever_the_order() -> None:
    # "a/:" is literal: it wins over "a/:x" as any literal segment does (it sorted beside the parameter, and
    # whichever came first took /a/:)
    assert _table("a/:x", "a/:").match("GET", "/a/:").route.function_id == "f1"  # type: ignore[union-attr]
    assert _table("a/:", "a/:x").match("GET", "/a/:").route.function_id == "f0"  # type: ignore[union-attr]
    assert _table("a/:", "a/:x").match("GET", "/a/b").route.function_id == "f1"  # type: ignore[union-attr]
