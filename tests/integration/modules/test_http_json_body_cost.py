"""A JSON request body is claimed against ``max_buffered_bytes`` at four times its bytes plus its containers and values
while it is decoded, not only at its raw bytes (found by an attack: three 64 MiB JSON bodies of numbers took an
engine to 2.5 GB and froze it for 9 s, where the same bytes as octet-stream took 393 MB). One whose claim alone passes
the budget is a 413 naming the way around; a realistic body is not refused for commas inside its strings (the first
version's estimate refused them)."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.modules.test_http_api_bounds import Start, api
from tests.integration.modules.test_http_stream_bodyless import _routes

__all__ = ["api"]  # the fixture, imported to be used here

pytestmark = pytest.mark.our_engine("configures the REST API module of our engine")

NUMBERS = b"[" + b"1," * 150_000 + b"1]"  # 300 KB of text, ~8 MB of Python objects
CSV = b'{"csv": "' + b"a,b,c,1,2,3\\n" * 25_000 + b'"}'  # 300 KB: one string, decoded about its size


async def _post(api: Start, content_type: str, body: bytes = NUMBERS,
                budget: int = 1 << 20) -> tuple[int, object, int]:
    engine, module, client = await api(max_body_bytes=1 << 20, max_buffered_bytes=budget)
    worker = await _routes(engine, ("up", "POST"))
    answer = asyncio.ensure_future(client.post("/up", content=body, headers={"Content-Type": content_type}))
    done, _ = await asyncio.wait([answer, asyncio.ensure_future(worker.expect("invokefunction"))],
                                 return_when=asyncio.FIRST_COMPLETED)
    if answer not in done:  # the handler was called: answer it
        request = next(iter(done)).result()
        await worker.send({"type": "invocationresult", "invocation_id": request["invocation_id"],
                           "function_id": "up-post", "result": {"body": {"got": request["data"]["body"] is not None}}})
    response = await answer
    return response.status_code, response.json(), module.buffered_bytes


async def test_a_json_body_too_costly_to_decode_is_a_413_naming_the_way_around(api: Start) -> None:
    status, body, buffered = await _post(api, "application/json")
    # before: 200, the body decoded into ~8 MB of objects past a 1 MiB budget
    assert status == 413, body
    assert isinstance(body, dict) and "max_buffered_bytes" in body["error"] and "octet-stream" in body["error"]
    assert buffered == 0


async def test_the_same_bytes_as_octet_stream_go_through(api: Start) -> None:
    status, body, buffered = await _post(api, "application/octet-stream")
    assert (status, body, buffered) == (200, {"got": False}, 0)


async def test_a_json_string_with_commas_is_not_refused(api: Start) -> None:
    # claimed at ~3.2 MB of a 4 MiB budget; the estimate of registration frames put it at ~7.6 MB (56 bytes a comma)
    status, body, buffered = await _post(api, "application/json", CSV, budget=4 << 20)
    assert (status, body, buffered) == (200, {"got": True}, 0)


async def test_a_body_of_empty_objects_is_claimed_at_what_they_cost(api: Start) -> None:
    empties = b"[" + b"{}," * 100_000 + b"{}]"  # 300 KB decoding to ~7 MB: a flat 4x claim took 1.2 MB of it
    status, body, buffered = await _post(api, "application/json", empties, budget=4 << 20)
    assert status == 413 and buffered == 0, body
