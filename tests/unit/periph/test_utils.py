"""iii.utils.http with a fake response writer, and safe_stringify."""

from __future__ import annotations

import json
from typing import Any

import pytest

from iii.types import ApiResponse, HttpRequest, HttpResponse, InternalHttpRequest
from iii.utils import http, is_channel_ref, safe_stringify


class FakeStream:
    def __init__(self, writer: FakeWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> None:
        self._writer.events.append(("bytes", data))


class FakeWriter:
    """Records what a handler sends through its response channel."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.stream = FakeStream(self)

    async def send_message_async(self, message: str) -> None:
        self.events.append(("text", json.loads(message)))

    def close(self) -> None:
        self.events.append(("close", None))

    async def close_async(self) -> None:
        self.events.append(("close_async", None))

    async def abort(self, reason: str = "") -> None:
        self.events.append(("abort", reason))


def _raw(writer: FakeWriter, **extra: Any) -> dict[str, Any]:
    return {
        "path_params": {"id": "7"},
        "query_params": {"q": "x"},
        "body": {"n": 1},
        "headers": {"content-type": "application/json"},
        "method": "POST",
        "path": "items/:id",
        "trigger": {"type": "http", "path": "items/:id", "method": "POST"},
        "response": writer,
        "request_body": "reader-object",
        **extra,
    }


async def test_json_response_leaves_the_untouched_writer_alone() -> None:
    seen: list[HttpRequest] = []

    async def handler(req: HttpRequest, res: HttpResponse) -> ApiResponse[Any]:
        seen.append(req)
        return ApiResponse(status_code=201, body={"id": req.path_params["id"]})

    writer = FakeWriter()
    result = await http(handler)(_raw(writer))
    assert isinstance(result, ApiResponse) and result.status_code == 201 and result.body == {"id": "7"}
    assert writer.events == []
    [req] = seen
    assert (req.path_params, req.query_params, req.body, req.method) == ({"id": "7"}, {"q": "x"}, {"n": 1}, "POST")
    assert req.headers == {"content-type": "application/json"} and req.request_body == "reader-object"  # type: ignore[comparison-overlap]


async def test_streaming_returns_none_and_closes_the_writer() -> None:
    async def handler(req: HttpRequest, res: HttpResponse) -> ApiResponse[Any]:
        await res.status(206)
        await res.headers({"content-type": "text/plain"})
        res.stream.write(b"hello")
        return ApiResponse(status_code=200)  # would win the engine's race and drop the stream

    writer = FakeWriter()
    assert await http(handler)(_raw(writer)) is None
    assert writer.events == [
        ("text", {"type": "set_status", "status_code": 206}),
        ("text", {"type": "set_headers", "headers": {"content-type": "text/plain"}}),
        ("bytes", b"hello"),
        ("close_async", None),
    ]


async def test_returning_nothing_closes_the_writer() -> None:
    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        return None

    writer = FakeWriter()
    assert await http(handler)(_raw(writer)) is None
    assert writer.events == [("close_async", None)]


async def test_writer_without_close_async_is_closed_synchronously() -> None:
    class OldWriter(FakeWriter):
        close_async = None  # type: ignore[assignment]

    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        res.writer.stream.write(b"x")

    writer = OldWriter()
    assert await http(handler)(_raw(writer)) is None
    assert writer.events == [("bytes", b"x"), ("close", None)]


async def test_error_after_streaming_aborts_and_propagates() -> None:
    """Aborted, not closed: closed, the client's response ended as a complete 200 (11 of 40 tries in an attack),
    the rows after the error missing."""
    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        await res.status(200)
        raise RuntimeError("half way")

    writer = FakeWriter()
    with pytest.raises(RuntimeError, match="half way"):
        await http(handler)(_raw(writer))
    assert writer.events[-1] == ("abort", "the handler raised RuntimeError")
    assert ("close_async", None) not in writer.events


async def test_error_before_streaming_leaves_the_writer_for_the_500() -> None:
    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        raise KeyError("missing")

    writer = FakeWriter()
    with pytest.raises(KeyError):
        await http(handler)(_raw(writer))
    assert writer.events == []


async def test_internal_request_object_and_defaults() -> None:
    seen: list[HttpRequest] = []

    async def handler(req: HttpRequest, res: HttpResponse) -> ApiResponse[Any]:
        seen.append(req)
        return ApiResponse(status_code=200)

    writer = FakeWriter()
    internal = InternalHttpRequest(
        path_params={}, query_params={}, body=None, headers={}, method="DELETE",
        response=writer, request_body=None,  # type: ignore[arg-type]
    )
    await http(handler)(internal)
    await http(handler)({"response": writer, "request_body": None, "query_params": None})
    assert seen[0].method == "DELETE"
    assert (seen[1].method, seen[1].query_params, seen[1].path_params, seen[1].headers) == ("GET", {}, {}, {})


async def test_missing_response_channel_is_a_clear_error() -> None:
    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        return None

    with pytest.raises(ValueError, match="no 'response' channel"):
        await http(handler)({"path_params": {}})


def test_wrapper_keeps_the_handler_name() -> None:
    async def get_item(req: HttpRequest, res: HttpResponse) -> None:
        """Docs."""

    wrapped = http(get_item)
    assert (wrapped.__name__, wrapped.__doc__) == ("get_item", "Docs.")


def test_safe_stringify() -> None:
    assert safe_stringify({"a": [1, None, True]}) == '{"a": [1, null, true]}'
    assert safe_stringify({1, 2}).startswith('"{')  # str() of a set, as a JSON string
    loop: dict[str, Any] = {}
    loop["self"] = loop
    assert safe_stringify(loop) == "[unserializable]"


def test_is_channel_ref() -> None:
    assert is_channel_ref({"channel_id": "c", "access_key": "k", "direction": "write", "extra": 1})
    assert not is_channel_ref({"channel_id": "c", "access_key": "k", "direction": "sideways"})
    assert not is_channel_ref(["channel_id"])
