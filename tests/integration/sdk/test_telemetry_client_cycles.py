"""``register_worker`` + ``shutdown`` over and over in one process: telemetry is set up once per configuration and
reused, so the cycles register no OpenTelemetry at-fork callback (those are never removed: six per cycle before,
~6 KB a client, RSS 44 → 70 MB over 4,000 cycles)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from iii_engine import Engine

REPO = str(Path(__file__).resolve().parents[3])
CYCLES = 30

WORKER = """
import os, sys
registered = [0]
real = os.register_at_fork
def counting(**callbacks):
    registered[0] += 1
    real(**callbacks)
os.register_at_fork = counting
from iii import InitOptions, register_worker
def cycle(i):
    worker = register_worker(sys.argv[1], InitOptions(worker_name=f"cycle-{i}"))
    worker.register_function("cycle::f", lambda data: data)
    worker.shutdown()
cycle(0)  # the first client builds what the later ones reuse
before = registered[0]
for i in range(int(sys.argv[2])):
    cycle(i + 1)
print("AT_FORK", registered[0] - before, flush=True)
"""


async def test_client_cycles_register_no_at_fork_callbacks(engine: Engine, tmp_path: Path) -> None:
    script = tmp_path / "cycles.py"
    script.write_text(WORKER)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), engine.url, str(CYCLES), env={**os.environ, "PYTHONPATH": REPO},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(25):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "AT_FORK 0\n" in text, text
