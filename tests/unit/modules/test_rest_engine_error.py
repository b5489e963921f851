"""An :class:`EngineError` out of a request's run (here its condition function's) is the request's 500, with the
error's code and message and the CORS headers of the request's origin."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

from aiohttp.test_utils import make_mocked_request

from iii.wire import loads
from iii_engine.channels import ChannelRelay
from iii_engine.limits import Slots
from iii_engine.modules.base import EngineError
from iii_engine.modules.http.api import RestApiModule
from iii_engine.modules.http.routes import parse_http_trigger


class _Services:
    def __init__(self) -> None:
        self.channels = ChannelRelay()
        self.started = 0

    async def condition_passes(self, function_id: str, payload: Any, *, wait_if_busy: bool = True,
                               busy_until: float | None = None) -> bool:
        raise EngineError("boom", f"{function_id} broke")

    async def start_invocation(self, function_id: str, payload: Any) -> Any:
        self.started += 1
        raise AssertionError("a request whose condition failed must not be invoked")


async def test_an_engine_error_out_of_the_run_is_a_500_with_its_code_and_message() -> None:
    services = _Services()
    module = RestApiModule(services, {"port": 0})  # type: ignore[arg-type]
    module._limit = Slots(4)
    module._stopping = asyncio.get_running_loop().create_future()
    module.routes.add(parse_http_trigger("t", "f", {"api_path": "guarded", "condition_function_id": "cond"}))
    transport = mock.Mock()
    transport.is_closing.return_value = False
    request = make_mocked_request("GET", "/guarded", headers={"Host": "x", "Origin": "http://a.example"},
                                  transport=transport)
    response = await module._handle(request)
    assert response.status == 500
    body = loads(response.body)
    assert body["error"] == "boom: cond broke" and len(body["error_id"]) == 32
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "http://a.example")
    assert services.started == 0 and not module._races and module.in_flight == 0
    assert module._limit.free == 4
