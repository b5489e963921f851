"""The REST API's first-chunk race without a reader task: the function's outcome interrupts the request's own wait
for the response channel, and withdraws only its own cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from iii_engine.channels import ChannelRelay
from iii_engine.modules.http.api import RestApiModule
from iii_engine.modules.http.routes import parse_http_trigger


class _Started:
    """A started invocation whose outcome the test settles through :attr:`future`; counts its abandons."""

    def __init__(self, future: asyncio.Future[tuple[Any, Any]]) -> None:
        self.future = future
        self.abandoned = 0

    def abandon(self) -> None:
        self.abandoned += 1


class _Services:
    """Only what the request path uses: the relay and a call whose outcome the test settles."""

    def __init__(self) -> None:
        self.channels = ChannelRelay()
        self.calls: list[tuple[_Started, dict[str, Any]]] = []
        self.called = asyncio.Event()

    async def start_invocation(self, function_id: str, payload: dict[str, Any]) -> _Started:
        started = _Started(asyncio.get_running_loop().create_future())
        self.calls.append((started, payload))
        self.called.set()
        return started

    async def first_call(self) -> tuple[_Started, dict[str, Any]]:
        """The first invocation started and its payload, once there is one (at most 5 s)."""
        await asyncio.wait_for(self.called.wait(), 5)
        return self.calls[0]


async def _module() -> tuple[RestApiModule, _Services, Any]:
    services = _Services()
    module = RestApiModule(services, {"port": 0})  # type: ignore[arg-type]
    module._limit = asyncio.Semaphore(8)
    module._stopping = asyncio.get_running_loop().create_future()
    module.routes.add(parse_http_trigger("t", "f", {"api_path": "json"}))
    return module, services, module.routes.match("GET", "/json")


async def _request(module: RestApiModule, match: Any) -> Any:
    request = make_mocked_request("GET", "/json", headers={"Host": "x"})
    return await module._run(request, match, bytearray(), asyncio.get_running_loop().time() + 10)


async def test_a_result_interrupts_the_wait_and_leaves_the_task_uncancelled() -> None:
    module, services, match = await _module()

    async def run() -> tuple[Any, int]:
        response = await _request(module, match)
        task = asyncio.current_task()
        assert task is not None
        await asyncio.sleep(0)  # a cancellation left behind would be raised here
        return response, task.cancelling()

    running = asyncio.ensure_future(run())
    started, _ = await services.first_call()
    started.future.set_result(({"status_code": 201, "body": {"ok": True}}, None))
    response, cancelling = await asyncio.wait_for(running, 5)
    assert response.status == 201 and response.body == b'{"ok":true}' and cancelling == 0
    assert not module._races and len(services.channels) == 0


async def test_a_null_result_keeps_waiting_for_the_channel() -> None:
    module, services, match = await _module()
    running = asyncio.ensure_future(_request(module, match))
    started, payload = await services.first_call()
    started.future.set_result((None, None))
    ref = payload["response"]
    writer = services.channels.open_local(ref["channel_id"], ref["access_key"], "write")
    await writer.send('{"type":"set_status","status_code":202}')
    await writer.close()  # closed without a body
    response = await asyncio.wait_for(running, 5)
    assert response.status == 202


async def test_an_outside_cancellation_still_propagates() -> None:
    module, services, match = await _module()
    running = asyncio.ensure_future(_request(module, match))
    started, _ = await services.first_call()
    running.cancel()
    started.future.set_result(({"body": 1}, None))  # the outcome lands in the same loop turn
    with pytest.raises(asyncio.CancelledError):
        await running
    assert started.abandoned == 1 and not module._races


async def test_stop_interrupts_a_waiting_request_with_503() -> None:
    module, services, match = await _module()
    running = asyncio.ensure_future(_request(module, match))
    await services.first_call()
    await module.stop()
    from iii_engine.modules.http.api import _Refused

    with pytest.raises(_Refused) as refused:
        await asyncio.wait_for(running, 5)
    assert refused.value.status == 503 and services.calls[0][0].abandoned == 1
