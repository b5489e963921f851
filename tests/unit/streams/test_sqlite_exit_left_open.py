"""A process that opened a SQLite ``SQLStream`` and ends without ``aclose()`` (its script's end, an exception) exits.

SQLAlchemy marks aiosqlite's connection thread a daemon, but before 2.0.46 only where aiosqlite's Connection is the
thread (aiosqlite before 0.22). With aiosqlite 0.22 and such a SQLAlchemy (both within this package's floors) the
thread is a plain one, which the interpreter's exit joins: before, such a process never exited. The child here runs
the installed SQLAlchemy with that one difference (its ``daemon = True`` lost), and must exit within the bound.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

aiosqlite_core = pytest.importorskip("aiosqlite.core")

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not callable(getattr(aiosqlite_core, "_connection_worker_thread", None))
                       or not callable(getattr(aiosqlite_core.Connection, "stop", None)),
                       reason="aiosqlite before 0.22: its Connection is the thread, which SQLAlchemy makes a daemon"),
]

EXIT_BOUND_S = 10.0  # a process that exits takes well under 2 s here, imports included; one that hangs never does

CHILD = r'''
import asyncio, sys, threading
import aiosqlite.core


class ThreadLeftPlain(threading.Thread):
    """aiosqlite's thread as SQLAlchemy before 2.0.46 left it: its `daemon = True` went nowhere."""

    @property
    def daemon(self) -> bool:
        return self._daemonic

    @daemon.setter
    def daemon(self, value: bool) -> None:
        pass


aiosqlite.core.Thread = ThreadLeftPlain

from iii.stream import StreamSetInput
from iii_streams.sql import SQLStream

STORE = None  # a module global: kept until after the exit joined the threads


async def main(url: str, how: str) -> None:
    global STORE
    STORE = SQLStream.from_url(url)
    await STORE.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))
    plain = [t for t in threading.enumerate() if isinstance(t, ThreadLeftPlain) and not t.daemon]
    print(f"plain threads: {len(plain)}", flush=True)
    if how == "raise":
        raise RuntimeError("left open")


asyncio.run(main(sys.argv[1], sys.argv[2]))
'''


@pytest.mark.parametrize("how", ["end", "raise"])
@pytest.mark.parametrize("database", ["file", "memory"])
def test_a_process_that_left_a_sqlite_store_open_exits(tmp_path: Path, how: str, database: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}" if database == "file" else "sqlite+aiosqlite://"
    began = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, url, how], capture_output=True, text=True,
                              timeout=EXIT_BOUND_S, cwd=Path(__file__).parents[3])
    except subprocess.TimeoutExpired as exc:  # (the child is killed)
        pytest.fail(f"the process did not exit within {EXIT_BOUND_S:g} s: {exc.stdout!r} {exc.stderr!r}")
    took = time.monotonic() - began
    assert "plain threads: 1" in done.stdout, (done.stdout, done.stderr)  # the case of the old SQLAlchemy
    if how == "end":
        assert done.returncode == 0 and done.stderr == "", done.stderr
    else:
        assert done.returncode == 1 and done.stderr.rstrip().endswith("RuntimeError: left open"), done.stderr
    print(f"exit took {took:.2f} s")
