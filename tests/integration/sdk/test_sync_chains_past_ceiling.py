"""Sync handlers calling each other in chains, all in one worker, through a real engine: several chains that each fit
the handler threads' ceiling but not together.

Each level of a chain is a sync handler blocked in ``iii.trigger`` on the next level, so a chain of depth ``d`` holds
``d`` handler threads until its deepest level answers. With the ceiling at 16 threads, three chains of 10 need 30: the
chains advance together, all 16 threads end up blocked, the next level of every chain waits in the pool's queue, and
all three chains timed out (not only the excess). One chain alone finished. Measured on 2 cores: 3 x InvocationError
"Invocation of 'c1' timed out after 3000ms", 16 threads.

Ordering the pool's queue (nested calls first, or LIFO) could not fix it: when the threads run out the queue holds
only nested calls, one per chain, and no thread is left to run any of them. Now a thread blocked at the ceiling runs
queued handlers itself while it waits (``HandlerThreads.wait_helping``), and every chain finishes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from iii import register_worker
from iii.handler_threads import HandlerThreads
from iii.iii import III
from iii_engine import Engine

CEILING = 16
INNER_TIMEOUT_MS = 3000


async def _worker(engine: Engine, depth: int, leaf: Any = 1) -> III:
    """A worker whose handler threads have a ceiling of :data:`CEILING`, serving ``c0`` .. ``c{depth-1}``: ``ci``
    calls ``c{i+1}`` with a sync trigger and returns its answer plus one."""
    client = await asyncio.to_thread(register_worker, engine.url)
    runner: Any = client._runner  # (the ceiling is not configurable from outside: 256 by default)
    runner.threads.shutdown()
    runner.threads = HandlerThreads(limit=2, max_threads=CEILING)

    def level(i: int) -> Any:
        def handler(data: Any) -> Any:
            if i + 1 == depth:
                if isinstance(leaf, Exception):
                    raise leaf
                return leaf
            request = {"function_id": f"c{i + 1}", "payload": data, "timeout_ms": INNER_TIMEOUT_MS}
            if not isinstance(leaf, Exception):
                return client.trigger(request) + 1
            try:  # (passed up as is, each level's error quotes the next one's: megabytes at the top)
                return client.trigger(request)
            except Exception as exc:
                return f"{type(exc).__name__}: {leaf}" if str(leaf) in str(exc) else f"{exc!r}"[:200]
        return handler

    for i in range(depth):
        client.register_function(f"c{i}", level(i))
    return client


def _chain(client: III, function_id: str = "c0") -> tuple[Any, float]:
    started = time.monotonic()
    try:
        result: Any = client.trigger({"function_id": function_id, "payload": {}, "timeout_ms": 2 * INNER_TIMEOUT_MS})
    except Exception as exc:
        result = f"{type(exc).__name__}: {str(exc)[:120]}"
    return result, time.monotonic() - started


async def _run_chains(engine: Engine, chains: int, depth: int, leaf: Any = 1) -> list[tuple[Any, float]]:
    client = await _worker(engine, depth, leaf)
    try:
        # (the engine runs on this loop: sync calls go to threads; the registrations land before the chains start)
        await asyncio.to_thread(_chain, client, f"c{depth - 1}")
        return list(await asyncio.gather(*(asyncio.to_thread(_chain, client) for _ in range(chains))))
    finally:
        await asyncio.to_thread(client.shutdown)


async def test_chains_that_each_fit_the_ceiling_all_finish(engine: Engine) -> None:
    outcomes = await _run_chains(engine, chains=3, depth=10)
    assert [result for result, _ in outcomes] == [10, 10, 10], outcomes
    assert max(seconds for _, seconds in outcomes) < INNER_TIMEOUT_MS / 1000, outcomes


async def test_one_chain_that_fits_the_ceiling_finishes(engine: Engine) -> None:
    outcomes = await _run_chains(engine, chains=1, depth=10)
    assert [result for result, _ in outcomes] == [10], outcomes
    assert outcomes[0][1] < INNER_TIMEOUT_MS / 1000, outcomes


async def test_an_error_at_the_end_of_chains_past_the_ceiling_reaches_every_caller(engine: Engine) -> None:
    """Levels run by a blocked thread (the ceiling reached) raise as on a thread of their own: each chain's caller gets
    the deepest level's error, at once, not a timeout."""
    outcomes = await _run_chains(engine, chains=3, depth=10, leaf=ValueError("the leaf failed"))
    assert [result for result, _ in outcomes] == ["InvocationError: the leaf failed"] * 3, outcomes
    assert max(seconds for _, seconds in outcomes) < INNER_TIMEOUT_MS / 1000, outcomes
