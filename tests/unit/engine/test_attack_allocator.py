"""Attack on the channel sockets' allocator tuning (50b6127) in the engine process.

The engine pins glibc's mmap threshold at 1 MiB (iii_engine.allocator) so multi-MiB frame buffers go back to the
system once freed. The first fast channel socket of a process set the mmap threshold to 4 MiB: in the engine
(whose control and channel sockets both take the fast path) that undid the pin, and after a burst of large
garbage frames the engine kept 10-19 MiB more than it started with (bench.chaos --quick --only fuzz: "engine RSS
after - start" over its 16 MiB target in 2 runs of 3; 2-3 MiB with III_MALLOC_TUNING=0).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = r'''
from iii_engine.allocator import tune_allocator
from iii import ws_fastpath
assert tune_allocator()              # the engine process, at start (iii_engine.cli)
ws_fastpath._tune_allocator_once()   # what its first fast channel socket does
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
start = rss()
big, keep = [], []
for _ in range(20):
    big.append(bytearray(2 << 20))          # a 2 MiB frame buffer ...
    keep.append(bytearray(64 << 10))        # ... next to something that lives on
del big
print(rss() - start, ws_fastpath.ALLOCATOR_STATE)
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_channel_socket_keeps_the_engines_pin_on_large_buffers() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         check=True)
    growth, state = out.stdout.split(maxsplit=1)
    assert float(growth) < 8, f"RSS kept {float(growth):.1f} MiB of freed 2 MiB buffers (channel tuning: {state})"


FAULTS = r'''
import os, resource, struct
from iii_engine.allocator import tune_allocator
from iii import ws_fastpath
assert tune_allocator()
ws_fastpath._tune_allocator_once()
frame = bytes([0x82, 0xFF]) + struct.pack("!Q", 65536) + os.urandom(4) + os.urandom(65536)  # masked, 64 KiB
data = memoryview(bytearray(frame * 16))
reader = ws_fastpath.FrameReader(masked=True)
reader.feed(data)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    assert len(reader.feed(data)[0]) == 16
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (50 * 16))
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_engine_keeps_the_channel_sockets_gain_on_page_faults() -> None:
    # what the tuning was for: 64 KiB payloads freed at the top of the heap are not faulted in again per frame
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         check=True)
    assert float(out.stdout) < 1, out.stdout
