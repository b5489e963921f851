"""Memory the engine gives back after a burst of hostile traffic: glibc's free pages (``malloc_trim`` via
:class:`iii_engine.allocator.MemoryReleaser`) and closed control connections, freed as soon as they close rather
than at the next full garbage collection."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.server import ServerConnection

from iii_engine import Engine, EngineConfig
from iii_engine.allocator import MemoryReleaser, trim_memory

ROOT = Path(__file__).resolve().parents[3]
GLIBC = sys.platform.startswith("linux") and trim_memory()

TRIM_SCRIPT = r'''
import sys
from iii_engine.allocator import trim_memory
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
start = rss()
blocks = [bytearray(64 << 10) for _ in range(600)]   # 37.5 MiB below the mmap threshold: in the heap
keep = bytearray(64 << 10)                              # a live block on top: the heap cannot just shrink
del blocks
held = rss() - start
if sys.argv[1] == "trim":
    trim_memory()
print(held, rss() - start)
'''


def _trim_run(mode: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", TRIM_SCRIPT, mode], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, check=True)
    held, after = out.stdout.split()
    return float(held), float(after)


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator")
def test_trim_gives_freed_heap_pages_back() -> None:
    held, after = _trim_run("plain")
    assert held > 20 and after > 20, f"without a trim the freed blocks stay resident ({held:.1f}, {after:.1f} MiB)"
    held, after = _trim_run("trim")
    assert after < 8, f"RSS kept {after:.1f} of {held:.1f} MiB freed heap blocks after trim_memory()"


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator")
async def test_releaser_trims_once_after_a_burst() -> None:
    releaser = MemoryReleaser(quiet_s=0.0, min_interval_s=0.0)
    for _ in range(100):
        releaser.note()
    await asyncio.wait_for(releaser.wait_idle(), 10)
    assert releaser.trims == 1


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator")
async def test_releaser_does_not_wait_for_a_burst_that_never_ends() -> None:
    # notes keep coming (a probe connecting every half second): the trim still runs max_wait_s after the first
    releaser = MemoryReleaser(quiet_s=3600.0, max_wait_s=0.0, min_interval_s=0.0)
    releaser.note()
    await asyncio.wait_for(releaser.wait_idle(), 10)
    assert releaser.trims == 1


async def test_releaser_close_cancels_a_pending_trim() -> None:
    releaser = MemoryReleaser(quiet_s=3600.0, max_wait_s=3600.0)
    releaser.note()
    releaser.close()
    await asyncio.wait_for(releaser.wait_idle(), 1)
    assert releaser.trims == 0


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("frame", ['{"type":"ping"}', "garbage", b"\xff"])
async def test_closed_control_connection_is_freed_without_a_garbage_collection(
        frame: str | bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    connections: list[weakref.ref[ServerConnection]] = []
    served = asyncio.Event()
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[])) as engine:
        serve = engine._serve_worker

        async def spy(ws: ServerConnection) -> None:
            connections.append(weakref.ref(ws))
            await serve(ws)
            served.set()

        monkeypatch.setattr(engine._listener, "_control", spy)
        async with websockets.connect(engine.url) as ws:
            await ws.recv()
            await ws.send(frame if isinstance(frame, str) else frame.decode("latin-1"))
            await ws.send('{"type":"ping"}')
            await ws.recv()
        await asyncio.wait_for(served.wait(), 10)
        for _ in range(20):  # a few loop turns for websockets' own handler to let go of it
            if connections[0]() is None:
                break
            await asyncio.sleep(0)
        assert connections[0]() is None, "the closed connection is only freed by the cycle collector"
