"""Helpers for handler authors: the ``http`` wrapper for HTTP-trigger functions, ``safe_stringify`` and
``is_channel_ref`` (defined in :mod:`iii.types`).

Example:
    >>> safe_stringify({"a": 1})
    '{"a": 1}'
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .types import is_channel_ref  # one definition, also offered here as the reference SDK does

if TYPE_CHECKING:
    from .types import ApiResponse, HttpRequest, HttpResponse

__all__ = ["http", "is_channel_ref", "safe_stringify"]

log = logging.getLogger("iii.utils")

HttpCallback = Callable[["HttpRequest", "HttpResponse"], Awaitable["ApiResponse[Any] | None"]]


class _Usage:
    """Records whether the handler touched its response: then the body is streamed, not returned."""

    def __init__(self) -> None:
        self.used = False


def _tracking_response(writer: Any, usage: _Usage) -> HttpResponse:
    from .types import HttpResponse

    class TrackingHttpResponse(HttpResponse):
        async def status(self, status_code: int) -> None:
            usage.used = True
            await super().status(status_code)

        async def headers(self, headers: dict[str, str]) -> None:
            usage.used = True
            await super().headers(headers)

        @property
        def stream(self) -> Any:
            usage.used = True
            return super().stream

        @property
        def writer(self) -> Any:
            usage.used = True
            return super().writer

        def close(self) -> None:
            usage.used = True
            super().close()

    return TrackingHttpResponse(writer)


def _field(raw: Any, name: str, default: Any) -> Any:
    if isinstance(raw, dict):
        value = raw.get(name, default)
        return default if value is None else value
    return getattr(raw, name, default)


async def _close_writer(writer: Any) -> None:
    # Prefer the awaitable close so the last body bytes are flushed before the invocation result is sent.
    close_async = getattr(writer, "close_async", None)
    if close_async is not None:
        await close_async()
        return
    close = getattr(writer, "close", None)
    if close is not None:
        close()


async def _abort_writer(writer: Any, reason: str) -> None:
    abort = getattr(writer, "abort", None)
    if abort is None:  # (a writer of another kind: ended as before)
        await _close_writer(writer)
        return
    result = abort(reason)
    if inspect.isawaitable(result):
        await result


def http(callback: HttpCallback) -> Callable[[Any], Awaitable[ApiResponse[Any] | None]]:
    """Wrap ``callback(request, response)`` into a handler for an ``http`` trigger
    (docs/protocol.md#built-in-functions).

    The engine's raw request (a dict, or the SDK's ``InternalHttpRequest``) becomes an ``HttpRequest`` plus an
    ``HttpResponse`` over the response channel. Two fixes over the reference
    (docs/protocol.md#production-behaviour-our-sdk-copes-with (T35)):

    * if the callback used the response (status, headers, stream, writer), the body is streamed: the wrapper
      returns ``None`` even if the callback returned a value, so the engine does not answer with JSON instead;
    * the response writer is closed when the callback returns after streaming or returns nothing, so the
      response ends instead of hanging until the engine's timeout (a callback that raises mid-stream gets
      its writer aborted, so the client's response is cut, never ended as if complete, and the error
      propagates; closed, it ended as a complete 200 in 11 of 40 tries with the rows after the error
      missing). A writer the callback never touched is left alone
      when it returns a value: the engine answers with that value.

    Example:
        >>> from iii.types import ApiResponse
        >>> async def hello(req, res):
        ...     return ApiResponse(status_code=200, body={"hi": req.path_params.get("name")})
        >>> handler = http(hello)  # register_function("api::hello", handler)
    """

    async def wrapper(raw: Any) -> ApiResponse[Any] | None:
        from .types import HttpRequest

        writer = _field(raw, "response", None)
        if writer is None:
            raise ValueError("http(): the request has no 'response' channel (not an http trigger request?)")
        usage = _Usage()
        request = HttpRequest(
            path_params=_field(raw, "path_params", {}),
            query_params=_field(raw, "query_params", {}),
            body=_field(raw, "body", None),
            headers=_field(raw, "headers", {}),
            method=_field(raw, "method", "GET"),
            request_body=_field(raw, "request_body", None),
        )
        try:
            result = await callback(request, _tracking_response(writer, usage))
        except BaseException as exc:
            if usage.used:  # a half-sent body: abort it rather than leave the client waiting for the timeout
                await _abort_writer(writer, f"the handler raised {type(exc).__name__}")
            raise
        if usage.used or result is None:
            await _close_writer(writer)
        if usage.used and result is not None:
            log.debug("http(): the handler streamed its response; its return value is ignored")
            return None
        return result

    wrapper.__name__ = getattr(callback, "__name__", "http_handler")
    wrapper.__qualname__ = getattr(callback, "__qualname__", wrapper.__name__)
    wrapper.__doc__ = callback.__doc__
    return wrapper


def safe_stringify(value: Any) -> str:
    """JSON text for ``value``; non-JSON values via ``str``, and ``"[unserializable]"`` if even that fails.

    Example:
        >>> safe_stringify({"when": object}).startswith('{"when": "<class')
        True
        >>> a: list[Any] = []
        >>> a.append(a)
        >>> safe_stringify(a)
        '[unserializable]'
    """
    try:
        return json.dumps(value, default=str)
    except Exception:  # (a value's own __str__ may raise anything, RecursionError included: never the caller's problem)
        return "[unserializable]"
