"""aiosqlite's connection thread (before 0.22 the connection itself, since then known only by its private target's
name) is found behind one probe (``SQLITE_THREAD_MISSING``): found with this aiosqlite (the floors run checks the
older shape); without it, none is found and a failed open does not wait for one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiosqlite
import pytest

import iii_streams.sqlite_threads as threads
from iii_streams.errors import StreamUnavailableError
from iii_streams.sql import SQLStream

pytestmark = pytest.mark.timeout(30)


async def test_this_aiosqlite_has_the_thread_the_probe_looks_for() -> None:
    assert threads.SQLITE_THREAD_MISSING == ()  # an upgrade that renames it fails here
    before = threads.sqlite_threads()
    async with aiosqlite.connect(":memory:"):
        assert len(threads.sqlite_threads() - before) == 1


async def test_without_it_no_thread_is_found_and_a_failed_open_does_not_wait(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(threads, "SQLITE_THREAD_MISSING", ("aiosqlite.core._connection_worker_thread",))
    async with aiosqlite.connect(":memory:"):
        assert threads.sqlite_threads() == set()
    monkeypatch.setattr(threads, "DRIVER_THREAD_S", 20.0)  # a wait, if any, would show
    began = time.monotonic()
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 'no' / 's.db'}") as store:
        with pytest.raises(StreamUnavailableError):
            await asyncio.wait_for(store.prepare(), 10)
    assert time.monotonic() - began < 5
