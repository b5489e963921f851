"""Attack A5 on 22fdf76: channel ids and keys made ahead in batches are shared by every engine of the process, and
engines may run on several threads (each on its own loop): one thread must never find the batch emptied by another
between its check and its take (``IndexError: pop from empty list`` failed the channel's creation)."""

from __future__ import annotations

import threading
import time

from iii_engine.channels.registry import _new_ids


def test_threads_drawing_ids_at_once_never_fail_and_never_share_one(fast_switching: None) -> None:
    errors: list[BaseException] = []
    ids: list[str] = []

    def draw() -> None:
        try:
            for _ in range(5_000):
                ids.append(_new_ids()[0])
        except BaseException as exc:  # any failure is the finding
            errors.append(exc)

    ends = time.monotonic() + 1.5
    rounds = 0
    while not errors and time.monotonic() < ends:
        threads = [threading.Thread(target=draw) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rounds += 1
    assert errors == [], f"round {rounds}: {errors[0]!r}"
    assert len(set(ids)) == len(ids)
