"""A SQL store takes at most ``max_pending`` writes at once (queued or running, over all its queues): a burst past
it has its excess refused at once, ``StreamBackendError`` with ``applied`` False naming ``max_pending``, and every
write under the bound succeeds.

Before (attack on the PostgreSQL store, default pool and bound): past the shared queue's 100,000 writes each further
write went to its own item's queue, whose batch took a pooled connection of its own; tens of thousands of them
queued for 15 connections ahead of the shared batch, whose writes timed out or got PoolExhaustedError (110,000 sets
of distinct items: 37,793 failed; 150,000: 147,822). Scaled down here: a bound of 50, 500 writes, a pool of one.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream, StreamBackendError

pytestmark = pytest.mark.timeout(30)

BOUND = 50
BURST = 500


async def _burst(store: SQLStream) -> tuple[str, list[object], list[str]]:
    """``BURST`` concurrent sets of distinct items: (their stream, each outcome, the order they ended in)."""
    stream = f"burst-{uuid.uuid4().hex[:8]}"
    ended: list[str] = []

    async def one(n: int) -> object:
        try:
            result = await store.set(StreamSetInput(stream_name=stream, group_id=f"g{n % 7}", item_id=str(n),
                                                    data={"n": n}), timeout=20)
        except StreamBackendError as exc:
            ended.append("refused")
            return exc
        ended.append("done")
        return result

    outcomes = await asyncio.gather(*(one(n) for n in range(BURST)), return_exceptions=True)
    return stream, list(outcomes), ended


async def _check(store: SQLStream) -> None:
    await store.prepare()
    stream, outcomes, ended = await _burst(store)
    refused = [o for o in outcomes if isinstance(o, StreamBackendError)]
    others = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, StreamBackendError)]
    assert not others, others[:3]
    # the first BOUND writes were taken (none had ended when the burst came), the rest refused
    assert len(refused) == BURST - BOUND, (len(refused), refused[:1])
    assert all(o.applied is False for o in refused)
    assert "max_pending=50" in str(refused[0]) and "not applied" in str(refused[0]), str(refused[0])
    # refused at once: every refusal came before the first write taken ended
    assert ended[:BURST - BOUND] == ["refused"] * (BURST - BOUND), ended[:BURST - BOUND + 2]
    for n, outcome in enumerate(outcomes):
        stored = await store.get(StreamGetInput(stream_name=stream, group_id=f"g{n % 7}", item_id=str(n)))
        assert stored == (None if isinstance(outcome, StreamBackendError) else {"n": n}), (n, outcome)
    # and the store takes writes again once those ended
    again = await asyncio.gather(*(store.set(StreamSetInput(stream_name=stream, group_id="again", item_id=str(n),
                                                            data=n)) for n in range(BOUND)))
    assert [r.new_value for r in again] == list(range(BOUND))


async def test_postgres_refuses_the_excess_of_a_burst_at_once_and_serves_the_rest(pg_url: str) -> None:
    async with SQLStream.from_url(pg_url, max_pending=BOUND, pool_size=1, max_overflow=0) as store:
        await _check(store)


async def test_sqlite_counts_the_same_bound(tmp_path: Path) -> None:
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", max_pending=BOUND) as store:
        await _check(store)


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "10"])
def test_max_pending_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="max_pending must be a positive integer"):
        SQLStream.from_url("sqlite+aiosqlite://", max_pending=bad)
