"""SQLite refusing to write its file is ``StreamBackendError`` "the database refused the write", naming the file, as a
full disk is: an I/O error (the file hit the process's RLIMIT_FSIZE, a failing disk) and a read-only database said
``StreamUnavailableError … database unreachable``, so a caller retrying on "unavailable" retried for good."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream, StreamBackendError

pytestmark = pytest.mark.timeout(30)

# Run in a child: RLIMIT_FSIZE holds for the whole process. The database is made before the limit; past it the
# kernel refuses the file's growth (EFBIG; SIGXFSZ ignored, as it would kill the process), which SQLite reports as
# SQLITE_IOERR, "disk I/O error".
_CHILD = """
import asyncio, json, resource, signal, sys
from iii.stream import StreamSetInput
from iii_streams import SQLStream

async def main() -> None:
    path = sys.argv[1]
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="small", data=1))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="big", data="x" * 1_000_000))
        except Exception as exc:
            print(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
        else:
            print(json.dumps({"type": None, "message": "the write succeeded"}))

asyncio.run(main())
"""


def test_an_io_error_refuses_the_write(tmp_path: Path) -> None:
    path = tmp_path / "limited.db"
    child = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=25)
    assert child.returncode == 0, child.stderr[-2000:]
    outcome = json.loads(child.stdout.strip().splitlines()[-1])
    assert outcome["type"] == "StreamBackendError", outcome
    assert "the database refused the write: disk I/O error" in outcome["message"], outcome
    assert str(path) in outcome["message"], outcome


async def test_a_read_only_database_refuses_the_write(tmp_path: Path) -> None:
    path = tmp_path / "read-only.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="a", data=1))

        def read_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA query_only = 1")  # SQLITE_READONLY for any write, as a read-only file gives
            cursor.close()

        event.listen(store.engine.sync_engine, "connect", read_only)
        await store.engine.dispose()  # the next connection is made with the hook
        with pytest.raises(StreamBackendError) as failure:
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="b", data=2))
        # reads still work: the database is there, it only refuses writes
        assert await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="a")) == 1
    message = str(failure.value)
    assert "the database refused the write: attempt to write a readonly database" in message, message
    assert str(path) in message, message
