"""Unit tests of the client's pieces that need no engine."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

import iii
from iii import ApiResponse, ChannelReader, ChannelWriter, InitOptions, ReconnectionConfig, TriggerAction
from iii.connection import backoff_delay_ms
from iii.errors import ShuttingDownError
from iii.iii import III, _action_to_wire, _resolve_channels
from iii.pending_calls import ThreadWaiter
from iii.types import is_channel_ref

REFERENCE_ALL = {
    "ChannelReader", "ChannelWriter", "FunctionRef", "InitOptions", "OtelConfig", "ReconnectionConfig",
    "register_worker", "TelemetryOptions", "TriggerAction", "EnqueueResult", "FunctionInfo", "HttpAuthConfig",
    "HttpInvocationConfig", "MessageType", "RegisterFunctionFormat", "RegisterFunctionInput",
    "RegisterFunctionMessage", "RegisterServiceInput", "RegisterTriggerInput", "RegisterTriggerMessage",
    "RegisterTriggerTypeInput", "RegisterTriggerTypeMessage", "StreamChannelRef", "TriggerActionEnqueue",
    "TriggerActionVoid", "TriggerInfo", "TriggerRequest", "Logger", "Trigger", "TriggerConfig", "TriggerHandler",
    "ApiRequest", "ApiResponse", "Channel", "HttpRequest", "HttpResponse", "IIIClient", "InternalHttpRequest",
    "RemoteFunctionHandler", "IStream", "StreamContext", "http", "extract_request_format",
    "extract_response_format", "python_type_to_format",
}


def test_all_reference_names_are_exported() -> None:
    assert len(REFERENCE_ALL) == 45
    assert REFERENCE_ALL <= set(iii.__all__)
    for name in iii.__all__:
        assert hasattr(iii, name), name
    assert iii.TriggerAction is TriggerAction and iii.III is III


def test_backoff_is_capped_exponential_with_jitter() -> None:
    config = ReconnectionConfig(initial_delay_ms=100, max_delay_ms=1000, backoff_multiplier=2.0, jitter_factor=0.5)
    assert backoff_delay_ms(config, 0, rand=lambda: 0.5) == 100
    assert backoff_delay_ms(config, 2, rand=lambda: 0.5) == 400
    assert backoff_delay_ms(config, 10, rand=lambda: 0.5) == 1000
    assert backoff_delay_ms(config, 10, rand=lambda: 1.0) == 1500
    assert backoff_delay_ms(config, 10, rand=lambda: 0.0) == 500


def test_actions_to_wire() -> None:
    assert _action_to_wire(None) is None
    assert _action_to_wire(TriggerAction.Void()) == {"type": "void"}
    assert _action_to_wire(TriggerAction.Enqueue(queue="q")) == {"type": "enqueue", "queue": "q"}
    assert _action_to_wire({"type": "enqueue", "queue": "j"}) == {"type": "enqueue", "queue": "j"}
    with pytest.raises(ValueError, match="unknown trigger action"):
        _action_to_wire({"type": "later"})
    with pytest.raises(ValueError, match="string 'queue'"):
        _action_to_wire({"type": "enqueue"})


def test_channel_refs_resolve_and_plain_data_is_untouched() -> None:
    plain = {"a": [1, {"b": 2}], "c": (3,)}
    assert _resolve_channels(plain, "ws://e") is plain
    ref = {"channel_id": "c1", "access_key": "k", "direction": "read"}
    out = _resolve_channels({"in": ref, "outs": [dict(ref, direction="write")]}, "ws://e")
    assert isinstance(out["in"], ChannelReader) and out["in"].ref.channel_id == "c1"
    assert isinstance(out["outs"][0], ChannelWriter)
    assert isinstance(_resolve_channels(ref, "ws://e"), ChannelReader)
    assert not is_channel_ref({"channel_id": "c", "access_key": 1, "direction": "read"})


def test_api_response_serialises_by_field_name() -> None:
    from iii.wire import dumps

    assert dumps({"r": ApiResponse(status_code=200, body=None)}) == (
        '{"r":{"status_code":200,"body":null,"headers":{}}}'
    )


@pytest.fixture
def offline() -> Iterator[III]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = III(f"ws://127.0.0.1:{port}", InitOptions(reconnection_config=ReconnectionConfig(initial_delay_ms=5000)))
    yield client
    client.shutdown()


def test_register_function_validation_matches_reference(offline: III) -> None:
    offline.register_function("dup", lambda d: d)
    with pytest.raises(ValueError, match=r"^function id 'dup' already registered$"):
        offline.register_function({"id": "dup"}, lambda d: d)
    with pytest.raises(ValueError, match=r"^id is required$"):
        offline.register_function("  ", lambda d: d)
    with pytest.raises(TypeError, match="must be callable or HttpInvocationConfig, got int"):
        offline.register_function("x", 5)  # type: ignore[arg-type]


def test_formats_come_from_type_hints_only_for_the_string_form(offline: III) -> None:
    def typed(data: int) -> list[str]:
        return [str(data)]

    offline.register_function("typed", typed)
    offline.register_function({"id": "untyped"}, typed)
    from iii.wire import loads

    replayed = {frame["id"]: frame for frame in map(loads, offline._session.replay())}
    assert replayed["typed"]["request_format"]["type"] == "integer"
    assert replayed["typed"]["response_format"]["type"] == "array"
    assert "request_format" not in replayed["untyped"]


def test_unregistering_forgets_locally(offline: III) -> None:
    ref = offline.register_function("gone", lambda d: d)
    ref.unregister()
    assert not offline._session.has_function("gone")
    assert offline._session.replay() == []
    trigger = offline.register_trigger({"type": "cron", "function_id": "x"})
    assert len(offline._session.replay()) == 1
    trigger.unregister()
    assert offline._session.replay() == []


async def test_trigger_async_after_shutdown_raises(offline: III) -> None:
    await offline.shutdown_async()
    with pytest.raises(iii.ShuttingDownError, match="iii is shutting down"):
        await offline.trigger_async({"function_id": "x"})


def test_thread_waiter_is_settled_from_another_thread() -> None:
    waiter = ThreadWaiter()
    threading.Thread(target=waiter.set_result, args=({"ok": 1},)).start()
    assert waiter.wait(5.0, lambda: True) == {"ok": 1}
    failing = ThreadWaiter()
    failing.set_exception(TimeoutError("late"))
    failing.set_result("ignored: already settled")
    assert failing.done()
    with pytest.raises(TimeoutError, match="late"):
        failing.wait(5.0, lambda: True)


def test_thread_waiter_never_hangs_once_its_settler_is_gone() -> None:
    with pytest.raises(ShuttingDownError):
        ThreadWaiter().wait(0.01, lambda: False)
