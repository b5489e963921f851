"""A writer used from sync code against a host name (the connect's getaddrinfo starts its private loop's default
executor) and left unclosed: ``weakref.finalize`` closes that loop at the interpreter's exit, shutting the executor
down through ``loop.shutdown_default_executor()``, which starts a thread. Python 3.12+ refuses new threads there
(``RuntimeError: can't create new thread at interpreter shutdown``, while ``sys.is_finalizing()`` is still False):
the exit printed that traceback. The child here makes 3.11 refuse them the same way once its exit starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

import iii
from iii.channels import ChannelError, ChannelReader
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server

_SOURCES = str(Path(iii.__file__).resolve().parents[1])  # the child imports the iii under test

_WRITES_AND_EXITS = """
import atexit, json, sys, threading
from iii.channels import ChannelWriter
writer = ChannelWriter(sys.argv[1], json.loads(sys.argv[2]))
writer.stream.write(b"hello")
assert writer._home.loop._default_executor is not None, "the connect did not start the default executor"

def no_thread(self: threading.Thread) -> None:
    raise RuntimeError("can't create new thread at interpreter shutdown")

# atexit runs its hooks last in, first out: this one before weakref.finalize's
atexit.register(setattr, threading.Thread, "start", no_thread)
"""


@pytest.mark.timeout(30)
async def test_a_writer_left_open_exits_quietly_where_no_thread_can_start_at_exit() -> None:
    async with relay_server(ChannelRelay()) as (base, relay):
        refs = relay.create(None, owner="w")
        reader = ChannelReader(base, refs["reader"])
        reading = asyncio.ensure_future(reader.read_all())
        by_name = base.replace("127.0.0.1", "localhost")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WRITES_AND_EXITS, by_name, json.dumps(refs["writer"]),
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": _SOURCES})
        try:
            _, stderr = await asyncio.wait_for(child.communicate(), 20)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        assert child.returncode == 0, stderr.decode()
        assert b"Traceback" not in stderr, stderr.decode()
        with pytest.raises(ChannelError):  # the connection dropped at exit: not a whole stream
            await asyncio.wait_for(reading, 10)
