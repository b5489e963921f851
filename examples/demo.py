"""The main job: an embedded engine and two workers on our SDK, all in one process.

Run it with ``bash scripts/demo.sh`` (or ``.venv/bin/python -m examples.demo``). It starts the engine on a free
loopback port, connects two workers, registers functions on each, calls across them, lists what the engine
knows, and prints what happened. Exit status 0 means every step checked out.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from iii import InitOptions, register_worker
from iii.errors import InvocationError
from iii.iii import III
from iii_engine import Engine, EngineConfig


def say(step: str, detail: Any = "") -> None:
    print(f"  {step:<34} {detail}", flush=True)


def connect(url: str, name: str) -> III:
    return register_worker(url, InitOptions(worker_name=name, otel={"enabled": False}))


def run_workers(url: str) -> None:
    """The part a user writes: plain synchronous SDK calls, run in a thread next to the engine's loop."""
    alice, bob = connect(url, "alice"), connect(url, "bob")
    try:
        alice.register_function("alice::greet", lambda data: {"greeting": f"hello {data['name']}"},
                                description="greets someone")

        async def total(data: dict[str, Any]) -> dict[str, Any]:
            # bob's function calls back into alice: worker -> engine -> worker, nested
            greeting = await bob.trigger_async({"function_id": "alice::greet", "payload": {"name": "bob"}})
            return {"sum": sum(data["numbers"]), "alice_says": greeting["greeting"]}

        # The service first: registering it later would replace the implicit one and empty its function set.
        bob.register_service({"id": "bob", "description": "bob's functions"})
        bob.register_function("bob::total", total, description="adds numbers and asks alice for a greeting")

        _wait_for_functions(alice, {"alice::greet", "bob::total"})
        say("alice -> bob::total", alice.trigger({"function_id": "bob::total", "payload": {"numbers": [1, 2, 3]}}))
        say("bob -> alice::greet", bob.trigger({"function_id": "alice::greet", "payload": {"name": "world"}}))
        try:
            alice.trigger({"function_id": "nobody::home", "payload": {}})
        except InvocationError as exc:
            say("alice -> nobody::home", f"{exc.code}: {exc.message}")

        started = time.perf_counter()
        calls = 500
        for i in range(calls):
            alice.trigger({"function_id": "alice::greet", "payload": {"name": str(i)}})
        rate = calls / (time.perf_counter() - started)
        say(f"{calls} sequential calls", f"{rate:,.0f} calls/s")

        say("functions", sorted(f.function_id for f in alice.list_functions()))
        say("workers", sorted(w.name or "?" for w in alice.list_workers()))
        say("triggers (incl. internal)", len(alice.list_triggers(include_internal=True)))
    finally:
        alice.shutdown()
        bob.shutdown()


def _wait_for_functions(client: III, wanted: set[str], timeout: float = 5.0) -> None:
    # Registrations are never acknowledged (PROTOCOL T2): the engine's list is the only confirmation.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= {f.function_id for f in client.list_functions()}:
            return
        time.sleep(0.02)
    raise RuntimeError(f"functions never appeared: {sorted(wanted)}")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(argv)
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        print(f"embedded engine at {engine.url}")
        await asyncio.to_thread(run_workers, engine.url)
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
