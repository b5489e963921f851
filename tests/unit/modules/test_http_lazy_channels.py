"""The REST API module leaves a request's channels reserved until the handler attaches: a handler that answers
with a result costs no channel machine, queue or open end; one that attaches to its response channel before its
result still gets the first-chunk race (its status and headers, its body)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import make_mocked_request

from iii_engine.modules.http.routes import parse_http_trigger
from tests.unit.modules.test_http_race import _module, _request


async def test_a_result_answers_without_making_either_channel_live() -> None:
    module, services, match = await _module()
    running = asyncio.ensure_future(_request(module, match))
    started, payload = await services.first_call()
    relay = services.channels
    assert len(relay) == 2 and not relay._channels and not relay._tasks  # both only reserved
    assert set(payload["request_body"]) == {"channel_id", "access_key", "direction"}  # refs as ever
    started.future.set_result(({"status_code": 200, "body": {"ok": True}}, None))
    response = await asyncio.wait_for(running, 5)
    assert response.status == 200 and response.body == b'{"ok":true}'
    assert len(relay) == 0 and not relay._pending


async def test_a_handler_attaching_before_its_result_is_answered_from_the_channel() -> None:
    module, services, match = await _module()
    running = asyncio.ensure_future(_request(module, match))
    started, payload = await services.first_call()
    ref = payload["response"]
    writer = services.channels.open_local(ref["channel_id"], ref["access_key"], "write")
    await writer.send('{"type":"set_status","status_code":202}')
    await writer.send('{"type":"set_headers","headers":{"x-a":"1"}}')
    await writer.close()  # no body: the (null) result is then awaited
    started.future.set_result((None, None))
    response: Any = await asyncio.wait_for(running, 5)
    assert response.status == 202 and response.headers["x-a"] == "1"
    assert len(services.channels) == 0


async def test_the_request_body_is_there_when_the_handler_attaches_late() -> None:
    module, services, _ = await _module()
    request = make_mocked_request("POST", "/json", headers={"Host": "x"})
    module.routes.add(parse_http_trigger("p", "f", {"api_path": "json", "http_method": "POST"}))
    post = module.routes.match("POST", "/json")
    assert post is not None
    running = asyncio.ensure_future(module._run(request, post, bytearray(b"a" * 100_000),
                                                asyncio.get_running_loop().time() + 10))
    started, payload = await services.first_call()
    ref = payload["request_body"]
    reader = services.channels.open_local(ref["channel_id"], ref["access_key"], "read")
    body = b"".join([message async for message in reader])  # type: ignore[misc]
    assert body == b"a" * 100_000
    started.future.set_result(({"body": len(body)}, None))
    response: Any = await asyncio.wait_for(running, 5)
    assert response.body == b"100000"
