"""Attack A-S on withdrawn writes (a caller that gives up before its commit was sent withdraws its write): callers
giving up while their batch runs cannot make it re-run without end, and every caller's view (result, applied
flag, exception) agrees with the stored value. Real SQLite files, real PostgreSQL, real Redis."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text

from iii.stream import StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream, SQLStream, StreamBackendError, StreamError, StreamTimeoutError
from iii_streams.redis import KeyLayout
from iii_streams.schema import TABLE_NAME, item_key
from tests.services import require_redis

Store = SQLStream | RedisStream


def _inc(stream: str, item: str) -> StreamUpdateInput:
    return StreamUpdateInput(stream_name=stream, group_id="g", item_id=item, ops=[UpdateIncrement(path="n", by=1)])


async def _value(store: Store, stream: str, item: str) -> int:
    value = await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id=item), timeout=30)
    return 0 if value is None else int(value["n"])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_kind(request: pytest.FixtureRequest) -> str:
    """SQLite and PostgreSQL (the conftest's ``store_url`` of each)."""
    return str(request.param)


@pytest.fixture
async def sql_store(store_url: str) -> AsyncIterator[SQLStream]:
    async with SQLStream.from_url(store_url, create=True) as store:
        yield store


async def test_callers_giving_up_one_per_run_do_not_rerun_the_batch_without_end(sql_store: SQLStream) -> None:
    """Each time the batch's statements run, one more caller gives up. Before, every give-up rolled the batch back
    and ran it again without that write: six callers took six transactions and none was served (the same at 256:
    up to one transaction per caller, callers that would have waited starved behind the re-runs). Now the batch
    re-runs at most twice for withdrawals; a caller giving up after that gets an unknown outcome, and the rest
    are served."""
    store = sql_store
    stream = f"rerun-{uuid.uuid4().hex[:8]}"
    await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="x"))  # schema ready
    callers: list[asyncio.Task[Any]] = []
    runs = 0
    original = store._apply_writes

    async def apply_then_one_gives_up(conn: Any, writes: Any) -> Any:
        nonlocal runs
        runs += 1
        step = await original(conn, writes)
        live = [task for task in callers if not task.done() and not task.cancelling()]
        if live:
            live[0].cancel()  # a caller gives up while its batch's statements ran
        await asyncio.sleep(0)  # the caller sees its cancel before the batch goes on
        return step

    store._apply_writes = apply_then_one_gives_up  # type: ignore[method-assign]
    callers.extend(asyncio.create_task(store.update(_inc(stream, "i"))) for i in range(6))
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    cancelled = [o for o in outcomes if isinstance(o, asyncio.CancelledError)]
    assert len(served) + len(cancelled) == 6, outcomes
    assert runs <= 3, f"the batch ran its statements {runs} times for 6 callers"
    assert len(served) == 3
    # the three served, plus the one that gave up after its write was committed to (outcome unknown to it)
    assert await _value(store, stream, "i") == 4


@pytest.fixture
async def redis_store() -> AsyncIterator[RedisStream]:
    client = aioredis.Redis.from_url(require_redis())
    layout = KeyLayout(f"as{uuid.uuid4().hex[:10]}")  # a private namespace on the shared Redis
    try:
        async with RedisStream(client, layout=layout, channel=layout.prefix) as store:
            yield store
    finally:
        keys = [key async for key in client.scan_iter(match=f"{layout.prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _race(stores: Sequence[Store], seed: int, *, items: int, callers: int, known: bool,
                events_seen: bool = True) -> collections.Counter[str]:
    """``callers`` increments over ``items`` items with tiny timeouts and random cancels; checks every caller's
    view against the stored values and the change events, and returns how the callers ended."""
    stream = f"race-{uuid.uuid4().hex[:8]}"
    async with stores[0].watch(stream_name=stream) as events:
        return await _race_watched(stores, stream, events if events_seen else None, seed, items=items,
                                   callers=callers, known=known)


async def _race_watched(stores: Sequence[Store], stream: str, events: Any, seed: int, *, items: int, callers: int,
                        known: bool) -> collections.Counter[str]:
    rnd = random.Random(seed)
    names = [f"i{i}" for i in range(items)]
    store = stores[0]
    for name in names:
        for each in stores:
            await _value(each, stream, name)  # connected and migrated before the race
            if known:  # the single-statement path (SQL) and the no-read path (Redis)
                await each.set(StreamSetInput(stream_name=stream, group_id="g", item_id=name, data={"n": 0}))
    views: dict[str, list[tuple[Any, ...]]] = collections.defaultdict(list)
    order: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)  # (submitted as, new value)

    async def one(index: int, name: str, limit: float | None) -> None:
        try:
            # two stores (two processes) make each other's known values stale: single statements and
            # compare-and-set scripts miss, and their writes are run again (or withdrawn) after that
            result = await stores[index % len(stores)].update(_inc(stream, name), timeout=limit)
        except StreamTimeoutError as exc:
            views[name].append(("withdrawn" if exc.applied is False else "unknown", None))
            assert exc.applied in (False, None)
        except asyncio.CancelledError:
            views[name].append(("unknown", None))  # a cancelled caller learns nothing
            raise
        else:
            views[name].append(("applied", (result.old_value or {}).get("n", 0), result.new_value["n"]))
            order[name].append((index, result.new_value["n"]))

    loop = asyncio.get_running_loop()
    tasks = []
    for i in range(callers):
        task = asyncio.ensure_future(one(i, names[i % items], rnd.choice([None, 0.001, 0.003, 0.01, 0.03, 0.1])))
        tasks.append(task)
        if rnd.random() < 0.2:
            loop.call_later(rnd.choice([0, 0.0005, 0.002, 0.01]), task.cancel)
        if rnd.random() < 0.1:
            await asyncio.sleep(0)  # callers arrive while batches run
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(o is None or isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
    ends: collections.Counter[str] = collections.Counter()
    for name in names:
        final = await _value(store, stream, name)
        view = views[name]
        ends.update(kind for kind, *_ in view)
        applied = [v for v in view if v[0] == "applied"]
        unknown = sum(1 for v in view if v[0] == "unknown")
        news = [new for _, old, new in applied]
        assert all(new == old + 1 for _, old, new in applied), applied
        assert len(set(news)) == len(news), f"{name}: two callers saw the same new value: {sorted(news)}"
        assert max(news, default=0) <= final
        # one process's writes of an item apply in the order they were submitted, whoever gave up among them
        for first in range(len(stores)):
            by_submission = [new for index, new in sorted(order[name]) if index % len(stores) == first]
            assert by_submission == sorted(by_submission), f"{name}: applied out of order: {by_submission}"
        # every write reported applied is there; a withdrawn one never is; an unknown one may be
        assert len(applied) <= final <= len(applied) + unknown, (name, final, len(applied), unknown, len(view))
    if events is None:
        return ends
    # events: each applied increment published once, in order; none for a withdrawn one. A sentinel write ends them.
    await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id="sentinel", data={"n": -1}))
    published: dict[str, list[int]] = collections.defaultdict(list)
    while True:
        event = await asyncio.wait_for(anext(events), 20)
        if event["id"] == "sentinel":
            break
        published[event["id"]].append(event["event"]["data"]["n"])
    for name in names:
        final = await _value(store, stream, name)
        increments = [n for n in published[name] if not (known and n == 0)]  # the set before the race
        assert increments == list(range(1, final + 1)), f"{name}: events {increments} for final value {final}"
    return ends


@pytest.mark.parametrize("known", [False, True], ids=["read", "known"])
async def test_racing_callers_with_tiny_timeouts_and_cancels_sql(sql_store: SQLStream, known: bool) -> None:
    """Many callers over few items (SQLite: one queue for all; PostgreSQL: one per item), tiny timeouts and
    random cancels: no write reported applied is missing, none reported withdrawn is there, none applied twice."""
    ends: collections.Counter[str] = collections.Counter()
    for seed in range(3):
        ends += await _race([sql_store], seed, items=3, callers=200, known=known)
    assert ends["applied"] and ends["withdrawn"], ends  # the race reached both outcomes


@pytest.mark.redis
@pytest.mark.parametrize("known", [False, True], ids=["read", "known"])
async def test_racing_callers_with_tiny_timeouts_and_cancels_redis(redis_store: RedisStream, known: bool) -> None:
    """The same race on one Redis hash (one batch queue for its items)."""
    ends: collections.Counter[str] = collections.Counter()
    for seed in range(3):
        ends += await _race([redis_store], seed, items=3, callers=200, known=known)
    assert ends["applied"] and ends["withdrawn"], ends


@pytest.mark.postgres
async def test_a_later_transaction_failing_leaves_the_results_an_earlier_one_committed(pg_url: str) -> None:
    """PostgreSQL delivers one NOTIFY per distinct payload and transaction, so two identical sets of one item in a
    batch commit in two steps. Before, when the second failed, the first caller got the second's error
    too, though its write had committed (StreamBackendError: "the database refused the statement"); now it gets
    its result, and only the write that failed gets the error."""
    name = f"split-{uuid.uuid4().hex[:8]}"
    item = {"stream_name": name, "group_id": "g", "item_id": "i"}
    async with SQLStream.from_url(pg_url) as other:  # the item exists: both sets are updates, same event
        await other.set(StreamSetInput(**item, data={"n": 0}))
    async with SQLStream.from_url(pg_url) as store:
        original = store._swap
        steps = 0

        async def second_step_fails(writes: Any, results: Any) -> Any:
            nonlocal steps
            steps += 1
            if steps == 2:  # the second write's step (a single statement: the first step taught the value)
                async with store._read() as conn:
                    await conn.execute(text("SELECT 1 / 0"))  # a server error
            return await original(writes, results)

        store._swap = second_step_fails  # type: ignore[method-assign]
        first: Any
        second: Any
        first, second = await asyncio.gather(store.set(StreamSetInput(**item, data={"n": 1})),
                                             store.set(StreamSetInput(**item, data={"n": 1})),
                                             return_exceptions=True)
        assert steps == 2
        assert isinstance(second, StreamBackendError), second
        assert not isinstance(first, BaseException), first
        assert first.new_value == {"n": 1}
        assert await store.get(StreamGetInput(**item)) == {"n": 1}


async def _close_while_queued(store: Store, stream: str) -> int:
    """60 increments queued and a batch in flight when the store closes: every caller gets an answer, every write
    reported applied is stored, and one refused as "closed before the write ran" is not."""
    await _value(store, stream, "i")  # connected (and migrated) first
    callers = [asyncio.create_task(store.update(_inc(stream, "i"))) for _ in range(60)]
    await asyncio.sleep(0)  # queued; the first batch is taken
    await asyncio.sleep(0)
    closing = asyncio.create_task(store.aclose())
    outcomes = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 20)
    await asyncio.wait_for(closing, 20)
    applied = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert all("closed" in str(o) for o in refused), refused
    assert applied, outcomes  # the batch in flight finished
    assert sorted(o.new_value["n"] for o in applied) == list(range(1, len(applied) + 1))
    return len(applied)


async def test_sql_close_while_writes_are_queued_answers_every_caller(store_url: str) -> None:
    stream = f"close-{uuid.uuid4().hex[:8]}"
    store = SQLStream.from_url(store_url, create=True)
    applied = await _close_while_queued(store, stream)
    async with SQLStream.from_url(store_url) as reader:
        assert await _value(reader, stream, "i") == applied  # the refused ones never ran


@pytest.mark.redis
async def test_redis_close_while_updates_are_queued_answers_every_caller() -> None:
    client = aioredis.Redis.from_url(require_redis())
    layout = KeyLayout(f"as{uuid.uuid4().hex[:10]}")
    try:
        applied = await _close_while_queued(RedisStream(client, layout=layout, channel=layout.prefix), "close")
        raw = await client.hget(layout.key("close", "g"), "i")
        assert raw is not None and json.loads(raw)["n"] == applied  # the refused ones never ran
    finally:
        await client.delete(layout.key("close", "g"))
        await client.aclose()


async def test_a_server_error_in_the_rerun_after_a_withdrawal_applies_nothing(sql_store: SQLStream) -> None:
    """A caller times out while its batch's statements run (withdrawn: the batch rolls back and runs again without
    it); the re-run meets a server error. The one that timed out is told "withdrawn and not applied", the other
    caller gets the error, and the database has neither write."""
    store = sql_store
    stream = f"rerun-error-{uuid.uuid4().hex[:8]}"
    await store.get(StreamGetInput(stream_name=stream, group_id="g", item_id="x"))  # schema ready
    original = store._apply_writes
    runs = 0
    quitter: asyncio.Task[Any] | None = None

    async def quit_then_fail(conn: Any, writes: Any) -> Any:
        nonlocal runs
        runs += 1
        if runs == 2:
            await conn.execute(text("SELECT * FROM as_no_such_table"))  # a server error in the re-run
        step = await original(conn, writes)
        assert quitter is not None
        await asyncio.wait({quitter})  # its timeout passes while the statements ran
        return step

    store._apply_writes = quit_then_fail  # type: ignore[method-assign]
    quitter = asyncio.create_task(store.update(_inc(stream, "i"), timeout=0.2))
    stayer = asyncio.create_task(store.update(_inc(stream, "i")))
    quit_outcome, stay_outcome = await asyncio.gather(quitter, stayer, return_exceptions=True)
    assert runs == 2
    assert isinstance(quit_outcome, StreamTimeoutError) and quit_outcome.applied is False, quit_outcome
    assert isinstance(stay_outcome, StreamError) and "as_no_such_table" in str(stay_outcome), stay_outcome
    store._apply_writes = original  # type: ignore[method-assign]
    assert await _value(store, stream, "i") == 0


async def _cancel_the_runner(store: Store, runners: set[asyncio.Task[None]], stream: str) -> None:
    """Cancel the batch runner task itself while 40 increments wait on it: every caller gets an answer (a result
    or "closed"), none applied beyond what was reported or in flight, and the store works on afterwards."""
    await _value(store, stream, "i")  # connected (and migrated) first
    callers = [asyncio.create_task(store.update(_inc(stream, "i"))) for _ in range(40)]
    await asyncio.sleep(0)  # the callers queued their writes and started the runner
    await asyncio.sleep(0)  # the runner took its first batch and is awaiting the backend
    assert runners
    for runner in tuple(runners):
        runner.cancel()
    outcomes = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 20)
    applied = sum(1 for o in outcomes if not isinstance(o, BaseException))
    in_flight = [o for o in outcomes if isinstance(o, BaseException) and "in flight" in str(o)]
    assert all(isinstance(o, StreamError) and "closed" in str(o) for o in outcomes if isinstance(o, BaseException))
    assert applied <= await _value(store, stream, "i") <= applied + len(in_flight)
    after = await store.update(_inc(stream, "i"))  # a new runner serves the next write
    assert after.new_value["n"] == (after.old_value or {}).get("n", 0) + 1


async def test_sql_batch_runner_cancelled_answers_every_caller(sql_store: SQLStream) -> None:
    await _cancel_the_runner(sql_store, sql_store._writes._runners, f"runner-{uuid.uuid4().hex[:8]}")


@pytest.mark.redis
async def test_redis_batch_runner_cancelled_answers_every_caller(redis_store: RedisStream) -> None:
    await _cancel_the_runner(redis_store, redis_store._updates._runners, "runner")


@pytest.mark.postgres
async def test_the_store_timeout_ending_a_batch_is_named_in_the_callers_error(pg_url: str) -> None:
    """A caller whose own timeout is longer than the store's: the batch's deadline ends the batch (another session
    holds the row), and the caller's error says so. Before it read "SQLStream.set: timed out: ; the write was
    withdrawn and not applied" (the batch's TimeoutError had no text)."""
    name = f"store-limit-{uuid.uuid4().hex[:8]}"
    item = {"stream_name": name, "group_id": "g", "item_id": "i"}
    async with SQLStream.from_url(pg_url) as other:
        await other.set(StreamSetInput(**item, data={"n": 1}))
    locker = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with SQLStream.from_url(pg_url, timeout=0.3) as store:
            async with locker.transaction():
                await locker.execute(f"SELECT 1 FROM {TABLE_NAME} WHERE item_key = $1 FOR UPDATE",
                                     item_key(name, "g", "i"))
                with pytest.raises(StreamTimeoutError) as caught:
                    await store.set(StreamSetInput(**item, data={"n": 2}), timeout=30)
            assert str(caught.value) == ("SQLStream.set: timed out: a batch of writes did not finish within 0.3 s "
                                         "(the store's timeout); the write was withdrawn and not applied")
            assert caught.value.applied is False
            assert await store.get(StreamGetInput(**item)) == {"n": 1}
    finally:
        await locker.close()


@pytest.mark.parametrize("known", [False, True], ids=["read", "known"])
async def test_two_stores_racing_with_tiny_timeouts_and_cancels_sql(store_url: str, known: bool) -> None:
    """The race from two stores on one database (two processes): each one's known values go stale, its single
    statements miss and its writes go through the locking transaction, withdrawn or not as their callers go."""
    async with SQLStream.from_url(store_url, create=True) as first, SQLStream.from_url(store_url) as second:
        ends: collections.Counter[str] = collections.Counter()
        for seed in range(3):
            # SQLite stores publish events in their own process only: the watcher would see half of them
            ends += await _race([first, second], seed, items=1, callers=200, known=known,
                                events_seen=first._pg)
        assert ends["applied"] and ends["withdrawn"], ends
        if known:  # the path under attack was taken
            assert first.swap_misses + second.swap_misses


@pytest.mark.redis
@pytest.mark.parametrize("known", [False, True], ids=["read", "known"])
async def test_two_stores_racing_with_tiny_timeouts_and_cancels_redis(redis_store: RedisStream, known: bool) -> None:
    """The race from two RedisStreams on one hash: compare-and-set scripts lose to the other store's writes and
    their batches are read and run again, leaving out the updates whose callers gave up meanwhile."""
    other = RedisStream(aioredis.Redis.from_url(require_redis()), layout=redis_store.layout,
                        channel=redis_store.channel, owns_client=True)
    async with other:
        ends: collections.Counter[str] = collections.Counter()
        for seed in range(3):
            ends += await _race([redis_store, other], seed, items=1, callers=200, known=known)
        assert ends["applied"] and ends["withdrawn"], ends
        assert redis_store.update_conflicts + redis_store.known_misses + other.update_conflicts + other.known_misses
