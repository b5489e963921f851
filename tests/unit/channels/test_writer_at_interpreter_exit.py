"""A writer still in a sync call when the interpreter exits (a daemon thread writing to a full channel): the process
exits. ``weakref.finalize`` runs a writer's release at exit for every writer still alive; it waited, with no bound,
for the sync call holding the writer's private loop, which never ended, so the process never exited.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import iii
from iii.channels import ChannelReader
from iii_engine.channels import ChannelRelay

from .relay_server import relay_server

_SOURCES = str(Path(iii.__file__).resolve().parents[1])  # the child imports the iii under test

_WRITES_IN_A_DAEMON_THREAD = """
import contextlib, json, sys, threading, time
from iii.channels import ChannelError, ChannelWriter
writer = ChannelWriter(sys.argv[1], json.loads(sys.argv[2]))

def write() -> None:
    with contextlib.suppress(ChannelError):
        writer.stream.write(bytes(64 << 20))

threading.Thread(target=write, daemon=True).start()
sys.stdin.readline()  # the relay is full: the write is about to be stuck
deadline = time.monotonic() + 10
while writer._end is None or not writer._end.ws.transport.get_write_buffer_size():
    assert time.monotonic() < deadline, "the write never got stuck"
    time.sleep(0.01)  # polled: the thread's loop waits for a socket that no longer takes bytes, nothing to await
"""


async def test_a_process_exits_with_a_sync_write_stuck_in_a_daemon_thread() -> None:
    async with relay_server(ChannelRelay(max_queued_bytes=1 << 20, max_message_size=4 << 20)) as (base, relay):
        refs = relay.create(None, owner="w")
        reader = ChannelReader(base, refs["reader"])
        await reader._ensure_connected()  # attached and not reading: the writer's bytes stop at the relay
        env = {**os.environ, "PYTHONPATH": _SOURCES}
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WRITES_IN_A_DAEMON_THREAD, base, json.dumps(refs["writer"]),
            stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        try:
            await asyncio.wait_for(relay.wait_full(refs["writer"]["channel_id"]), 20)
            assert child.stdin is not None
            child.stdin.write(b"exit\n")
            await child.stdin.drain()
            _, stderr = await asyncio.wait_for(child.communicate(), 10)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
            await reader.close_async()
        assert child.returncode == 0, stderr.decode()
        assert b"Traceback" not in stderr, stderr.decode()
