"""Our SDK's frames match the reference SDK's frames field by field, apart from the documented
docs/protocol.md#sdk-improvements differences.

Both SDKs run the same scenario (scenario.py, role ``frames``) against a recording fake engine. The outgoing part
covers registrations (functions, HTTP-invoked functions, services, triggers, trigger types, streams,
functions-available), unregistrations and calls. When the scenario calls ``remote::drive`` the engine drives the
incoming part: it sends ``invokefunction`` frames to the scenario's handlers (dict, ``None``, raise, pydantic
model, ``ApiResponse``, unknown id) and ``registertrigger`` / ``unregistertrigger`` frames, and records every
answer. UUIDs and per-process values are normalised, then every documented difference is applied to the
reference's frames by :func:`apply_documented_differences`, which also checks that each difference really is
there in the reference's frames.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from .refsdk import our_python, reference_python, run_scenario

pytestmark = pytest.mark.interop

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

Frame = dict[str, Any]

# Fixed ids of what the engine sends, so answers can be told apart.
HOOK_TRIGGER = "7d1c0a52-1111-4000-8000-000000000001"
ORPHAN_TRIGGER = "7d1c0a52-1111-4000-8000-000000000002"
FIXED_IDS = {HOOK_TRIGGER: "<hook-trigger>", ORPHAN_TRIGGER: "<orphan-trigger>"}
DRIVE_STEPS: list[tuple[str, Any]] = [
    ("serve::dict", {"a": 1, "n": None}),
    ("serve::none", {}),
    ("serve::raise", {}),
    ("serve::model", {}),
    ("serve::api", {}),
    ("unknown::fn", {}),
]


class RecordingEngine:
    """Answers the scenario's calls, drives the engine→worker part on ``remote::drive``, keeps every frame."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.arrived = asyncio.Condition()
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle(self, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "workerregistered", "worker_id": str(uuid.uuid4())}))
        async for raw in ws:
            if isinstance(raw, bytes) and raw[:4] in (b"OTLP", b"MTRC", b"LOGS"):
                continue
            msg = json.loads(raw)
            async with self.arrived:
                self.frames.append(msg)
                self.arrived.notify_all()
            if msg.get("type") != "invokefunction" or not msg.get("invocation_id"):
                continue
            if msg["function_id"] == "remote::drive":
                # Driven from a task: this loop must keep reading the answers.
                task = asyncio.ensure_future(self.drive(ws, msg))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                continue
            action = msg.get("action") or {}
            result: Any = (
                {"messageReceiptId": str(uuid.uuid4())} if action.get("type") == "enqueue"
                else {"pong": msg.get("data")}
            )
            await ws.send(json.dumps({"type": "invocationresult", "invocation_id": msg["invocation_id"],
                                      "function_id": msg["function_id"], "result": result}))

    async def answer(self, predicate: Callable[[Frame], bool]) -> Frame:
        async with asyncio.timeout(10), self.arrived:
            await self.arrived.wait_for(lambda: any(predicate(f) for f in self.frames))
            return next(f for f in self.frames if predicate(f))

    async def invoke(self, ws: ServerConnection, function_id: str, data: Any) -> Frame:
        iid = str(uuid.uuid4())
        await ws.send(json.dumps({"type": "invokefunction", "invocation_id": iid, "function_id": function_id,
                                  "data": data}))
        return await self.answer(lambda f: f.get("type") == "invocationresult" and f.get("invocation_id") == iid)

    async def drive(self, ws: ServerConnection, call: Frame) -> None:
        for function_id, data in DRIVE_STEPS:
            await self.invoke(ws, function_id, data)
        await ws.send(json.dumps({"type": "registertrigger", "id": HOOK_TRIGGER, "trigger_type": "hook",
                                  "function_id": "calc::add", "config": {"path": "/h"}}))
        await self.answer(lambda f: f.get("type") == "triggerregistrationresult" and f.get("id") == HOOK_TRIGGER)
        # Neither of these is answered by the reference: the next invocation is the barrier.
        await ws.send(json.dumps({"type": "registertrigger", "id": ORPHAN_TRIGGER, "trigger_type": "nobody",
                                  "function_id": "calc::add", "config": {}}))
        await ws.send(json.dumps({"type": "unregistertrigger", "id": HOOK_TRIGGER, "trigger_type": "hook"}))
        await self.invoke(ws, "serve::hooks", {})
        await ws.send(json.dumps({"type": "invocationresult", "invocation_id": call["invocation_id"],
                                  "function_id": call["function_id"], "result": {"driven": True}}))


async def record_frames(python: str) -> tuple[list[Frame], list[Frame]]:
    engine = RecordingEngine()
    async with serve(engine.handle, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with run_scenario(python, f"ws://127.0.0.1:{port}", "frames") as script:
            steps = []
            while True:
                step = await script.step()
                steps.append(step)
                if step["step"] == "done":
                    break
            assert await script.finish() == 0
    # The last frames may still be in flight when the scenario exits; what matters is what arrived in order.
    return engine.frames, steps


def normalise(frames: list[Frame]) -> list[Frame]:
    """UUIDs (also inside longer strings) become ``<uuidN>`` in order of appearance (the engine's fixed ids get
    fixed names); per-process metadata and stack traces become placeholders (after checking that a stack trace
    names the exception)."""
    seen: dict[str, str] = dict(FIXED_IDS)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            return UUID_RE.sub(lambda m: seen.setdefault(m.group(0), f"<uuid{len(seen) - len(FIXED_IDS)}>"), value)
        return value

    out = []
    for frame in frames:
        frame = walk(frame)
        if frame.get("function_id") == "engine::workers::register":
            data = frame["data"]
            for key in ("pid", "version", "name"):
                data[key] = f"<{key}>"
        error = frame.get("error")
        if isinstance(error, dict) and "stacktrace" in error:
            assert error["message"] in error["stacktrace"]
            error["stacktrace"] = "<stacktrace>"
        out.append(frame)
    return out


def is_metadata(frame: Frame) -> bool:
    return frame.get("function_id") == "engine::workers::register"


def _result_of(frames: list[Frame], function_id: str) -> Frame:
    (frame,) = [f for f in frames if f["type"] == "invocationresult" and f["function_id"] == function_id]
    return frame


def apply_documented_differences(reference: list[Frame]) -> list[Frame]:
    """Turn the reference's normalised frames into what our SDK must send (docs/protocol.md#sdk-improvements),
    asserting that the
    reference really shows each difference."""
    expected = copy.deepcopy(reference)

    # S1: `data` always present (null when no payload); `config` {} when not given.
    missing_data = [f for f in expected if f["type"] == "invokefunction" and "data" not in f]
    missing_config = [f for f in expected if f["type"] == "registertrigger" and "config" not in f]
    assert missing_data and missing_config
    for frame in missing_data:
        frame["data"] = None
    for frame in missing_config:
        frame["config"] = {}

    # S7: create_stream also registers stream::update(NAME), right after the five the reference registers.
    ids = [f.get("id") for f in expected]
    assert "stream::update(notes)" not in ids
    at = ids.index("stream::list_groups(notes)") + 1
    expected.insert(at, {"type": "registerfunction", "id": "stream::update(notes)"})

    # S8: pydantic results keep their None fields.
    model = _result_of(expected, "serve::model")
    assert model["result"] == {"title": "t"}
    model["result"]["body"] = None

    # S9: ApiResponse results by field name, not by the alias statusCode.
    api = _result_of(expected, "serve::api")["result"]
    assert "statusCode" in api and "status_code" not in api
    api["status_code"] = api.pop("statusCode")

    # S6: a registertrigger for a type we do not own is answered with trigger_type_not_found; the reference is
    # silent. It comes right before the answer of the next invocation, serve::hooks.
    orphan = FIXED_IDS[ORPHAN_TRIGGER]
    assert not any(f.get("id") == orphan for f in expected)
    hooks = _result_of(expected, "serve::hooks")
    expected.insert(expected.index(hooks), {
        "type": "triggerregistrationresult", "id": orphan, "trigger_type": "nobody", "function_id": "calc::add",
        "error": {"code": "trigger_type_not_found", "message": "Trigger type not found"}})
    # S6: an incoming unregistertrigger reaches TriggerHandler.unregister_trigger; the reference ignores it.
    events = hooks["result"]
    assert [e[0] for e in events] == ["register"]
    events.append(["unregister", events[0][1], "calc::add"])
    return expected


async def test_frames_match_reference_sdk() -> None:
    ref_frames, ref_steps = await record_frames(reference_python())
    our_frames, our_steps = await record_frames(our_python())
    assert normalise(our_steps) == normalise(ref_steps)
    expected = apply_documented_differences(normalise(ref_frames))
    ours = normalise(our_frames)
    # The reference sends worker metadata from a separately scheduled task, so its position among the first
    # frames varies from run to run: compare it on its own.
    assert [f for f in ours if is_metadata(f)] == [f for f in expected if is_metadata(f)]
    ours = [f for f in ours if not is_metadata(f)]
    expected = [f for f in expected if not is_metadata(f)]
    assert [f["type"] for f in ours] == [f["type"] for f in expected]
    for mine, theirs in zip(ours, expected, strict=True):
        assert mine == theirs
    # The engine-driven part really happened, in both runs.
    assert {s["step"]: s.get("result") for s in our_steps}["drive"] == {"driven": True}
    assert _result_of(ours, "unknown::fn")["error"] == {
        "code": "function_not_found", "message": "Function 'unknown::fn' not found"}
    assert _result_of(ours, "serve::raise")["error"]["code"] == "invocation_failed"
    assert "result" not in _result_of(ours, "serve::none")
