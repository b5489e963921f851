"""The events made per call (a caller's :class:`CallSucceeded`, a callee's :class:`InvocationRequested`) are built
without the frozen dataclass's ``__init__`` (a Python-level ``object.__setattr__`` by name per field), and are the
same events: equal, hashed alike, frozen, with the same fields and repr."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from iii.iii_types import RegisterFunctionMessage
from iii.protocol.client import CallSucceeded, ClientSession, InvocationRequested


def _python_calls(run: Callable[[], Any]) -> tuple[Any, list[str]]:
    """``run()``'s result and the names of the Python-level functions it called."""
    called: list[str] = []

    def profile(frame: FrameType, event: str, _arg: Any) -> None:
        if event == "call":
            called.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        result = run()
    finally:
        sys.setprofile(None)
    return result, called


def _session() -> ClientSession:
    session = ClientSession()
    session.register_function(RegisterFunctionMessage(id="f"), invokable=True)
    session.connection_opened()
    return session


def test_invocation_requested_is_built_without_the_dataclass_init() -> None:
    session = _session()
    frame = ('{"type":"invokefunction","invocation_id":"i1","function_id":"f","data":7,'
             '"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","baggage":"k=v"}')
    events, called = _python_calls(lambda: session.receive(frame))
    assert "__init__" not in called, called
    expected = InvocationRequested("i1", "f", 7, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                   "k=v", session.generation, True)
    assert events == [expected]
    (event,) = events
    assert type(event) is InvocationRequested
    assert hash(event) == hash(expected) and repr(event) == repr(expected)
    assert dataclasses.astuple(event) == dataclasses.astuple(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.function_id = "g"  # type: ignore[misc]


def test_call_succeeded_is_built_without_the_dataclass_init() -> None:
    session = _session()
    invocation_id, _ = session.start_call("f", {"x": 1})
    assert invocation_id is not None
    frame = f'{{"type":"invocationresult","invocation_id":"{invocation_id}","function_id":"f","result":[1,2]}}'
    events, called = _python_calls(lambda: session.receive(frame))
    assert "__init__" not in called, called
    expected = CallSucceeded(invocation_id, [1, 2])
    assert events == [expected]
    (event,) = events
    assert type(event) is CallSucceeded and repr(event) == repr(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.result = None  # type: ignore[misc]
