"""One worker scenario written against the public SDK API, run unchanged under the reference SDK and ours.

Usage: python scenario.py WS_URL ROLE. Prints one JSON line per step (``{"step": ..., ...}``) so the test can
compare outcomes, and exits 0. Roles:
- ``frames``: the fixed call sequence used for wire conformance against a recording fake engine. Its call to
  ``remote::drive`` hands over to the engine, which sends engine→worker frames (invocations of the ``serve::*``
  handlers, trigger registrations for the ``hook`` type) and answers the call when it is done.
- ``serve``: registers ``<prefix>::echo`` / ``<prefix>::fail`` and serves until stdin closes.
- ``call TARGET``: calls another worker's functions and lists what the engine knows.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import sys
import threading
from typing import Any

from pydantic import BaseModel

from iii import (
    ApiResponse,
    HttpInvocationConfig,
    InitOptions,
    TriggerAction,
    TriggerConfig,
    TriggerHandler,
    register_worker,
)
from iii.stream import (
    IStream,
    StreamDeleteInput,
    StreamDeleteResult,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamSetResult,
    StreamUpdateInput,
    StreamUpdateResult,
)


def emit(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}, default=str), flush=True)


class Note(BaseModel):
    title: str
    body: str | None = None


class NoteStream(IStream[Any]):
    """Never called in the frames role: only its registrations are compared."""

    async def get(self, input: StreamGetInput) -> Any:
        return None

    async def set(self, input: StreamSetInput) -> StreamSetResult[Any] | None:
        return None

    async def delete(self, input: StreamDeleteInput) -> StreamDeleteResult:
        return StreamDeleteResult(old_value=None)

    async def list(self, input: StreamListInput) -> builtins.list[Any]:
        return []

    async def list_groups(self, input: StreamListGroupsInput) -> builtins.list[str]:
        return []

    async def update(self, input: StreamUpdateInput) -> StreamUpdateResult[Any] | None:
        return None


class HookHandler(TriggerHandler[Any]):
    """Keeps what the engine asked of the ``hook`` trigger type, for ``serve::hooks`` to report."""

    def __init__(self) -> None:
        self.events: list[list[Any]] = []
        self.lock = threading.Lock()
        self.unregistered = threading.Event()

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.lock:
            self.events.append(["register", config.id, config.function_id, config.config])

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        with self.lock:
            self.events.append(["unregister", config.id, config.function_id])
        self.unregistered.set()


def register_engine_side(iii: Any) -> None:
    """Handlers the recording engine invokes, and the trigger type it registers triggers for."""
    hooks = HookHandler()
    iii.register_trigger_type({"id": "hook", "description": "test hooks"}, hooks)

    def serve_dict(data: Any) -> Any:
        return {"got": data, "none": None, "list": [1, None]}

    def serve_none(data: Any) -> None:
        return None

    def serve_raise(data: Any) -> Any:
        raise RuntimeError("raised on purpose")

    def serve_model(data: Any) -> Any:
        return Note(title="t")

    def serve_api(data: Any) -> Any:
        return ApiResponse(status_code=201, body={"ok": True})

    async def serve_hooks(data: Any) -> Any:
        # The unregistertrigger frame comes just before this call, and the SDK runs the hook in a task of its own
        # (it may outlive its deadline), so the hook may end a loop turn after this call starts: waited for, a
        # moment at most (the reference SDK ignores the frame: it never comes there).
        for _ in range(100):
            if hooks.unregistered.is_set():
                break
            await asyncio.sleep(0.005)
        with hooks.lock:
            return list(hooks.events)

    iii.register_function("serve::dict", serve_dict)
    iii.register_function("serve::none", serve_none)
    iii.register_function("serve::raise", serve_raise)
    iii.register_function("serve::model", serve_model)
    iii.register_function("serve::api", serve_api)
    iii.register_function("serve::hooks", serve_hooks)


def run_frames(url: str) -> None:
    iii = register_worker(url, InitOptions(worker_name="conformance", invocation_timeout_ms=5000))

    def add(data: Any) -> Any:
        return {"sum": data["a"] + data["b"]}

    iii.register_function("calc::add", add, description="adds", metadata={"team": "x"})
    iii.register_function({"id": "calc::sub", "description": "subtracts"}, add)
    iii.register_service({"id": "calc", "description": "calculator"})
    iii.register_trigger({"type": "cron", "function_id": "calc::add", "config": {"expression": "* * * * * *"}})
    iii.register_trigger({"type": "custom", "function_id": "calc::add"})
    iii.register_function("ext::http", HttpInvocationConfig(url="https://example.com/hook", method="PUT",
                                                            timeout_ms=1500, headers={"x-team": "a"}))
    iii.register_function("tmp::gone", add).unregister()
    iii.register_trigger({"type": "cron", "function_id": "calc::sub",
                          "config": {"expression": "0 0 * * * *"}}).unregister()
    iii.create_stream("notes", NoteStream())
    iii.on_functions_available(lambda functions: None)
    register_engine_side(iii)
    emit("trigger", result=iii.trigger({"function_id": "remote::ping", "payload": {"x": 1}}))
    emit("trigger_none", result=iii.trigger({"function_id": "remote::ping"}))
    iii.trigger({"function_id": "remote::ping", "payload": [1, None], "action": TriggerAction.Void()})
    emit("enqueue", result=iii.trigger(
        {"function_id": "remote::ping", "payload": {"y": None}, "action": TriggerAction.Enqueue(queue="q")}))
    emit("drive", result=iii.trigger({"function_id": "remote::drive", "payload": {}}))
    emit("done")
    iii.shutdown()


def run_serve(url: str, prefix: str) -> None:
    iii = register_worker(url, InitOptions(worker_name=f"{prefix}-worker"))

    async def echo(data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "_caller_worker_id"}
        return {"echo": data, "by": prefix}

    def fail(data: Any) -> Any:
        raise RuntimeError(f"{prefix} failed on purpose")

    iii.register_function(f"{prefix}::echo", echo, description="echoes its input")
    iii.register_function(f"{prefix}::fail", fail)
    emit("ready", worker_id=iii.worker_id)
    sys.stdin.read()  # serve until the test closes our stdin
    iii.shutdown()


def run_call(url: str, target: str) -> None:
    iii = register_worker(url, InitOptions(worker_name="caller", invocation_timeout_ms=10000))
    emit("echo", result=iii.trigger({"function_id": f"{target}::echo", "payload": {"n": 1, "s": "é"}}))
    try:
        iii.trigger({"function_id": f"{target}::fail", "payload": {}})
        emit("fail", error=None)
    except Exception as exc:  # the reference raises bare Exception
        emit("fail", error=str(exc))
    try:
        iii.trigger({"function_id": "nobody::home", "payload": {}})
        emit("missing", error=None)
    except Exception as exc:
        emit("missing", error=str(exc))
    emit("functions", ids=sorted(f.function_id for f in iii.list_functions()))
    emit("workers", names=sorted(w.name or "" for w in iii.list_workers()))
    iii.shutdown()


def main() -> None:
    url, role = sys.argv[1], sys.argv[2]
    if role == "frames":
        run_frames(url)
    elif role == "serve":
        run_serve(url, sys.argv[3])
    elif role == "call":
        run_call(url, sys.argv[3])
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
