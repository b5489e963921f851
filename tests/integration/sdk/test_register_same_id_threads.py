"""Two threads registering one function id at once: one wins, keeps its handler, and serves the calls."""

from __future__ import annotations

import threading

from .conftest import Harness, MakeWorker

ROUNDS = 60


def test_the_winner_of_a_same_id_race_keeps_its_handler(
    served: Harness, make_worker: MakeWorker, fast_switching: None
) -> None:
    owner, caller = make_worker("owner"), make_worker("caller")
    winners: dict[str, str] = {}
    refused: dict[str, list[str]] = {}

    def register(function_id: str, tag: str, start: threading.Barrier) -> None:
        start.wait()
        try:
            owner.register_function(function_id, lambda _data, tag=tag: tag)
        except ValueError:
            refused.setdefault(function_id, []).append(tag)
        else:
            winners[function_id] = tag

    ids = [f"race.{n}" for n in range(ROUNDS)]
    for function_id in ids:
        start = threading.Barrier(2)
        threads = [threading.Thread(target=register, args=(function_id, tag, start)) for tag in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert set(winners) == set(ids)
    assert [f for f in ids if len(refused.get(f, [])) != 1] == []
    served.wait_registered(*ids)
    answers = {function_id: caller.trigger({"function_id": function_id, "payload": None}) for function_id in ids}
    assert answers == winners
