"""What an engine sends that a worker must not take on trust (attack on the SDK against a hostile engine): a flood
of calls to a missing function is a burst of lines and a count, not a line each; a call whose ``invocation_id`` is
not a string is not run; a call that is not JSON but names its id is answered ``invalid_message``; trigger
registrations of an owned type run at most ``max_invocations`` at once, the rest wait their turn up to a bound;
answers to unknown trigger types give way at a full queue; a worker id that is not a string is said at once."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from iii import III
from iii import iii as iii_module
from iii.protocol.client import ClientSession, FrameSkipped, Send, WorkerRegistered
from iii.triggers import TriggerConfig, TriggerHandler

from .conftest import EngineThread, MakeWorker, wait_until
from .fake_engine import FakeWorker

CALL_ID = "8d1c3b4e-0f6a-4c39-9c55-2f1f3f0f5a11"


def _results(side: FakeWorker, kind: str = "invocationresult") -> list[dict[str, Any]]:
    """The frames of ``kind`` the worker sent (``side``: its engine-side record)."""
    return [f for f in side.frames if f["type"] == kind]


def test_a_flood_of_calls_to_a_missing_function_is_a_burst_of_lines_and_a_count(
        fake: EngineThread, make_fake_worker: MakeWorker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii.iii")
    worker = make_fake_worker("w")
    side = fake.worker(worker)
    for n in range(100):
        fake.send_to(worker, {"type": "invokefunction", "invocation_id": f"call-{n}", "function_id": "nosuch",
                              "data": n})
    fake.wait_for(lambda: len(_results(side)) == 100)  # each still answered function_not_found
    worker.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.getMessage() == "Function 'nosuch' not found"]
    counted = [r.getMessage() for r in caplog.records if "frame(s) from the engine skipped since" in r.getMessage()]
    # before: one warning per frame (200,000 lines for the attack's flood)
    # (the first frame past the burst is told at once, the rest when the interval ends: here, at the shutdown)
    assert len(lines) == 10 and len(counted) == 2, counted
    assert sum(int(line.split()[0]) for line in counted) == 90, counted


def test_a_call_whose_invocation_id_is_not_a_string_is_not_run(
        fake: EngineThread, make_fake_worker: MakeWorker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii.iii")
    worker = make_fake_worker("w")
    side = fake.worker(worker)
    ran: list[Any] = []
    worker.register_function("f", lambda data: ran.append(data))
    fake.wait_registered("f")
    fake.send_to(worker, {"type": "invokefunction", "invocation_id": 123, "function_id": "f", "data": "bad id"})
    fake.send_to(worker, {"type": "invokefunction", "invocation_id": "ok", "function_id": "f", "data": "good"})
    fake.wait_for(lambda: [r["invocation_id"] for r in _results(side)] == ["ok"])
    # before: run as a call nobody waits for, without a word (its caller waited out its timeout)
    assert ran == ["good"]
    assert any("not run: its invocation_id is not a string (123)" in r.getMessage() for r in caplog.records)


def test_a_call_that_is_not_json_but_names_its_id_is_answered_invalid_message(
        fake: EngineThread, make_fake_worker: MakeWorker) -> None:
    worker = make_fake_worker("w")
    side = fake.worker(worker)
    worker.register_function("f", lambda data: data)
    fake.wait_registered("f")
    fake.send_to(worker, f'{{"type":"invokefunction","invocation_id":"{CALL_ID}","function_id":"f","data":NaN}}')
    fake.wait_for(lambda: bool(_results(side)))
    (answer,) = _results(side)
    # before: skipped with a warning, never answered
    assert answer["invocation_id"] == CALL_ID and answer["error"]["code"] == "invalid_message"
    assert "could not be decoded by the worker" in answer["error"]["message"]


class _Held(TriggerHandler[Any]):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.bound: list[str] = []

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        await asyncio.to_thread(self.release.wait, 20)
        self.bound.append(config.id)

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        pass


def _owner(fake: EngineThread, make_fake_worker: MakeWorker, max_invocations: int) -> tuple[III, FakeWorker, _Held]:
    """A worker owning trigger type ``hook``, whose hook holds each bind until ``release``; its engine-side record."""
    worker = make_fake_worker("owner", max_invocations=max_invocations)
    side = fake.worker(worker)
    handler = _Held()
    worker.register_trigger_type({"id": "hook", "description": "held"}, handler)
    fake.wait_for(lambda: "hook" in fake.worker_trigger_types())
    return worker, side, handler


def _send_registrations(fake: EngineThread, worker: III, n: int) -> None:
    """The engine asks ``worker`` to bind triggers ``t0`` … of type ``hook``."""
    for k in range(n):
        fake.send_to(worker, {"type": "registertrigger", "id": f"t{k}", "trigger_type": "hook", "function_id": "f",
                              "config": {}})


def test_trigger_registrations_past_max_invocations_wait_their_turn_and_past_that_are_refused(
        fake: EngineThread, make_fake_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iii_module, "TRIGGERS_WAITING_MAX", 2)
    worker, side, handler = _owner(fake, make_fake_worker, 2)
    try:
        _send_registrations(fake, worker, 6)
        # two run, two wait (no task each), two are refused: before, a task each, however many (100,000 held
        # +490 MB in the attack)
        fake.wait_for(lambda: len(_results(side, "triggerregistrationresult")) == 2)
        refused = _results(side, "triggerregistrationresult")
        assert {r["id"] for r in refused} == {"t4", "t5"}
        assert all(r["error"]["code"] == "worker_busy" and "max_invocations" in r["error"]["message"]
                   for r in refused)
        assert len(worker._owning_waiting) == 2 and worker._owning == 2
    finally:
        handler.release.set()
    fake.wait_for(lambda: len(_results(side, "triggerregistrationresult")) == 6)
    # those that waited were bound in their turn, none refused
    assert sorted(handler.bound) == ["t0", "t1", "t2", "t3"]
    assert [r for r in _results(side, "triggerregistrationresult") if r.get("error")] == refused
    wait_until(lambda: worker._owning == 0)  # (its answer can reach the engine before the worker counts it done)


def test_a_waiting_trigger_registration_the_engine_unregistered_is_never_bound(
        fake: EngineThread, make_fake_worker: MakeWorker) -> None:
    worker, side, handler = _owner(fake, make_fake_worker, 1)
    try:
        _send_registrations(fake, worker, 3)  # t0 binds (held), t1 and t2 wait their turn
        wait_until(lambda: len(worker._owning_waiting) == 2)
        fake.send_to(worker, {"type": "unregistertrigger", "id": "t1", "trigger_type": "hook"})
        wait_until(lambda: ("hook", "t1") not in worker._trigger_host._sent)
    finally:
        handler.release.set()
    fake.wait_for(lambda: len(_results(side, "triggerregistrationresult")) == 3)
    # before: t1's hook ran after the engine had unregistered it (and its bind was undone at once)
    assert sorted(handler.bound) == ["t0", "t2"]
    assert not [r for r in _results(side, "triggerregistrationresult") if r.get("error")]
    wait_until(lambda: worker._owning == 0)


def test_an_answer_to_a_trigger_of_a_type_not_owned_gives_way_at_a_full_queue() -> None:
    session = ClientSession()
    (event,) = session.receive('{"type":"registertrigger","id":"t1","trigger_type":"nobody","function_id":"f"}')
    # before: kept past the queue's bounds: an engine sending these while not reading grew it without end
    assert isinstance(event, Send) and event.droppable


def test_a_worker_id_that_is_not_a_string_is_said_at_once() -> None:
    session = ClientSession()
    skipped, registered = session.receive('{"type":"workerregistered","worker_id":5}')
    # before: taken silently as no id, and 5 s later the warning said no workerregistered had come at all
    assert isinstance(skipped, FrameSkipped) and "without a string worker_id" in skipped.reason
    assert isinstance(registered, WorkerRegistered) and registered.worker_id is None and session.worker_id is None


class _Refusing(TriggerHandler[Any]):
    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        raise ValueError(f"bad config for {config.id}")

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        pass


def test_a_flood_of_configs_the_handler_refuses_is_a_burst_of_tracebacks_and_a_count(
        fake: EngineThread, make_fake_worker: MakeWorker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="iii")
    worker = make_fake_worker("owner")
    side = fake.worker(worker)
    worker.register_trigger_type({"id": "hook", "description": "refuses all"}, _Refusing())
    fake.wait_for(lambda: "hook" in fake.worker_trigger_types())
    for n in range(30):
        fake.send_to(worker, {"type": "registertrigger", "id": f"t{n}", "trigger_type": "hook", "function_id": "f",
                              "config": {}})
    fake.wait_for(lambda: len(_results(side, "triggerregistrationresult")) == 30)  # each still refused in its answer
    worker.shutdown()
    lines = [r for r in caplog.records if r.getMessage().startswith("Error registering trigger")]
    counted = [r.getMessage() for r in caplog.records if "more trigger registration(s) refused" in r.getMessage()]
    # before: 30 ERROR lines, each with its traceback
    assert len(lines) == 10 and all(r.exc_info for r in lines)
    assert sum(int(line.split()[0]) for line in counted) == 20, counted
