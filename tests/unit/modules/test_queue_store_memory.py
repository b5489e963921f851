"""The in-memory queue store's ``max_bytes`` (``max_memory_bytes``) bounds the memory its jobs take, not their JSON.

Before: the store counted each job's JSON but kept its decoded data, and decoded JSON of many small containers takes
about 20 times its text ("[]," is 3 bytes and a 56-byte list): an engine bounded at 32 MiB grew by 790 MiB. Now a job's
data is kept as JSON text (decoded when read) and the store counts that text plus a measured overhead per job, so what
it holds, measured with tracemalloc, stays under the bound; what comes back is what went in, value for value.
"""

from __future__ import annotations

import gc
import math
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest

from iii.wire import dumps, loads
from iii_engine.modules.queue import store as store_module
from iii_engine.modules.queue.store import DeadLetter, Job, MemoryQueueStore, StoreFull

LIMIT = 4 << 20
FN = "orders::pay"


@contextmanager
def traced() -> Iterator[list[int]]:
    """Bytes allocated in the block and still held at its end (garbage collected first)."""
    held: list[int] = []
    gc.collect()
    tracemalloc.start()
    try:
        yield held
        gc.collect()
        held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("item", ["[]", "{}"])
async def test_jobs_of_small_containers_fill_the_bound_not_20_times_it(item: str) -> None:
    text = "[" + ",".join([item] * 30_000) + "]"  # 90 KB of JSON, about 1.7 MB once decoded
    with traced() as held:
        store = MemoryQueueStore(max_bytes=LIMIT)
        accepted, refused = 0, ""
        while not refused:
            try:
                # decoded anew for each job, as the engine decodes each enqueue's frame
                await store.push("q", Job.new("q", loads(f'"{FN}"'), loads(text)))
                accepted += 1
            except StoreFull as full:  # (its traceback, holding the refused job, goes with the block)
                refused = str(full)
    assert accepted >= 40  # the bound is mostly data: about 90 KB a job
    assert store.used_bytes <= LIMIT
    assert held[0] <= LIMIT  # before: 85 MB
    assert refused.startswith("a job of ")
    assert refused.endswith(f"does not fit: the store holds {store.used_bytes} of its {LIMIT} bytes")


async def fill(store: MemoryQueueStore, kind: str, n: int) -> None:
    """``n`` small jobs (their overhead is most of what they take) in the state ``kind``."""
    group = (lambda i: f"g{i // 2}") if kind == "pairs" else (lambda i: None)
    for i in range(n):
        await store.push("q", Job.new("q", loads(f'"{FN}"'), 1, group(i)))
    if kind in ("pairs", "waiting"):
        return
    for i in range(n):
        job = await store.claim("q", now_ms=0, lease_ms=10)
        assert job is not None
        tried = replace(job, attempts=1)
        if kind == "delayed":
            await store.retry("q", tried, due_ms=10**12 + i)
        else:
            await store.dead("q", DeadLetter(tried, "function call failed", 1_700_000_000_000 + i))
    if kind == "redriven":
        assert await store.redrive("q", None) == n


# 1366 and 2731 jobs: each store dict just grew (its memory per entry is at its highest)
@pytest.mark.parametrize("n", [1366, 2731])
@pytest.mark.parametrize("kind", ["waiting", "delayed", "dead", "redriven", "pairs"])
async def test_the_count_covers_what_small_jobs_take_in_every_state(kind: str, n: int) -> None:
    with traced() as held:
        store = MemoryQueueStore()
        await fill(store, kind, n)
    assert store.used_bytes > 0
    assert held[0] <= store.used_bytes, f"{(held[0] - store.used_bytes) / n:.0f} bytes a job not counted"


def same(a: Any, b: Any) -> bool:
    """Equal in value and in type all the way down (-0.0 is not 0.0, 1 is not 1.0 nor True), keys in order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


PAYLOADS: list[Any] = [
    {"big": 2**70, "neg": -(2**64) - 1, "zero": -0.0, "tiny": 5e-324, "huge": 1.7976931348623157e308, "tenth": 0.1,
     "one": 1, "onef": 1.0, "t": True, "n": None, "e": [], "o": {}},
    ["é", "日本", "🙂", "\u2028", "\"\\\n\t\u0000", "\U0001f600", ""],
    {"z": 1, "a": {"y": [1, [2, [3, {"k": "v"}]]], "b": 12345678901234567890},
     "order": {str(i): i for i in range(20)}},
    "plain text",
    -0.0,
    None,
]


@pytest.mark.parametrize("payload", PAYLOADS)
async def test_data_comes_back_as_it_went_in_on_delivery_retry_dead_letter_and_redrive(payload: Any) -> None:
    data = loads(dumps(payload))  # as decoded from an enqueue's frame
    assert same(data, payload)
    store = MemoryQueueStore()
    job = Job.new("q", FN, data, group="g")
    await store.push("q", job)
    claimed = await store.claim("q", now_ms=0, lease_ms=1000)
    assert claimed is not None and claimed == job and same(claimed.data, payload)
    await store.retry("q", replace(claimed, attempts=1), due_ms=0)
    again = await store.claim("q", now_ms=0, lease_ms=1000)
    assert again is not None and again.attempts == 1 and same(again.data, payload)
    await store.dead("q", DeadLetter(replace(again, attempts=2), "boom", 7))
    [letter] = await store.dlq_page("q", 0, 10)
    assert same(letter.job.data, payload) and (letter.error, letter.failed_at, letter.job.attempts) == ("boom", 7, 2)
    assert same(loads(dumps(letter.as_dict()))["job"]["data"], payload)  # as the dead-letter listing sends it
    assert await store.redrive("q", job.id) == 1
    back = await store.claim("q", now_ms=0, lease_ms=1000)
    assert back is not None and back.attempts == 0 and same(back.data, payload)
    assert back == job
    await store.ack("q", back)
    assert store.used_bytes == 0


async def test_a_job_put_off_unread_is_not_decoded_or_encoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # A job whose function is missing is claimed and put off every few seconds for its grace, its data never read:
    # decoding it each time (300,000 empty lists: 60-90 ms) kept a core busy per 100 MiB of such jobs.
    store = MemoryQueueStore()
    await store.push("q", Job.new("q", FN, [[] for _ in range(1000)]))
    calls: list[str] = []
    monkeypatch.setattr(store_module, "loads", lambda raw: calls.append("loads") or loads(raw))
    monkeypatch.setattr(store_module, "dumps", lambda value: calls.append("dumps") or dumps(value))
    for look in range(5):
        job = await store.claim("q", now_ms=look, lease_ms=1000)
        assert job is not None and job.function_id == FN
        await store.retry("q", job, due_ms=look + 1)
    assert calls == []
    job = await store.claim("q", now_ms=10, lease_ms=1000)
    assert job is not None and job.data == [[]] * 1000 and calls == ["loads"]  # read once delivered
