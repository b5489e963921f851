"""While an ``on_functions_available`` callback blocks, only the newest function list waits for it."""

from __future__ import annotations

import threading

from iii import InitOptions
from iii.iii import III
from iii.iii_types import FunctionInfo


def test_a_blocked_callback_gets_the_newest_list_next_and_nothing_piles_up() -> None:
    client = III("ws://127.0.0.1:1", InitOptions(worker_name="newest"))  # it keeps connecting: nothing listens
    release, first, second = threading.Event(), threading.Event(), threading.Event()
    seen: list[int] = []

    def blocks_first(functions: list[FunctionInfo]) -> None:
        seen.append(len(functions))
        if len(seen) == 1:
            first.set()
            release.wait(10)
        else:
            second.set()

    try:
        client._functions_available_callbacks[blocks_first] = None
        client._queue_functions_available([])
        assert first.wait(5)
        for n in range(1, 51):  # fifty changes while the callback blocks
            client._queue_functions_available([FunctionInfo(function_id=f"f{i}") for i in range(n)])
        # before: all fifty lists waited, each a whole set (memory grew with every change)
        assert len(client._functions_available_queue) == 1
        release.set()
        assert second.wait(5)
        assert seen == [0, 50]
    finally:
        release.set()
        client.shutdown()
