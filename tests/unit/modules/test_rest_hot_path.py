"""The REST API's per-request path after H-REG: a JSON answer is decided without the first-chunk race's coroutines,
a bodiless request claims nothing, the two channels are made in one relay call (and still on any other relay the
old way), a static route's match is made once, and a wait cut short turns into its refusal through
``_Race.refusal``. Each keeps what the request saw before: refs, headers, path parameters, status."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from iii_engine.channels import ChannelRelay
from iii_engine.limits import Slots
from iii_engine.modules.http import api
from iii_engine.modules.http.api import _STOPPING, _Interrupted, _Refused, _Timeout
from iii_engine.modules.http.routes import RouteTable, parse_http_trigger
from tests.unit.modules.test_http_race import _module, _request


def _tripwire(name: str) -> Any:
    async def tripped(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{name} ran for a JSON answer")

    return tripped


async def test_a_json_answer_needs_neither_the_first_chunk_race_nor_its_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    module, services, match = await _module()
    monkeypatch.setattr(module, "_respond", _tripwire("_respond"))
    monkeypatch.setattr(module, "_outcome_of", _tripwire("_outcome_of"))
    running = asyncio.ensure_future(_request(module, match))
    started, _ = await services.first_call()
    started.future.set_result(({"status_code": 201, "body": {"ok": True}}, None))
    response = await asyncio.wait_for(running, 5)
    assert response.status == 201 and response.body == b'{"ok":true}'
    assert len(services.channels) == 0 and not module._races and started.abandoned == 0


async def test_a_null_result_still_answers_from_the_response_channel() -> None:
    module, services, match = await _module()
    running = asyncio.ensure_future(_request(module, match))
    started, payload = await services.first_call()
    started.future.set_result((None, None))  # decides nothing: the channel does
    ref = payload["response"]
    writer = services.channels.open_local(ref["channel_id"], ref["access_key"], "write")
    await writer.send('{"type":"set_status","status_code":204}')
    await writer.close()
    response = await asyncio.wait_for(running, 5)
    assert response.status == 204 and len(services.channels) == 0


async def test_a_deadline_during_the_outcome_wait_is_the_timeout_and_withdrawn() -> None:
    module, services, match = await _module()
    request = make_mocked_request("GET", "/json", headers={"Host": "x"})

    async def run() -> int:
        with pytest.raises(_Timeout):
            await module._run(request, match, bytearray(), asyncio.get_running_loop().time() + 0.05)
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.wait_for(run(), 5) == 0
    started, _ = services.calls[0]
    assert started.abandoned == 1 and not module._races and len(services.channels) == 0


async def test_the_refusal_of_a_cut_wait_is_its_reason_or_someone_elses_cancellation() -> None:
    module, _, _ = await _module()
    loop = asyncio.get_running_loop()

    async def wait(interrupt: bool, make: Any = None) -> tuple[BaseException, int]:
        race = module._open_race(loop.time() + 30)
        task = asyncio.current_task()
        assert task is not None
        cancelling = race.arm()
        if interrupt:
            loop.call_soon(race.interrupt, _STOPPING)  # the race's own cancellation
        else:
            loop.call_soon(task.cancel)  # someone else's (a shutdown)
        try:
            await loop.create_future()
        except asyncio.CancelledError as cancelled:
            refusal = race.refusal(cancelling, cancelled) if make is None else race.refusal(cancelling, cancelled,
                                                                                            make)
            return refusal, task.cancelling()
        finally:
            race.armed = False
            module._close_race(race)
        raise AssertionError("the wait was not cut")

    stopping, left = await asyncio.ensure_future(wait(True))
    assert isinstance(stopping, _Refused) and stopping.status == 503 and left == 0  # withdrawn
    interrupted, left = await asyncio.ensure_future(wait(True, _Interrupted))
    assert isinstance(interrupted, _Interrupted) and interrupted.reason is _STOPPING and left == 0
    theirs, left = await asyncio.ensure_future(wait(False))
    assert isinstance(theirs, asyncio.CancelledError) and left == 1  # let through, not withdrawn
    assert not module._races


def _mocked(method: str, path: str, **kwargs: Any) -> Any:
    transport = mock.Mock()
    transport.is_closing.return_value = False
    return make_mocked_request(method, path, transport=transport, **kwargs)


async def test_a_bodiless_request_makes_no_claim_on_the_body_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    module, services, _ = await _module()
    module._limit = Slots(8)
    made: list[Any] = []
    claim = api._Claim

    def counting_claim(budget: Any) -> Any:
        made.append(budget)
        return claim(budget)

    monkeypatch.setattr(api, "_Claim", counting_claim)
    running = asyncio.ensure_future(module._handle(_mocked("GET", "/json", headers={"Host": "x"})))
    started, _ = await services.first_call()
    started.future.set_result(({"body": 1}, None))
    response = await asyncio.wait_for(running, 5)
    assert response.status == 200 and made == [] and module.buffered_bytes == 0 and module.in_flight == 0


async def test_a_static_route_is_matched_by_one_shared_match_but_each_request_gets_its_own_params() -> None:
    table = RouteTable()
    table.add(parse_http_trigger("t", "f", {"api_path": "json"}))
    first, second = table.match("GET", "/json"), table.match("GET", "/json")
    assert first is not None and first is second and first.path_params == {}
    module, services, match = await _module()
    for _ in range(2):
        running = asyncio.ensure_future(_request(module, match))
        await asyncio.wait_for(services.called.wait(), 5)
        services.called.clear()
        services.calls[-1][0].future.set_result(({"body": 1}, None))
        await asyncio.wait_for(running, 5)
    (_, one), (_, two) = services.calls
    assert one["path_params"] == two["path_params"] == {}
    assert one["path_params"] is not two["path_params"] and one["path_params"] is not match.path_params


async def test_headers_reach_the_handler_lower_cased_the_last_of_a_repeated_one_winning() -> None:
    module, services, match = await _module()
    request = make_mocked_request("GET", "/json", headers=[("Host", "x"), ("X-Twice", "1"), ("x-twice", "2"),
                                                          ("X-Mixed-Case", "v")])
    running = asyncio.ensure_future(module._run(request, match, bytearray(),
                                                asyncio.get_running_loop().time() + 10))
    started, payload = await services.first_call()
    assert payload["headers"] == {"host": "x", "x-twice": "2", "x-mixed-case": "v"}
    started.future.set_result(({"body": 1}, None))
    await asyncio.wait_for(running, 5)


class _Delegating:
    """A relay that is not a ChannelRelay (another ChannelService): the module creates and fills channel by
    channel on it."""

    def __init__(self) -> None:
        self.relay = ChannelRelay()
        self.created = 0

    def create(self, buffer_size: int | None, owner: str | None, max_bytes: int | None = None) -> dict[str, Any]:
        self.created += 1
        return self.relay.create(buffer_size, owner, max_bytes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.relay, name)


async def test_on_another_relay_the_channels_are_made_one_by_one_and_the_body_is_filled() -> None:
    module, services, match = await _module()
    other = _Delegating()
    services.channels = other  # type: ignore[assignment]
    request = make_mocked_request("POST", "/json", headers={"Host": "x"})
    running = asyncio.ensure_future(module._run(request, match, bytearray(b"body"),
                                                asyncio.get_running_loop().time() + 10))
    started, payload = await services.first_call()
    assert other.created == 2 and len(other.relay) == 2
    ref = payload["request_body"]
    reader = other.relay.open_local(ref["channel_id"], ref["access_key"], "read")
    got = [message async for message in reader]
    assert got == [b"body"]
    started.future.set_result(({"body": 1}, None))
    assert (await asyncio.wait_for(running, 5)).status == 200
    await asyncio.wait_for(other.relay.wait_idle(), 5)


async def test_the_engines_relay_makes_both_channels_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    module, services, match = await _module()
    calls: list[str] = []
    monkeypatch.setattr(services.channels, "create", lambda *a, **k: calls.append("create"))
    monkeypatch.setattr(services.channels, "fill", lambda *a, **k: calls.append("fill"))
    running = asyncio.ensure_future(_request(module, match))
    started, payload = await services.first_call()
    assert calls == [] and len(services.channels) == 2
    assert payload["request_body"]["direction"] == "read" and payload["response"]["direction"] == "write"
    started.future.set_result(({"body": 1}, None))
    await asyncio.wait_for(running, 5)
    assert len(services.channels) == 0


async def test_past_max_open_the_request_is_refused_and_no_channel_is_left() -> None:
    module, services, match = await _module()
    services.channels = ChannelRelay(max_open=3)
    services.channels.create(None, owner=None)
    services.channels.create(None, owner=None)
    with pytest.raises(_Refused) as refused:
        await asyncio.wait_for(_request(module, match), 5)
    assert refused.value.status == 503 and "channels.max_open 3" in refused.value.message
    assert len(services.channels) == 2 and services.calls == []
