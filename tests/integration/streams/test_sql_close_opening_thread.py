"""A SQLite store closed while its first connect (or migration) is under way, its callers gone, returns once that
opening's aiosqlite thread is done with the event loop: a loop closed right after the close hears nothing more.

Before: the close gave up on such an opening at once and returned with its thread still connecting; the thread then
called into the closed loop and printed "RuntimeError: Event loop is closed" (45 of 60 runs with a get cancelled
0-29 loop turns after it began; 40 of 60 with ``create``), and a cancelled connect's thread was not waited for.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream
from iii_streams.sqlite_threads import sqlite_threads

pytestmark = pytest.mark.timeout(30)

ROUNDS = 30


@pytest.mark.parametrize("create", [False, True])
def test_a_close_giving_up_on_an_opening_leaves_no_thread_calling_the_closed_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, create: bool) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.db"

    async def made() -> None:
        async with SQLStream.from_url(url, create=True) as store:
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="i", data=1))

    asyncio.run(made())
    failures: list[str] = []

    def noted(args: Any) -> None:  # what a thread raising prints, kept instead
        failures.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}")

    monkeypatch.setattr(threading, "excepthook", noted)
    started: set[threading.Thread] = set()
    for turns in range(ROUNDS):
        before = sqlite_threads()

        async def close_as_it_opens(turns: int = turns) -> None:
            store = SQLStream.from_url(url, create=create)
            get = asyncio.ensure_future(store.get(StreamGetInput(stream_name="s", group_id="g", item_id="i")))
            for _ in range(turns):
                await asyncio.sleep(0)  # loop turns, not time: the moment in the opening the cancel comes
            get.cancel()
            await asyncio.wait([get])
            await store.aclose()

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(close_as_it_opens())
        finally:
            loop.close()
        started |= sqlite_threads() - before
    for thread in started:
        thread.join(5)
    assert not [thread for thread in started if thread.is_alive()]
    assert failures == []
