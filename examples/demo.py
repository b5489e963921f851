"""The main job: an embedded engine, workers on our SDK, a verified channel transfer and a SQLite-backed stream.

Run it with ``bash scripts/demo.sh`` (or ``.venv/bin/python -m examples.demo [--size-mb N] [--progress]``). In one
process it:

1. starts the engine on a free loopback port, its stream store in a SQLite file (``--store`` to change);
2. connects two workers, registers functions on each, calls across them (nested, both ways), shows an error
   with its code, and measures sequential calls;
3. lists the functions, workers and triggers the engine knows;
4. pipes a generated file (``--size-mb``, default 256 MiB) from one worker to another through a channel, with a
   progress bar, checks the SHA-256 on both sides and prints the throughput;
5. stores the transfer's metadata in the ``transfers`` stream and reads it back through the engine.

Exit status 0 means every step checked out.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from examples.channel_demo import pipe_demo
from iii import InitOptions, register_worker
from iii.errors import InvocationError
from iii.iii import III
from iii_engine import Engine, EngineConfig, EngineStartError, ModuleSpec
from iii_engine.modules.catalogue import DEFAULT_MODULES

STREAM_MODULE = "modules::stream::StreamModule"
_LISTENERS = {STREAM_MODULE, "modules::api::RestApiModule"}


def say(step: str, detail: Any = "") -> None:
    print(f"  {step:<30} {detail}", flush=True)


def connect(url: str, name: str) -> III:
    return register_worker(url, InitOptions(worker_name=name, otel={"enabled": False}))


def engine_config(store_url: str) -> EngineConfig:
    """The default modules, every listener on a free loopback port, the stream store at ``store_url``."""
    modules = []
    for name in DEFAULT_MODULES:
        settings: dict[str, Any] = {"host": "127.0.0.1", "port": 0} if name in _LISTENERS else {}
        if name == STREAM_MODULE:
            settings["store_url"] = store_url
        modules.append(ModuleSpec(name, settings))
    return EngineConfig(host="127.0.0.1", port=0, modules=modules)


def functions_and_calls(url: str) -> None:
    """The part a user writes with the sync API: run in a thread next to the engine's event loop."""
    print("functions and calls")
    alice, bob = connect(url, "alice"), connect(url, "bob")
    try:
        alice.register_function("alice::greet", lambda data: {"greeting": f"hello {data['name']}"},
                                description="greets someone")

        async def total(data: dict[str, Any]) -> dict[str, Any]:
            # bob's function calls back into alice while alice waits on it: worker -> engine -> worker, nested
            greeting = await bob.trigger_async({"function_id": "alice::greet", "payload": {"name": "bob"}})
            return {"sum": sum(data["numbers"]), "alice_says": greeting["greeting"]}

        # The service first: registering it after the function would replace the implicit one
        # (docs/protocol.md#messages).
        bob.register_service({"id": "bob", "description": "bob's functions"})
        bob.register_function("bob::total", total, description="adds numbers and asks alice for a greeting")
        _wait_for_functions(alice, {"alice::greet", "bob::total"})

        say("alice -> bob::total", alice.trigger({"function_id": "bob::total", "payload": {"numbers": [1, 2, 3]}}))
        say("bob -> alice::greet", bob.trigger({"function_id": "alice::greet", "payload": {"name": "world"}}))
        try:
            alice.trigger({"function_id": "nobody::home", "payload": {}})
            raise RuntimeError("calling a missing function succeeded")
        except InvocationError as exc:
            say("alice -> nobody::home", f"{exc.code}: {exc.message}")

        calls = 500
        started = time.perf_counter()
        for i in range(calls):
            alice.trigger({"function_id": "alice::greet", "payload": {"name": str(i)}})
        say(f"{calls} sequential calls", f"{calls / (time.perf_counter() - started):,.0f} calls/s")

        functions = alice.list_functions()
        say("functions", f"{len(functions)} in all (built-ins included)")
        for info in sorted(alice.list_workers(), key=lambda w: w.name or ""):
            say(f"worker {info.name}", ", ".join(sorted(info.functions)) or "(no functions)")
        say("triggers (incl. internal)", len(alice.list_triggers(include_internal=True)))
    finally:
        alice.shutdown()
        bob.shutdown()


def _wait_for_functions(client: III, wanted: set[str], timeout: float = 5.0) -> None:
    # Registrations are never acknowledged (docs/protocol.md#production-behaviour-our-sdk-copes-with (T2)): the
    # engine's own list is the confirmation.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= {f.function_id for f in client.list_functions()}:
            return
        time.sleep(0.02)
    raise RuntimeError(f"functions never appeared: {sorted(wanted)}")


async def transfer_and_record(url: str, size_mb: float, progress: bool, out_dir: Path) -> None:
    print(f"channel transfer ({size_mb:g} MiB)")
    report = await pipe_demo(url, size_mb, progress, out_dir=out_dir)
    say("received and verified", f"{report['bytes']:,} bytes, sha256 {report['sha256'][:16]}…")
    say("throughput", f"{report['mb_per_s']} MiB/s ({report['seconds']} s, call + stream + disk + verify)")

    print("stream store (through the engine)")
    recorder = III(url, InitOptions(worker_name="recorder", otel={"enabled": False}))
    try:
        item = {"stream_name": "transfers", "group_id": "demo", "item_id": report["sha256"][:16]}
        metadata = {"bytes": report["bytes"], "sha256": report["sha256"], "mb_per_s": report["mb_per_s"],
                    "file": Path(report["path"]).name}
        stored = await recorder.trigger_async({"function_id": "stream::set", "payload": {**item, "data": metadata}})
        say("stream::set transfers/demo", "created" if stored["old_value"] is None else "replaced")
        counted = await recorder.trigger_async({"function_id": "stream::update", "payload": {
            "stream_name": "transfers", "group_id": "totals", "item_id": "all",
            "ops": [{"type": "increment", "path": "count", "by": 1},
                    {"type": "increment", "path": "bytes", "by": report["bytes"]}]}})
        say("stream::update totals", counted["new_value"])
        read_back = await recorder.trigger_async({"function_id": "stream::get", "payload": item})
        if read_back != metadata:
            raise RuntimeError(f"stream read back {read_back!r}, wrote {metadata!r}")
        say("stream::get", "matches what was stored")
        groups = await recorder.trigger_async({"function_id": "stream::list_groups",
                                               "payload": {"stream_name": "transfers"}})
        say("stream::list_groups", groups)
    finally:
        await recorder.shutdown_async()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=256.0, help="MiB to pipe (default: %(default)s)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                        help="progress bar on stderr (default: when stderr is a terminal)")
    parser.add_argument("--store", help="stream store URL (default: a SQLite file in a temporary directory)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="iii-demo-"))
    store_url = args.store or f"sqlite+aiosqlite:///{workdir / 'streams.db'}"
    try:
        async with Engine(config=engine_config(store_url)) as engine:
            print(f"embedded engine at {engine.url}, stream store {store_url}")
            await asyncio.to_thread(functions_and_calls, engine.url)
            await transfer_and_record(engine.url, args.size_mb, args.progress, workdir / "received")
    except EngineStartError as exc:
        # a store that cannot be reached is the user's input, not a bug: one line, as iii-engine says it
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("done: every step checked out")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
