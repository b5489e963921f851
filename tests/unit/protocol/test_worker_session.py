"""The engine's per-worker session, fed frames with no network: what each frame means and what the engine sends."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from iii.protocol import frames
from iii.protocol.worker_session import (
    OFFLOOP_PARSE_BYTES,
    Invoke,
    PingReceived,
    RegisterFunction,
    RegisterService,
    RegisterTrigger,
    RegisterTriggerType,
    Rejected,
    Result,
    TelemetryReceived,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    WorkerSession,
    read_frame,
)

ID = "8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"


def frame(**fields: Any) -> str:
    return json.dumps(fields)


@pytest.fixture
def session() -> WorkerSession:
    return WorkerSession("w1")


def test_invoke_is_a_plain_dict_with_a_canonical_id(session: WorkerSession) -> None:
    event = session.receive(frame(type="invokefunction", invocation_id=ID.upper(), function_id="f", data={"a": 1},
                                  traceparent="tp"))
    assert isinstance(event, Invoke)
    assert event.message["invocation_id"] == ID and event.message["data"] == {"a": 1}
    # the 32-digit form production also accepts is written canonically too
    hex_form = session.receive(frame(type="invokefunction", invocation_id=uuid.UUID(ID).hex, function_id="f",
                                     data=None))
    assert isinstance(hex_form, Invoke) and hex_form.message["invocation_id"] == ID
    assert session.frames_in == 2 and session.dropped_frames == 0


def test_invoke_actions_and_fire_and_forget(session: WorkerSession) -> None:
    void = session.receive(frame(type="invokefunction", function_id="f", data=1, action={"type": "void"}))
    enqueue = session.receive(frame(type="invokefunction", function_id="f", data=1,
                                    action={"type": "enqueue", "queue": "q"}))
    assert isinstance(void, Invoke) and isinstance(enqueue, Invoke)
    assert enqueue.message["action"] == {"type": "enqueue", "queue": "q"}


def test_result_needs_a_uuid(session: WorkerSession) -> None:
    ok = session.receive(frame(type="invocationresult", invocation_id=ID, function_id="f", result=[1]))
    assert isinstance(ok, Result) and ok.message["result"] == [1]
    bad = session.receive(frame(type="invocationresult", invocation_id="nope", function_id="f"))
    assert isinstance(bad, Rejected) and "not a UUID" in bad.reason
    assert bad.reply is None  # only an invokefunction is answered
    assert session.dropped_frames == 1


@pytest.mark.parametrize("raw", [
    frame(type="invokefunction", invocation_id=ID, data=1),  # no function_id
    frame(type="invokefunction", invocation_id=ID, function_id="f"),  # no data
    frame(type="invokefunction", invocation_id=ID, function_id="f", data=1, action={"type": "enqueue"}),
    frame(type="invokefunction", invocation_id=ID, function_id="f", data=1, traceparent=7),
    '{"type":"invokefunction","invocation_id":"' + ID + '","function_id":"f","data":NaN}',  # not JSON
])
def test_a_broken_invoke_with_an_id_is_answered_invalid_message(session: WorkerSession, raw: str) -> None:
    event = session.receive(raw)
    assert isinstance(event, Rejected)
    assert event.reply is not None
    reply = json.loads(event.reply)
    assert reply["type"] == "invocationresult" and reply["invocation_id"] == ID
    assert reply["error"]["code"] == "invalid_message" and reply["error"]["message"]
    assert session.dropped_frames == 1


def test_a_broken_invoke_without_an_id_is_dropped_silently(session: WorkerSession) -> None:
    event = session.receive(frame(type="invokefunction", function_id="f"))
    assert isinstance(event, Rejected) and event.reply is None


def test_invalid_message_reason_is_clipped(session: WorkerSession) -> None:
    event = session.receive(frame(type="invokefunction", invocation_id=ID, function_id="f", data=1,
                                  action={"type": "x" * 5000}))
    assert isinstance(event, Rejected) and event.reply is not None
    assert len(json.loads(event.reply)["error"]["message"]) < 1100


@pytest.mark.parametrize("raw", ["", "   ", frame(type="pong"), frame(type="workerregistered", worker_id="x")])
def test_frames_that_mean_nothing(session: WorkerSession, raw: str) -> None:
    assert session.receive(raw) is None
    assert session.frames_in == 1 and session.dropped_frames == 0


@pytest.mark.parametrize(("raw", "reason"), [
    ("[1, 2]", "JSON object"),
    (frame(type="nope"), "unknown message type"),
    (frame(id="x"), "'type'"),
    ("{", "invalid JSON"),
])
def test_undecodable_frames_say_why(session: WorkerSession, raw: str, reason: str) -> None:
    event = session.receive(raw)
    assert isinstance(event, Rejected) and reason in event.reason


def test_ping_and_pong(session: WorkerSession) -> None:
    assert isinstance(session.receive('{"type":"ping"}'), PingReceived)
    assert session.pong() == frames.PONG


def test_telemetry_frames_are_counted(session: WorkerSession) -> None:
    event = session.receive(b"OTLP{\"resourceSpans\":[]}")
    assert event == TelemetryReceived("OTLP", b'{"resourceSpans":[]}')
    assert session.telemetry_frames == 1 and session.dropped_frames == 0


def test_registrations_keep_the_fields_as_sent(session: WorkerSession) -> None:
    fn = session.receive(frame(type="registerfunction", id="a::b", description="d", request_format={"x": 1},
                               metadata={"m": True}))
    assert fn == RegisterFunction("a::b", "d", {"x": 1}, None, {"m": True}, None)
    http = session.receive(frame(type="registerfunction", id="a::h",
                                 invocation={"url": "http://example.com", "method": "POST"}))
    assert isinstance(http, RegisterFunction) and http.invocation["url"] == "http://example.com"
    assert session.receive(frame(type="unregisterfunction", id="a::b")) == UnregisterFunction("a::b")
    assert session.receive(frame(type="registerservice", id="svc")) == RegisterService("svc", "", None)
    assert session.receive(frame(type="registertriggertype", id="hook", description="h")) == \
        RegisterTriggerType("hook", "h")
    assert session.receive(frame(type="unregistertriggertype", id="hook")) == UnregisterTriggerType("hook")
    trig = session.receive(frame(type="registertrigger", id="t", trigger_type="hook", function_id="a::b",
                                 config={"k": [1]}))
    assert trig == RegisterTrigger("t", "hook", "a::b", {"k": [1]})
    assert session.receive(frame(type="unregistertrigger", id="t")) == UnregisterTrigger("t")
    answer = session.receive(frame(type="triggerregistrationresult", id="t", trigger_type="hook", function_id="f",
                                   error={"code": "c", "message": "m"}))
    assert isinstance(answer, TriggerRegistrationResult) and answer.error == {"code": "c", "message": "m"}


def test_registerservice_with_a_null_name_is_refused(session: WorkerSession) -> None:
    assert isinstance(session.receive(frame(type="registerservice", id="svc", name=None)), Rejected)


def test_big_frames_are_parsed_off_loop_and_booked_after() -> None:
    session = WorkerSession("w1")
    big = frame(type="invokefunction", invocation_id=ID, function_id="f", data="x" * OFFLOOP_PARSE_BYTES)
    assert session.parse_off_loop(big) and not session.parse_off_loop('{"type":"ping"}')
    assert not session.parse_off_loop(b"OTLP" + b" " * OFFLOOP_PARSE_BYTES)  # telemetry is not parsed here
    event = read_frame(big)  # pure: what a thread runs
    assert session.frames_in == 0
    assert isinstance(session.accept(event), Invoke) and session.frames_in == 1


def test_commands_build_the_frames_the_engine_sends(session: WorkerSession) -> None:
    assert json.loads(session.registered()) == {"type": "workerregistered", "worker_id": "w1"}
    assert json.loads(session.invoke(ID, "f", {"a": 1}, "tp")) == {
        "type": "invokefunction", "invocation_id": ID, "function_id": "f", "data": {"a": 1}, "traceparent": "tp"}
    assert json.loads(session.result(ID, "f", None, None)) == {
        "type": "invocationresult", "invocation_id": ID, "function_id": "f"}
    assert json.loads(session.register_trigger("t", "hook", "f", {"k": 1}))["config"] == {"k": 1}
    assert json.loads(session.unregister_trigger("t", "hook")) == {
        "type": "unregistertrigger", "id": "t", "trigger_type": "hook"}


def test_a_result_already_in_engine_form_is_forwarded_verbatim(session: WorkerSession) -> None:
    plain = frame(type="invocationresult", invocation_id=ID, function_id="f", result={"x": 1}, traceparent="tp")
    event = session.receive(plain)
    assert isinstance(event, Result) and event.verbatim == plain


@pytest.mark.parametrize("fields", [
    {"invocation_id": ID.upper(), "result": 1},  # the id is rewritten canonically
    {"invocation_id": ID, "result": None},  # production leaves a null result out
    {"invocation_id": ID, "result": 1, "error": {"code": "c", "message": "m"}},  # the error wins
    {"invocation_id": ID, "error": None},
    {"invocation_id": ID, "result": 1, "baggage": None},
    {"invocation_id": ID, "result": 1, "extra": True},  # unknown keys are not passed on
])
def test_other_results_are_re_encoded(session: WorkerSession, fields: dict[str, Any]) -> None:
    event = session.receive(frame(type="invocationresult", function_id="f", **fields))
    assert isinstance(event, Result) and event.verbatim is None


def test_binary_results_are_re_encoded(session: WorkerSession) -> None:
    event = session.receive(frame(type="invocationresult", invocation_id=ID, function_id="f", result=1).encode())
    assert isinstance(event, Result) and event.verbatim is None
