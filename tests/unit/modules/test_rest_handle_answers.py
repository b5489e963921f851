"""The answers ``_handle`` makes around the run (they were ``_dispatch``'s): a request that comes while the module
stops is 503 with ``Retry-After``, an EngineError starting the call is 500 with its message, and both carry the CORS
headers of the request's origin and give back the request's slot."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

from aiohttp import web
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

    async def start_invocation(self, function_id: str, payload: Any) -> Any:
        self.started += 1
        raise EngineError("function_not_found", f"Function {function_id} not found")


async def _module() -> tuple[RestApiModule, _Services]:
    services = _Services()
    config = {"port": 0, "cors": {"allowed_origins": ["http://a.example"]}}
    module = RestApiModule(services, config)  # type: ignore[arg-type]
    module._limit = Slots(4)
    module._stopping = asyncio.get_running_loop().create_future()
    module.routes.add(parse_http_trigger("t", "gone::fn", {"api_path": "r"}))
    return module, services


def _request() -> Any:
    transport = mock.Mock()
    transport.is_closing.return_value = False
    return make_mocked_request("GET", "/r", headers={"Host": "x", "Origin": "http://a.example"},
                               transport=transport)


async def test_a_request_during_the_stop_is_503_with_cors_and_its_slot_back() -> None:
    module, services = await _module()
    assert module._stopping is not None
    module._stopping.set_result(None)
    response = await module._handle(_request())
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert response.headers["Access-Control-Allow-Origin"] == "http://a.example"
    assert services.started == 0 and module.in_flight == 0 and module._limit is not None
    assert module._limit.free == 4 and not module._races


async def test_an_engine_error_starting_the_call_is_500_with_cors() -> None:
    module, services = await _module()
    for _ in range(2):
        response = await module._handle(_request())
        assert isinstance(response, web.Response) and response.status == 500
        assert isinstance(response.body, bytes) and loads(response.body)["error"] == "Function gone::fn not found"
        assert response.headers["Access-Control-Allow-Origin"] == "http://a.example"
    assert services.started == 2 and module.in_flight == 0 and not module._races
    assert module._limit is not None and module._limit.free == 4
    assert len(services.channels) == 0
