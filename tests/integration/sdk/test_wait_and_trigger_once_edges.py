"""Edges of ``III.wait_until_connected_async`` and ``III.trigger_once_async`` beyond their first tests: a bound
with no float, and many calls at once from several threads and loops across engine restarts (each sent at most once,
none that was said not sent ever arriving, each thread's in its order)."""

from __future__ import annotations

import asyncio
import collections
import fractions
import threading
from typing import Any

import pytest

from iii import InitOptions
from iii.errors import IIIError
from iii.iii import III

from .conftest import FAST_RECONNECT, EngineThread

pytestmark = pytest.mark.timeout(30)


async def test_a_negative_bound_beyond_any_float_is_refused_as_any_bad_bound(client: III) -> None:
    with pytest.raises(ValueError, match="within must be a finite number of seconds >= 0"):
        await client.wait_until_connected_async(-(10**400))


# (10**400: a finite bound with no float, taken as the longest wait, as a call's timeout_ms is; OverflowError before)
@pytest.mark.parametrize("within", [0, 0.0, 1e300, pytest.param(10**400, id="10**400"), fractions.Fraction(1, 2)])
async def test_a_connected_client_returns_at_once_for_any_valid_bound(client: III, within: Any) -> None:
    await asyncio.wait_for(client.wait_until_connected_async(within), 2)
    assert client.get_connection_state() == "connected"


def test_many_at_once_across_restarts_each_sent_at_most_once_and_a_false_never_arrives(fake: EngineThread) -> None:
    client = III(fake.url, InitOptions(worker_name="once", reconnection_config=FAST_RECONNECT))
    asyncio.run(client.connect_async())
    outcome: dict[str, object] = {}

    def one_thread(name: str) -> None:
        async def calls() -> None:
            for i in range(300):
                key = f"{name}-{i}"
                try:
                    outcome[key] = await client.trigger_once_async({"function_id": "sink", "payload": key})
                except IIIError as exc:  # (a full queue, say: never sent either)
                    outcome[key] = type(exc).__name__
                if i % 50 == 0:
                    await asyncio.sleep(0.005)

        asyncio.run(calls())

    async def gathered() -> None:
        keys = [f"g-{i}" for i in range(300)]
        results = await asyncio.gather(*(client.trigger_once_async({"function_id": "sink", "payload": key})
                                         for key in keys), return_exceptions=True)
        outcome.update(zip(keys, results, strict=True))

    try:
        threads = [threading.Thread(target=one_thread, args=(f"t{n}",)) for n in range(3)]
        threads.append(threading.Thread(target=asyncio.run, args=(gathered(),)))
        for thread in threads:
            thread.start()
        for _ in range(3):
            fake.restart()
        for thread in threads:
            thread.join(20)
        assert len(outcome) == 4 * 300
        asyncio.run(client.list_functions_async())  # a round trip on the connection up now: its frames handled
    finally:
        client.shutdown()
    arrived = collections.Counter(msg.get("data") for _, msg in list(fake.engine.all_frames)
                                  if msg.get("type") == "invokefunction" and msg.get("function_id") == "sink")
    assert [key for key, n in arrived.items() if n > 1] == []
    assert [key for key, sent in outcome.items() if sent is not True and key in arrived] == []
    for name in ("t0", "t1", "t2", "g"):
        order = [int(str(key).split("-")[1]) for key in arrived if str(key).startswith(f"{name}-")]
        assert order == sorted(order), f"{name}'s calls arrived out of order"
    assert sum(1 for sent in outcome.values() if sent is True) > 0
