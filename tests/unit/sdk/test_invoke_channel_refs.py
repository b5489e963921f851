"""An incoming invocation's payload is walked for channel refs only when its frame's text could hold one (issue 10:
the walk ran on every payload, per call). A ``channel_id`` key, written plainly or with ``\\u`` escapes, is still
found and resolved; bytes frames are walked as before."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from unittest import mock

import pytest

from iii.channels import ChannelReader
from iii.handler_runner import HandlerRunner
from iii.iii_types import RegisterFunctionMessage
from iii.payloads import resolve_channels
from iii.protocol.client import ClientSession, InvocationRequested
from iii.trace_scope import TraceScope

REF = {"channel_id": "c1", "access_key": "k", "direction": "read"}


def _event(raw: str | bytes) -> InvocationRequested:
    session = ClientSession()
    session.register_function(RegisterFunctionMessage(id="echo"), invokable=True)
    session.receive(json.dumps({"type": "workerregistered", "worker_id": "w1"}))
    [event] = session.receive(raw)
    assert isinstance(event, InvocationRequested)
    return event


def _frame(data: Any) -> str:
    return json.dumps({"type": "invokefunction", "invocation_id": "i1", "function_id": "echo", "data": data})


async def _run(event: InvocationRequested) -> Any:
    runner = HandlerRunner("ws://127.0.0.1:1")
    seen: list[Any] = []
    runner.add("echo", lambda data: seen.append(data))
    await runner.start("echo", event.data, None, None, TraceScope(None), event.no_channel_refs)
    return seen[0]


def test_a_plain_payload_is_not_walked() -> None:
    event = _event(_frame({"n": 1, "s": "hello", "deep": [{"a": [1, 2]}]}))
    assert event.no_channel_refs
    with mock.patch("iii.handler_runner.resolve_channels", wraps=resolve_channels) as walk:
        assert asyncio.run(_run(event)) == {"n": 1, "s": "hello", "deep": [{"a": [1, 2]}]}
    assert walk.call_count == 0


@pytest.mark.parametrize("raw", [
    _frame({"in": REF}),
    _frame({"in": REF}).replace('"channel_id"', '"channel\\u005fid"'),  # the same key, escaped
    _frame({"in": REF}).replace('"channel_id"', '"\\u0063hannel_id"'),
    _frame({"in": REF}).encode(),  # bytes: walked whatever they hold
])
def test_a_channel_ref_is_still_resolved(raw: str | bytes) -> None:
    event = _event(raw)
    assert not event.no_channel_refs
    data = asyncio.run(_run(event))
    assert isinstance(data["in"], ChannelReader)


def test_a_text_that_only_mentions_channel_id_is_walked_and_kept() -> None:
    event = _event(_frame({"note": "channel_id", "u": "\u00e9"}))
    assert not event.no_channel_refs
    assert asyncio.run(_run(event)) == {"note": "channel_id", "u": "\u00e9"}
