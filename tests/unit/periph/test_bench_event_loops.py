"""``bench/event_loops.py``: its overlay interpreter puts every process of a bench script on the chosen loop, even a
child started with its own ``PYTHONPATH``; the two outputs are shown line against line."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from bench.event_loops import make_overlay, side_by_side

# a bench script's child: started with sys.executable, -P and a PYTHONPATH of its own, as engine_roundtrip.py does
_PARENT = textwrap.dedent("""
    import asyncio, os, subprocess, sys
    probe = "import asyncio; print(type(asyncio.new_event_loop()).__module__.split('.')[0])"
    env = {**os.environ, "PYTHONPATH": "/nonexistent"}
    child = subprocess.run([sys.executable, "-P", "-c", probe], env=env, capture_output=True, text=True, check=True)
    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(asyncio.run(kind()), child.stdout.strip())
""")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_overlay_puts_the_script_and_its_children_on_the_loop(loop: str, tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    python = make_overlay(tmp_path, loop)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([str(python), "-c", _PARENT], env=env, capture_output=True, text=True, timeout=25)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [loop, loop]


def test_side_by_side_pairs_lines_that_differ_in_numbers_only() -> None:
    asyncio_out = ["3 rounds", "engine  0.91  1.27", "open=19, rss=18.6", "only here", "end"]
    uvloop_out = ["3 rounds", "engine  0.90  1.25", "open=19.1, rss=1,018.7", "end", "a warning"]
    assert side_by_side([("asyncio", asyncio_out), ("uvloop", uvloop_out)]) == [
        "        | 3 rounds",
        "asyncio | engine  0.91  1.27",
        "uvloop  | engine  0.90  1.25",
        "asyncio | open=19, rss=18.6",
        "uvloop  | open=19.1, rss=1,018.7",
        "asyncio | only here",
        "uvloop  | (no such line)",
        "        | end",
        "uvloop  + a warning",
    ]
