"""The engine's allocator tuning: multi-MiB buffers (frames near the size limit) are handed back once freed,
instead of staying in the heap behind small long-lived objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = r'''
import sys
if sys.argv[1] == "tuned":
    from iii_engine.allocator import tune_allocator
    assert tune_allocator()
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
first = bytearray(3 << 20); del first      # one big free: glibc raises its mmap threshold when untuned
start = rss()
big, keep = [], []
for _ in range(20):
    big.append(bytearray(2 << 20))          # a 2 MiB frame buffer ...
    keep.append(bytearray(64 << 10))        # ... next to something that lives on
del big
print(rss() - start)
'''


def _growth(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_frame_buffers_go_back_to_the_system_once_tuned() -> None:
    untuned, tuned = _growth("plain"), _growth("tuned")
    assert untuned > 20, f"the untuned baseline should keep the freed 40 MiB (kept {untuned:.1f} MiB)"
    assert tuned < 8, f"RSS kept {tuned:.1f} MiB of freed 2 MiB buffers with the allocator tuned"
