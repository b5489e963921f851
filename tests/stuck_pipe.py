"""A pipe nobody reads, for commands whose stderr (or stdout) must not hold them up."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any


def stuck_pipe() -> tuple[int, int]:
    """``(read end, write end)`` of a full pipe whose reader is alive and reads nothing (``2>&1 | less`` paused): a
    write to it waits. Linux only (``F_SETPIPE_SZ``)."""
    import fcntl

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"." * 512)
    os.set_blocking(write_end, True)
    return read_end, write_end


@contextlib.asynccontextmanager
async def with_stuck_stderr(*argv: str, **popen: Any) -> AsyncIterator[asyncio.subprocess.Process]:
    """``argv`` started with a :func:`stuck_pipe` as its stderr (the pipe's read end kept open, so writes there
    wait rather than fail), killed on the way out if it is still running."""
    read_end, write_end = stuck_pipe()
    try:
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stderr=write_end, **popen)
        finally:
            os.close(write_end)  # the child holds its own copy
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        os.close(read_end)
