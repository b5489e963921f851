"""Path parameters reach the handler exactly as the client escaped them; a path whose escapes are not UTF-8 is
400, not a parameter with U+FFFD in it (before: /items/%FF and /items/%FE reached the handler as the same id)."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.modules.test_http_api_bounds import Start, _route, api

__all__ = ["api"]  # the fixture, imported to be used here

pytestmark = pytest.mark.our_engine("configures the REST API module of our engine")


async def test_path_escapes_decode_exactly_or_the_request_is_400(api: Start) -> None:
    engine, _module, client = await api(default_timeout=10_000)
    worker = await _route(engine, "item", "items/:id")
    for raw, expected in [("caf%C3%A9", "café"), ("a%2Fb", "a/b")]:
        waiting = asyncio.ensure_future(client.get(f"/items/{raw}"))
        request = await worker.expect("invokefunction")
        assert request["data"]["path_params"] == {"id": expected}
        await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                           "function_id": "item", "result": {"body": "ok"}})
        assert (await waiting).status_code == 200
    response = await client.get("/items/%FF")
    assert response.status_code == 400
    assert "'/items/%FF' is not UTF-8 once percent-decoded" in response.json()["error"]
