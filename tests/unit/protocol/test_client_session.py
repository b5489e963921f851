"""The client protocol core fed frames directly: bytes in, events out; commands in, bytes out. No network."""

from __future__ import annotations

import json
from typing import Any

import pytest

from iii.errors import ConnectionLostError, InvocationError, ShuttingDownError
from iii.iii_types import RegisterFunctionMessage, RegisterServiceMessage
from iii.protocol import frames
from iii.protocol.client import (
    CallFailed,
    CallSucceeded,
    ClientSession,
    FrameSkipped,
    InvocationRequested,
    Send,
    TriggerDropped,
    TriggerRequested,
    WorkerRegistered,
)


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def connected(session: ClientSession, worker_id: str = "w1") -> list[str]:
    replay = session.connection_opened()
    assert session.receive(frame(type="workerregistered", worker_id=worker_id)) == [WorkerRegistered(worker_id)]
    return replay


def test_replay_order_and_every_registration_kind() -> None:
    session = ClientSession()
    session.register_function(RegisterFunctionMessage(id="f"), invokable=True)
    session.register_trigger("cron", "f", {"expression": "* * *"})
    session.register_service(RegisterServiceMessage(id="svc", name="svc"))
    session.register_trigger_type("hook", "hooks")
    kinds = [json.loads(f)["type"] for f in session.connection_opened()]
    # Trigger types before the triggers that may use them, functions before their triggers.
    assert kinds == ["registertriggertype", "registerservice", "registerfunction", "registertrigger"]
    assert session.generation == 1
    session.connection_opened()
    assert session.generation == 2


def test_unregistered_things_are_not_replayed() -> None:
    session = ClientSession()
    session.register_function(RegisterFunctionMessage(id="f"), invokable=True)
    trigger_id, _ = session.register_trigger("cron", "f", None)
    session.register_trigger_type("hook", "hooks")
    assert json.loads(session.unregister_function("f")) == {"type": "unregisterfunction", "id": "f"}
    assert json.loads(session.unregister_trigger(trigger_id, "cron"))["id"] == trigger_id
    session.unregister_trigger_type("hook")
    assert session.connection_opened() == []


def test_duplicate_function_id_is_refused_by_name() -> None:
    session = ClientSession()
    session.register_function(RegisterFunctionMessage(id="f"), invokable=True)
    with pytest.raises(ValueError, match="function id 'f' already registered"):
        session.register_function(RegisterFunctionMessage(id="f"), invokable=False)


def test_call_result_and_error_become_events_once() -> None:
    session = ClientSession()
    ok_id, ok_frame = session.start_call("math::add", {"a": 1}, traceparent="00-aa-bb-01")
    assert ok_id is not None
    sent = json.loads(ok_frame)
    assert sent == {"type": "invokefunction", "invocation_id": ok_id, "function_id": "math::add",
                    "data": {"a": 1}, "traceparent": "00-aa-bb-01"}
    assert session.receive(frame(type="invocationresult", invocation_id=ok_id, result=3)) == [
        CallSucceeded(ok_id, 3)]
    # A second result for the same call is not an event any more.
    [late] = session.receive(frame(type="invocationresult", invocation_id=ok_id, result=4))
    assert isinstance(late, FrameSkipped) and "unknown or expired" in late.reason

    bad_id, _ = session.start_call("f", None)
    assert bad_id is not None
    [failed] = session.receive(frame(type="invocationresult", invocation_id=bad_id,
                                     error={"code": "boom", "message": "no"}))
    assert isinstance(failed, CallFailed) and isinstance(failed.error, InvocationError)
    assert (failed.error.code, failed.error.message) == ("boom", "no")


def test_void_call_is_not_pending() -> None:
    session = ClientSession()
    invocation_id, raw = session.start_call("f", 1, action={"type": "void"})
    assert invocation_id is None
    assert "invocation_id" not in json.loads(raw)
    assert session.close() == []


def test_disconnect_fails_calls_that_reached_the_socket_and_keeps_queued_ones() -> None:
    session = ClientSession()
    connected(session)
    written, _ = session.start_call("written", None)
    queued, _ = session.start_call("queued", None)
    assert written is not None and queued is not None
    [failure] = session.connection_lost(queued=[queued])
    assert failure.invocation_id == written and isinstance(failure.error, ConnectionLostError)
    assert "while invoking 'written'" in str(failure.error)
    assert session.is_pending(queued) and not session.is_pending(written)
    assert session.worker_id is None
    # The queued call is still answered after the reconnect.
    connected(session, "w2")
    assert session.receive(frame(type="invocationresult", invocation_id=queued, result=1)) == [
        CallSucceeded(queued, 1)]


def test_reconnect_reports_the_lost_worker_once_for_recovery() -> None:
    session = ClientSession()
    connected(session, "w1")
    register_frame, lost = session.connection_ready({"runtime": "python"})
    assert lost is None
    assert json.loads(register_frame) == {"type": "invokefunction", "function_id": "engine::workers::register",
                                          "data": {"runtime": "python"}, "action": {"type": "void"}}
    session.connection_lost(queued=[])
    connected(session, "w2")
    assert session.connection_ready({})[1] == "w1"
    assert session.connection_ready({})[1] is None


def test_recovery_lists_only_what_the_engine_lost() -> None:
    session = ClientSession()
    session.register_function(RegisterFunctionMessage(id="kept"), invokable=True)
    session.register_function(RegisterFunctionMessage(id="lost"), invokable=True)
    kept_trigger, _ = session.register_trigger("cron", "kept", None)
    lost_trigger, _ = session.register_trigger("cron", "lost", None)
    assert [json.loads(f)["id"] for f in session.missing_functions(["kept", "other"])] == ["lost"]
    assert [json.loads(f)["id"] for f in session.missing_triggers([kept_trigger])] == [lost_trigger]


def test_shutdown_fails_every_pending_call() -> None:
    session = ClientSession()
    first, _ = session.start_call("a", None)
    second, _ = session.start_call("b", None)
    failures = session.close()
    assert {f.invocation_id for f in failures} == {first, second}
    assert all(isinstance(f.error, ShuttingDownError) for f in failures)
    assert not session.is_pending(first or "")


def test_a_call_under_way_at_the_shutdown_notes_its_cause() -> None:
    # a thread's call in flight as the interpreter's exit shut the client down heard only "iii is shutting down"
    session = ClientSession()
    session.start_call("a", None)
    [failure] = session.close("shut down by the interpreter's exit")
    assert isinstance(failure.error, ShuttingDownError)
    assert failure.error.__notes__ == ["shut down by the interpreter's exit"]


def test_incoming_invocation_of_a_local_function() -> None:
    session = ClientSession()
    session.register_function(RegisterFunctionMessage(id="echo"), invokable=True)
    connected(session)
    [event] = session.receive(frame(type="invokefunction", invocation_id="i1", function_id="echo",
                                    data={"x": 1}, traceparent="tp", baggage="b=1"))
    assert event == InvocationRequested("i1", "echo", {"x": 1}, "tp", "b=1", 1)
    answer = session.answer("i1", "echo", result={"x": 1}, generation=event.generation)
    assert answer == frames.invocation_result("i1", "echo", result={"x": 1})


def test_answers_of_an_older_connection_are_dropped() -> None:
    session = ClientSession()
    session.register_function(RegisterFunctionMessage(id="echo"), invokable=True)
    connected(session)
    [event] = session.receive(frame(type="invokefunction", invocation_id="i1", function_id="echo", data=None))
    assert isinstance(event, InvocationRequested)
    session.connection_lost(queued=[])
    connected(session, "w2")
    assert session.answer("i1", "echo", result=1, generation=event.generation) is None


def test_unserialisable_result_becomes_an_error_answer() -> None:
    session = ClientSession()
    answer = session.answer("i1", "f", result={"bad": object()}, generation=0)
    assert answer is not None
    body = json.loads(answer)
    assert body["error"]["code"] == "result_not_sent" and "not JSON-serialisable" in body["error"]["message"]
    assert "result" not in body


@pytest.mark.parametrize(("invokable", "code"), [(None, "function_not_found"), (False, "function_not_invokable")])
def test_invocations_the_session_answers_itself(invokable: bool | None, code: str) -> None:
    session = ClientSession()
    if invokable is not None:
        session.register_function(RegisterFunctionMessage(id="f"), invokable=invokable)
    skipped, send = session.receive(frame(type="invokefunction", invocation_id="i1", function_id="f", data=None))
    assert isinstance(skipped, FrameSkipped) and isinstance(send, Send)
    assert json.loads(send.frame)["error"]["code"] == code
    assert send.droppable  # made 1:1 from the engine's frames: best effort at a full queue, as a pong is
    # Fire and forget: nobody to answer.
    assert [type(e) for e in session.receive(frame(type="invokefunction", function_id="f"))] == [FrameSkipped]


def test_trigger_registration_for_an_owned_type() -> None:
    session = ClientSession()
    session.register_trigger_type("hook", "hooks")
    connected(session)
    [event] = session.receive(frame(type="registertrigger", id="t1", trigger_type="hook", function_id="f",
                                    config={"path": "/x"}))
    assert event == TriggerRequested("t1", "hook", "f", {"path": "/x"}, 1)
    assert json.loads(session.trigger_registered(event) or "") == {
        "type": "triggerregistrationresult", "id": "t1", "trigger_type": "hook", "function_id": "f"}
    # The unregister carries what was registered.
    assert session.receive(frame(type="unregistertrigger", id="t1", trigger_type="hook")) == [
        TriggerDropped("t1", "hook", "f", {"path": "/x"})]
    assert session.receive(frame(type="unregistertrigger", id="t1", trigger_type="hook")) == [
        TriggerDropped("t1", "hook", "", None)]


def test_an_unregister_during_the_register_hook_carries_the_config() -> None:
    """The engine lists a trigger before its owner answers: an unregister then comes while the owner's register hook
    still runs. Before, it carried no config (the hook got ``config=None``: ``TypeError`` in a hook reading it, CI)."""
    session = ClientSession()
    session.register_trigger_type("hook", "hooks")
    connected(session)
    [event] = session.receive(frame(type="registertrigger", id="t1", trigger_type="hook", function_id="f",
                                    config={"k": 1}))
    assert session.receive(frame(type="unregistertrigger", id="t1", trigger_type="hook")) == [
        TriggerDropped("t1", "hook", "f", {"k": 1})]
    session.trigger_registered(event)  # the hook returns after the unregister came: nothing is kept for it
    assert session.receive(frame(type="unregistertrigger", id="t1", trigger_type="hook")) == [
        TriggerDropped("t1", "hook", "", None)]
    # a refused registration leaves nothing behind either
    [refused] = session.receive(frame(type="registertrigger", id="t2", trigger_type="hook", function_id="f",
                                      config={"k": 2}))
    session.trigger_registered(refused, error={"code": "trigger_registration_failed", "message": "no"})
    assert session.receive(frame(type="unregistertrigger", id="t2", trigger_type="hook")) == [
        TriggerDropped("t2", "hook", "", None)]


def test_trigger_registration_for_a_foreign_type_is_refused_at_once() -> None:
    session = ClientSession()
    [send] = session.receive(frame(type="registertrigger", id="t1", trigger_type="nope", function_id="f"))
    assert isinstance(send, Send)
    assert json.loads(send.frame)["error"]["code"] == "trigger_type_not_found"
    [skipped] = session.receive(frame(type="unregistertrigger", id="t1", trigger_type="nope"))
    assert isinstance(skipped, FrameSkipped)


@pytest.mark.parametrize(("raw", "words"), [
    ("not json", "not JSON"),
    ("[1,2]", "not a JSON object"),
    ('{"type":"mystery"}', "'mystery'"),
    ('{"type":"invokefunction"}', "without a string function_id"),
    ('{"n":[NaN]}', "not JSON"),
])
def test_frames_that_need_nothing_say_why(raw: str, words: str) -> None:
    [event] = ClientSession().receive(raw)
    assert isinstance(event, FrameSkipped) and words in event.reason


def test_ping_is_answered_and_pong_needs_nothing() -> None:
    session = ClientSession()
    # droppable: a peer flooding pings while it does not read must not grow the outbound queue without end
    assert session.receive(b'{"type":"ping"}') == [Send(frames.PONG, droppable=True)]
    assert session.receive('{"type":"pong"}') == []


@pytest.mark.parametrize("bad", [None, 7, ["w2"]])
def test_a_later_workerregistered_without_a_string_id_keeps_the_connections_id(bad: Any) -> None:
    # Before: it set worker_id to None, and the next reconnect's recovery of lost registrations found no old id.
    session = ClientSession()
    connected(session, "w1")
    events = session.receive(frame(type="workerregistered", worker_id=bad))
    assert len(events) == 1 and isinstance(events[0], FrameSkipped) and "without a string worker_id" in events[0].reason
    assert session.worker_id == "w1"
    assert session.receive(frame(type="workerregistered", worker_id="w2")) == [WorkerRegistered("w2")]


@pytest.mark.parametrize("body", ['"result":NaN', '"result":"\\ud800"'], ids=["nan", "lone-surrogate"])
def test_an_answer_that_is_not_json_fails_its_call_at_once(body: str) -> None:
    # Before: the frame was skipped and the call waited out its whole timeout for an answer that had come.
    session = ClientSession()
    call_id, _ = session.start_call("f", None)
    other_id, _ = session.start_call("g", None)
    assert call_id is not None and other_id is not None
    bad = '{"type":"invocationresult","invocation_id":"' + call_id + '",' + body + "}"
    skipped, failed = session.receive(bad)
    assert isinstance(skipped, FrameSkipped) and "not JSON" in skipped.reason
    assert isinstance(failed, CallFailed) and failed.invocation_id == call_id
    assert isinstance(failed.error, InvocationError) and failed.error.code == "invalid_result"
    # Only that call: the other is still pending, and a second copy of the bad answer ends nothing.
    assert [type(e) for e in session.receive(bad)] == [FrameSkipped]
    assert session.receive(frame(type="invocationresult", invocation_id=other_id, result=1)) == [
        CallSucceeded(other_id, 1)]
