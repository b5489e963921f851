"""A worker made the README's way (``register_worker(url)``, no ``with``) whose process is ending (Ctrl-C, or its main
thread returned) while a sync handler runs: the client shuts down at once, so the engine routes nothing more to it,
and says in one line which handler the process waits for. Before, it stayed connected until that handler returned,
its functions stayed registered, and every invocation meanwhile logged ``Error in handler …: cannot schedule new
futures after interpreter shutdown``.

Run both ways: with the interpreter's exit hook (``threading._register_atexit``), and as on a Python without it
(``iii.handler_threads.EXIT_HOOK_MISSING``), where the first run the handler threads refuse shuts the client down."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from iii_engine import Engine
from tests.polling import until

REPO = str(Path(__file__).resolve().parents[3])

# The handler's run after the signal: the process must wait for it, and no longer.
HOLD_S = 4.0

WORKER = """
import sys, threading, time
if sys.argv[2] == "fallback":  # as on a Python without the hook (concurrent.futures keeps its own, as there)
    import concurrent.futures.thread
    del threading._register_atexit
import logging
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from iii import register_worker
import iii.handler_threads
print("HOOK", "missing" if getattr(iii.handler_threads, "EXIT_HOOK_MISSING", None) else "there", flush=True)
url, hold = sys.argv[1], float(sys.argv[4])
started = threading.Event()
iii = register_worker(url)
def tick(data):
    if started.is_set():
        print("SECOND RUN", flush=True)
        return None
    print("TICK START", flush=True)  # before the main thread may return: its exit's log lines come after it
    started.set()
    time.sleep(hold)
    print("TICK END", flush=True)
iii.register_function("w::tick", tick)
iii.register_trigger({"type": "cron", "function_id": "w::tick", "config": {"expression": "* * * * * *"}})
if sys.argv[3] == "return":
    started.wait(30)
    sys.exit(0)  # the main thread ends while the handler runs
while True:
    time.sleep(0.05)
"""


@pytest.mark.parametrize("how", ["sigint", "return"])
@pytest.mark.parametrize("hook", ["hook", "fallback"])
async def test_a_plain_worker_exiting_mid_handler_leaves_the_engine_at_once_with_one_line(
        engine: Engine, tmp_path: Path, hook: str, how: str) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), engine.url, hook, how, str(HOLD_S), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    try:
        head = []
        async with asyncio.timeout(20):
            while not head or head[-1] != "TICK START":
                line = (await proc.stdout.readline()).decode()
                assert line, "".join(head)
                head.append(line.strip())
        ended_at = time.monotonic()  # (the signal, or the main thread's return, follows at once)
        if how == "sigint":
            proc.send_signal(signal.SIGINT)
        rest = asyncio.ensure_future(proc.stdout.read())
        # Gone from the engine while the handler still runs (the fallback notices at the next cron tick, 1 s)
        await until(lambda: "w::tick" not in engine.registry.functions, within=3.0)
        gone_after = time.monotonic() - ended_at
        assert proc.returncode is None and not rest.done()
        async with asyncio.timeout(HOLD_S + 10):
            out = (await rest).decode()
            await proc.wait()
        exit_after = time.monotonic() - ended_at
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = out.splitlines()
    assert f"HOOK {'missing' if hook == 'fallback' else 'there'}" in head
    assert gone_after < 2.5, (gone_after, out)
    # Bounded by the handler's run: it ends, then the process does
    assert "TICK END" in lines and exit_after < HOLD_S + 3, (exit_after, out)
    assert "SECOND RUN" not in lines, out
    said = [line for line in lines if "sync handler run(s) still going" in line]
    assert len(said) == 1 and "(w::tick)" in said[0] and "exiting" in said[0], out
    assert not [line for line in lines if "Error in handler" in line or "cannot schedule" in line], out
