"""R-REST on a0783bb: a request cut short (its deadline, the module's stop, or an outside cancellation) in each of the
waits before its response starts leaves no channel on the relay and no race in the module, and its call is dropped.

Drives ``RestApiModule._run`` directly (the services stand-in of tests/unit/modules/test_http_race.py) so that each
wait is reached for certain before the cut."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from iii_engine.modules.http.api import RestApiModule, _Race, _Refused, _Timeout
from tests.unit.modules.test_http_race import _module


def _race(module: RestApiModule) -> _Race:
    """The one open race."""
    (race,) = module._races
    return race


def _entered(module: RestApiModule, name: str) -> asyncio.Event:
    """An event set when the module's ``name`` wait starts."""
    event = asyncio.Event()
    original = getattr(module, name)

    async def wrapped(*args: Any) -> Any:
        event.set()
        return await original(*args)

    setattr(module, name, wrapped)
    return event


@pytest.mark.parametrize("how", ["cancel", "deadline", "stop"])
async def test_a_cut_while_the_invocation_starts_leaves_nothing(how: str) -> None:
    module, services, match = await _module()
    entered = asyncio.Event()

    async def start_invocation(function_id: str, payload: dict[str, Any]) -> Any:
        entered.set()
        await asyncio.Event().wait()  # a worker whose queue stays full

    services.start_invocation = start_invocation  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    request = make_mocked_request("POST", "/json", headers={"Host": "x"})
    run = asyncio.ensure_future(module._run(request, match, bytearray(b"body"),
                                            loop.time() + (0.05 if how == "deadline" else 30)))
    await asyncio.wait_for(entered.wait(), 5)
    assert len(services.channels) == 2  # both reserved before the call starts
    if how == "cancel":
        run.cancel()
    elif how == "stop":
        await module.stop()
    with pytest.raises(asyncio.CancelledError if how == "cancel" else _Refused if how == "stop" else _Timeout):
        await asyncio.wait_for(run, 5)
    assert len(services.channels) == 0 and not module._races


@pytest.mark.parametrize("where", ["attach", "first_chunk", "outcome"])
@pytest.mark.parametrize("how", ["cancel", "deadline", "stop"])
async def test_a_cut_in_each_wait_before_the_response_leaves_nothing(where: str, how: str) -> None:
    module, services, match = await _module()
    first_chunk, outcome_wait = _entered(module, "_first_chunk"), _entered(module, "_outcome_of")
    loop = asyncio.get_running_loop()
    request = make_mocked_request("GET", "/json", headers={"Host": "x"})
    run = asyncio.ensure_future(module._run(request, match, bytearray(),
                                            loop.time() + (0.3 if how == "deadline" else 30)))
    await asyncio.wait_for(services.called.wait(), 5)
    started, payload = services.calls[0]
    ref = payload["response"]
    if where != "attach":  # the handler attached: the first-chunk race runs
        writer = services.channels.open_local(ref["channel_id"], ref["access_key"], "write")
        await writer.send('{"type":"set_status","status_code":202}')
        await asyncio.wait_for(first_chunk.wait(), 5)
        if where == "outcome":  # closed without a body: the function's outcome decides, not yet here
            await writer.close()
            await asyncio.wait_for(outcome_wait.wait(), 5)
    # each wait is entered in the same step as the event that woke this test: the task is inside it now
    assert _race(module).armed
    if how == "cancel":
        run.cancel()
    elif how == "stop":
        await module.stop()
    with pytest.raises(asyncio.CancelledError if how == "cancel" else _Refused if how == "stop" else _Timeout):
        await asyncio.wait_for(run, 5)
    assert started.abandoned == 1
    assert len(services.channels) == 0 and not module._races
