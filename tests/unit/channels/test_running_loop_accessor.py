"""The channel ends find the running loop through asyncio's private ``_get_running_loop`` where it exists, and
through the public ``get_running_loop`` where it does not (before, the module failed to import without it)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from iii import channels


def _both_answers(accessor: object) -> tuple[object, object]:
    """What ``accessor()`` answers where no loop runs (a thread of its own) and on a running loop."""
    assert callable(accessor)
    outside: list[object] = []
    thread = threading.Thread(target=lambda: outside.append(accessor()))
    thread.start()
    thread.join(5)

    async def inside() -> bool:
        return accessor() is asyncio.get_running_loop()

    return outside[0], asyncio.run(inside())


def test_the_private_accessor_is_used_where_asyncio_has_it() -> None:
    assert channels._running_loop_accessor() is asyncio._get_running_loop
    assert _both_answers(channels._running_loop_accessor()) == (None, True)


def test_the_public_api_stands_in_where_asyncio_lacks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(asyncio, "_get_running_loop")
    accessor = channels._running_loop_accessor()
    assert accessor is channels._running_loop_or_none
    assert _both_answers(accessor) == (None, True)
