"""A pipe nobody reads, for commands whose stderr (or stdout) must not hold them up."""

from __future__ import annotations

import contextlib
import os


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
