"""asyncio's private ``Process._transport`` is read in one module (``iii_channels.asyncio_internals``), checked
once at import, with a public fallback in ``iii_channels.pipes`` where it is missing.

Before, ``pipes`` read it itself in two places. These tests fail the day an upgrade moves it (the first), and run
the fallback path with the probe's result patched (the others)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from iii.warn_once import WarnOnce
from iii_channels import asyncio_internals, pipes
from tests.polling import until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def fallback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As on a Python whose ``Process`` keeps its transport elsewhere; the once-only warning not yet said."""
    monkeypatch.setattr(asyncio_internals, "MISSING", ("asyncio.subprocess.Process._transport",))
    monkeypatch.setattr(asyncio_internals, "_warn_once", WarnOnce(asyncio_internals.log))
    yield


def test_this_python_has_the_internals() -> None:
    """Fails the day asyncio's ``Process`` stops keeping its transport in ``_transport``: look at the module."""
    assert asyncio_internals.MISSING == ()


def test_the_probe_sees_a_process_without_the_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    class Elsewhere:  # a Process that keeps its transport under another name
        def __init__(self, transport: Any, protocol: Any, loop: Any) -> None:
            self._kept = transport

    class OtherConstructor:  # one whose constructor takes other arguments
        def __init__(self) -> None:
            pass

    monkeypatch.setattr(asyncio.subprocess, "Process", Elsewhere)
    assert asyncio_internals._probe() == ("asyncio.subprocess.Process._transport",)
    monkeypatch.setattr(asyncio.subprocess, "Process", OtherConstructor)
    assert asyncio_internals._probe() == ("asyncio.subprocess.Process(transport, protocol, loop)",)


async def test_with_the_internals_the_transport_is_handed_out() -> None:
    proc = await asyncio.create_subprocess_exec("cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert isinstance(asyncio_internals.process_transport(proc), asyncio.SubprocessTransport)
        assert pipes._stdout_writer_left(proc) is True  # cat holds its stdout
    finally:
        pipes._close_pipes(proc)
        await asyncio.wait_for(proc.wait(), 10)


async def test_without_them_the_callers_take_the_public_path(fallback: None, caplog: pytest.LogCaptureFixture) -> None:
    """No transport: the stdout pipe cannot be looked into (``None``), and closing the pipes closes stdin alone
    (``cat`` then exits on its end of input; our read end of its stdout stays open until read to its end)."""
    proc = await asyncio.create_subprocess_exec("cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    with caplog.at_level(logging.WARNING, logger=asyncio_internals.__name__):
        assert asyncio_internals.process_transport(proc) is None
        assert pipes._stdout_writer_left(proc) is None
        pipes._close_pipes(proc)
    assert proc.stdin.is_closing()
    assert await asyncio.wait_for(proc.stdout.read(), 10) == b""  # still ours to read: not closed by _close_pipes
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    warnings = [record for record in caplog.records if record.name == asyncio_internals.__name__]
    assert len(warnings) == 1, warnings  # said once, not at each use
    assert "Process._transport" in warnings[0].getMessage()


@pytest.mark.parametrize("internals", [True, False], ids=["internals", "fallback"])
async def test_stdouts_wait_after_the_exit_has_its_floor_only_without_them(
        internals: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented fallback of ``_StdoutAfterExit``: a pipe that cannot be looked into is waited for at least
    ``STDOUT_EOF_FLOOR_S`` after the exit, ``exit_timeout=0`` or not; with the internals, 0 stays 0."""
    if not internals:
        monkeypatch.setattr(asyncio_internals, "MISSING", ("asyncio.subprocess.Process._transport",))
    proc = await asyncio.create_subprocess_exec("true", stdout=asyncio.subprocess.PIPE)
    after = pipes._StdoutAfterExit(proc, 0)
    try:
        await asyncio.wait_for(proc.wait(), 10)
        await until(lambda: after._exited_at is not None, 10)  # (set by a done callback of its exit watch)
        assert after.allowed == (0 if internals else pipes.STDOUT_EOF_FLOOR_S)
    finally:
        after.close()
