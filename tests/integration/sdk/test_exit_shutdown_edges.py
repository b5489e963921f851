"""Workers left without ``with``/``shutdown()`` whose interpreter's exit has to shut them down, in the cases where that
shutdown cannot be quick: the exit hook starts every client's shutdown at once and gives them
:data:`~iii.handler_threads.EXIT_WAIT_S` in all, so the exit stays bounded.

Before: one client after the other, each waited for with no bound: ten clients of a stalled engine (SIGSTOP) held the
exit 20 s (each close's 2 s bound in turn), and a client whose loop an async handler blocked held it for as long as
the handler blocked (for ever for one that never returns). Without the hook the exit was immediate in both cases."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from iii.handler_threads import EXIT_WAIT_S
from iii_engine import Engine
from tests.conftest import EngineProcess

REPO = str(Path(__file__).resolve().parents[3])

# Prints READY once its clients are in place, then its main thread returns at the first line on stdin.
MANY_CLIENTS = """
import sys
from iii import register_worker
clients = [register_worker(sys.argv[1]) for _ in range(int(sys.argv[2]))]
print("READY", flush=True)
sys.stdin.readline()
"""

# An async handler blocks its client's loop (the mistake of a sync call inside one) when the main thread returns.
BLOCKED_LOOP = """
import logging, sys, threading
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
from iii import register_worker
worker, caller = register_worker(sys.argv[1]), register_worker(sys.argv[1])
blocking = threading.Event()
async def block(data):
    blocking.set()
    threading.Event().wait(float(sys.argv[2]))  # the loop is held meanwhile
worker.register_function("w::block", block)
worker.list_functions()  # one round trip: the registration is in place before the call (a void call to an id not
                         # yet registered is dropped by the engine)
caller.trigger({"function_id": "w::block", "payload": {}, "action": {"type": "void"}})
assert blocking.wait(10)
print("READY", flush=True)
"""


async def _start(tmp_path: Path, script: str, *args: str) -> asyncio.subprocess.Process:
    """Run ``script`` and return once it printed READY."""
    path = tmp_path / "worker.py"
    path.write_text(script)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(path), *args, env={**os.environ, "PYTHONPATH": REPO}, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        head = await proc.stdout.readline()
    assert head == b"READY\n", head + await proc.stdout.read()
    return proc


async def _exit_of(proc: asyncio.subprocess.Process, within: float, stdin: bytes | None = None) -> tuple[str, float]:
    """What ``proc`` printed until it ended, and the seconds that took (its main thread returns at ``stdin``, if any);
    killed once ``within`` seconds have gone by."""
    started = time.monotonic()
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return out.decode(), time.monotonic() - started


async def test_ten_clients_of_a_stalled_engine_end_the_exit_within_one_close_bound(
        engine_process: Callable[..., Awaitable[EngineProcess]], tmp_path: Path) -> None:
    served = await engine_process()
    proc = await _start(tmp_path, MANY_CLIENTS, served.url, "10")
    served.process.send_signal(signal.SIGSTOP)  # it takes no close, nor answers one
    try:
        out, took = await _exit_of(proc, 30, b"\n")
    finally:
        served.process.send_signal(signal.SIGCONT)
    assert proc.returncode == 0, out
    assert took < EXIT_WAIT_S, (took, out)  # the 2 s close bound once, not ten times in turn


async def test_a_loop_blocked_by_an_async_handler_holds_the_exit_no_longer_than_the_bound(
        engine: Engine, tmp_path: Path) -> None:
    blocks_s = 60.0
    proc = await _start(tmp_path, BLOCKED_LOOP, engine.url, str(blocks_s))
    out, took = await _exit_of(proc, EXIT_WAIT_S + 10)
    assert proc.returncode == 0, out
    assert took < EXIT_WAIT_S + 3, (took, out)
    said = [line for line in out.splitlines() if "at the interpreter's exit did not end within" in line]
    assert len(said) == 1 and engine.url in said[0], out


# The main thread returns while a thread of the user's goes on calling the client.
THREAD_AFTER_MAIN = """
import sys, threading, traceback
from iii import register_worker
from iii.errors import ShuttingDownError
client = register_worker(sys.argv[1])
started = threading.Event()
def calls():
    started.set()
    while True:
        try:
            client.trigger({"function_id": "engine::workers::list", "payload": {}})
        except ShuttingDownError:
            traceback.print_exc()
            return
threading.Thread(target=calls).start()
assert started.wait(10)
print("READY", flush=True)
"""


async def test_a_thread_left_running_after_the_main_thread_hears_why_the_client_shut_down(
        engine: Engine, tmp_path: Path) -> None:
    # Before: only "ShuttingDownError: iii is shutting down", with nothing naming the exit as the cause.
    proc = await _start(tmp_path, THREAD_AFTER_MAIN, engine.url)
    out, _ = await _exit_of(proc, 20)
    assert proc.returncode == 0, out
    assert "ShuttingDownError: iii is shutting down" in out, out
    assert "shut down by the interpreter's exit (the main thread ended without shutdown())" in out, out
