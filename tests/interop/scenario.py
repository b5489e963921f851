"""One worker scenario written against the public SDK API, run unchanged under the reference SDK and ours.

Usage: python scenario.py WS_URL ROLE. Prints one JSON line per step (``{"step": ..., ...}``) so the test can
compare outcomes, and exits 0. Roles:
- ``frames``: the fixed call sequence used for wire conformance against a recording fake engine.
- ``serve``: registers ``<prefix>::echo`` / ``<prefix>::fail`` and serves until stdin closes.
- ``call TARGET``: calls another worker's functions and lists what the engine knows.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from iii import InitOptions, TriggerAction, register_worker


def emit(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}, default=str), flush=True)


def run_frames(url: str) -> None:
    iii = register_worker(url, InitOptions(worker_name="conformance", invocation_timeout_ms=5000))

    def add(data: Any) -> Any:
        return {"sum": data["a"] + data["b"]}

    iii.register_function("calc::add", add, description="adds", metadata={"team": "x"})
    iii.register_function({"id": "calc::sub", "description": "subtracts"}, add)
    iii.register_service({"id": "calc", "description": "calculator"})
    iii.register_trigger({"type": "cron", "function_id": "calc::add", "config": {"expression": "* * * * * *"}})
    iii.register_trigger({"type": "custom", "function_id": "calc::add"})
    emit("trigger", result=iii.trigger({"function_id": "remote::ping", "payload": {"x": 1}}))
    emit("trigger_none", result=iii.trigger({"function_id": "remote::ping"}))
    iii.trigger({"function_id": "remote::ping", "payload": [1, None], "action": TriggerAction.Void()})
    emit("enqueue", result=iii.trigger(
        {"function_id": "remote::ping", "payload": {"y": None}, "action": TriggerAction.Enqueue(queue="q")}))
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
