"""``iii.callback_set.CallbackSet``: a callback removed while the callbacks run is not called after its removal."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from iii.callback_set import CallbackSet


def test_a_callback_removed_while_an_earlier_one_runs_is_not_called() -> None:
    # Before: the delivery ran every callback of the list it took before the first one, so one removed meanwhile (a
    # bridge's stream store that stopped, say) was still called after its remover had returned.
    pool = ThreadPoolExecutor(1)
    callbacks: CallbackSet[[]] = CallbackSet(lambda: pool, "test")
    running, go = threading.Event(), threading.Event()
    called: list[str] = []

    def first() -> None:
        running.set()
        go.wait(5)

    callbacks.callbacks[first] = None
    callbacks.callbacks[lambda: called.append("removed")] = None
    callbacks.callbacks[lambda: called.append("kept")] = None
    try:
        callbacks.push()
        assert running.wait(5)
        del callbacks.callbacks[list(callbacks.callbacks)[1]]  # while the first one runs
        go.set()
    finally:
        pool.shutdown(wait=True)
    assert called == ["kept"]
