"""A progress bar whose stream cannot be written (``sys.stderr`` ``None`` under ``2>&-``, a pipe whose reader left,
``/dev/full``, a closed file) failed the transfer it reported on: ``receive_file(..., progress=True)`` stored
nothing. It stops drawing now, with one warning, and the data goes through."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import sys
from pathlib import Path

import pytest

from iii_channels import ProgressBar, receive_file, send_file
from iii_channels import progress as progress_module
from iii_engine.testing import local_channel
from tests.conftest import ROOT
from tests.stuck_pipe import with_stuck_stderr

pytestmark = pytest.mark.timeout(30)


class _Broken(io.TextIOBase):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def isatty(self) -> bool:
        return False


@pytest.mark.parametrize("stderr", [None, _Broken()], ids=["closed", "epipe"])
async def test_receive_file_with_progress_stores_whatever_stderr_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stderr: io.TextIOBase | None,
) -> None:
    monkeypatch.setattr(sys, "stderr", stderr)
    data = os.urandom(3 << 20)
    (tmp_path / "src.bin").write_bytes(data)
    async with local_channel() as ch:
        _, receipt = await asyncio.gather(
            send_file(ch.writer, tmp_path / "src.bin", progress=True),
            receive_file(ch.reader, tmp_path / "dst.bin", progress=True, require_trailer=True))
    assert receipt.verified  # before: AttributeError / BrokenPipeError, nothing stored
    assert (tmp_path / "dst.bin").read_bytes() == data


def test_a_bar_stops_drawing_with_one_warning(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(progress_module, "_warned", False)
    full = open("/dev/full", "w")  # every flush fails with ENOSPC
    try:
        bars = [ProgressBar(label="x", stream=full, interval=0) for _ in range(2)]
        with caplog.at_level(logging.WARNING, "iii_channels.progress"):
            for bar in bars:
                bar(1, 10)
                bar(5, 10)
                bar.close()
    finally:
        with contextlib.suppress(OSError):
            full.close()  # what is left in its buffer cannot be flushed either
    assert all(bar.stream is None for bar in bars)
    warnings = [r for r in caplog.records if r.name == "iii_channels.progress"]
    assert len(warnings) == 1 and "cannot be written" in warnings[0].getMessage()


_CHILD = """
import asyncio, os, sys
from pathlib import Path
import iii_channels
from iii_engine.testing import local_channel

async def main() -> None:
    src = Path(sys.argv[1])
    async with local_channel() as ch:
        await asyncio.gather(iii_channels.send_file(ch.writer, src, progress=True),
                             iii_channels.receive_file(ch.reader, src.with_name("copy.bin"), progress=True))
    for n in range(500):  # more than what is kept for a stream nobody reads
        iii_channels.ProgressBar(label=f"bar {n}")(1, 2)
    os.write(1, b"done")

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux's")
async def test_receive_file_with_progress_goes_on_when_nobody_reads_stderr(tmp_path: Path) -> None:
    """Before: the bar's first write blocked the event loop, the transfer and all else on it, for good. The process
    also ends (status 0) with the writer still waiting for the pipe."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(8 << 20))
    async with with_stuck_stderr(
            sys.executable, "-c", _CHILD, str(src), stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
            cwd=ROOT) as proc:
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert (proc.returncode, out) == (0, b"done")
    assert (tmp_path / "copy.bin").read_bytes() == src.read_bytes()


def test_a_burst_of_lines_to_a_stream_that_works_loses_none(tmp_path: Path) -> None:
    from iii_channels._unblocked import settle, write_text

    with open(tmp_path / "said", "w") as said:
        for n in range(1000):
            write_text(said, f"line {n}\n")
        settle(said, 5.0)
    lines = (tmp_path / "said").read_text().splitlines()
    # before: 64 to 286 of 1,000 kept, the rest "dropped: this stream was not being read", though it was
    assert lines == [f"line {n}" for n in range(1000)], (len(lines), [x for x in lines if "dropped" in x][:2])
