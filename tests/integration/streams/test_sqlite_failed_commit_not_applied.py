"""A SQLite write whose commit fails writing the file (a file size limit: ``SQLITE_IOERR_WRITE``; a disk full:
``SQLITE_FULL``) was rolled back by SQLite, and its caller is told so: ``applied`` False, "not applied", for the
locking transaction's ``COMMIT`` and for the single autocommitted statement of a write to an item the store knows.
The file holds none of them afterwards, and the store goes on.

Before (attack on the SQL store, a full disk and ``ulimit -f``): such writes said ``applied`` None, "may have been
applied", though none of them was in the file: in WAL mode the error comes at ``COMMIT``, after the write is marked
sent. Here a child process runs under ``RLIMIT_FSIZE`` (its ``SIGXFSZ`` ignored, so the write fails with ``EFBIG``
instead of killing it), which needs neither root nor a mount.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[3]  # the repository: the child imports this checkout's packages

CHILD = r"""
import asyncio, json, os, resource, signal, sys
from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream

path = sys.argv[1]

def item(name, data):
    return StreamSetInput(stream_name="s", group_id="g", item_id=name, data=data)

async def outcome(write):
    try:
        await write
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "type": type(exc).__name__, "applied": getattr(exc, "applied", "-"), "text": str(exc)}

async def main():
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as store:
        await store.set(item("known", {"n": 1}))  # known to the store: its next set is one autocommitted UPDATE
        sizes = [os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p)]
        limit = max(sizes) + 32 * 1024
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        big = "x" * (2 * limit)  # past the limit wherever it is written
        results = {
            "single statement": await outcome(store.set(item("known", {"big": big}))),
            "transaction": await outcome(store.set(item("fresh", {"big": big}))),
        }
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        results["after"] = await outcome(store.set(item("after", {"n": 2})))
        results["read"] = await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="known"))
    print(json.dumps(results))

asyncio.run(main())
"""


def test_a_commit_that_failed_writing_the_file_says_not_applied(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=25,
                         check=False, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for name in ("single statement", "transaction"):
        failed = results[name]
        assert failed["ok"] is False, (name, failed)
        assert failed["type"] == "StreamBackendError" and "disk I/O error" in failed["text"], (name, failed)
        assert failed["applied"] is False, (name, failed)
        assert "rolled it back: the write was not applied" in failed["text"], (name, failed)
        assert "may have been applied" not in failed["text"], (name, failed)
    assert results["after"] == {"ok": True}
    assert results["read"] == {"n": 1}
    with closing(sqlite3.connect(path)) as db:
        stored = dict(db.execute("SELECT item_id, value FROM iii_stream_items").fetchall())
    assert stored == {"known": '{"n":1}', "after": '{"n":2}'}  # neither failed write is in the file
