"""A dead letter's error is cut to a byte budget, and the in-memory store's dead letters pass its bound by a few
hundred bytes each at most (attack F5: 3,216 jobs failing with a 1,000-emoji error left a 2 MiB store holding 15 MB).
"""

from __future__ import annotations

import pytest

from iii_engine.modules.queue.consumer import DLQ_ERROR_BYTES, dlq_error
from iii_engine.modules.queue.store import (
    PAST_BOUND_ERROR_BYTES,
    DeadLetter,
    Job,
    MemoryQueueStore,
    StoreFull,
    clip_utf8,
)

EMOJI = "\U0001F600"
#: what a dead letter may pass the bound by (the README's figure): its error's str, 76 + 4 bytes a character
OVERSHOOT = 76 + 4 * PAST_BOUND_ERROR_BYTES


@pytest.mark.parametrize("text", [EMOJI * 1000, "é" * 999, "a" + EMOJI * 600, "x" * 5000, "\ud800" * 700,
                                  "ab" + "\u0301" * 800])
def test_the_error_is_cut_to_its_bytes_whole_characters_and_says_so(text: str) -> None:
    error = dlq_error(RuntimeError(text))
    kept = error.encode("utf-8", "surrogatepass")
    assert len(kept) <= DLQ_ERROR_BYTES, len(kept)
    size = len(text.encode("utf-8", "surrogatepass"))
    head, marker = error.rsplit("…", 1)
    assert marker == f"({size} bytes)" and text.startswith(head) and len(head) > 0


def test_a_short_error_is_kept_whole() -> None:
    assert dlq_error(RuntimeError(EMOJI * 250)) == EMOJI * 250  # 1,000 bytes exactly
    assert clip_utf8("a" * 10, 10) == "a" * 10


async def test_dead_letters_with_long_errors_pass_the_bound_by_the_documented_few_bytes() -> None:
    bound = 2 * 1024 * 1024
    store = MemoryQueueStore(max_bytes=bound)
    jobs = 0
    while True:
        try:
            await store.push("q", Job.new("q", "f::x", {}))
        except StoreFull:
            break
        jobs += 1
    assert jobs > 2000
    error = dlq_error(RuntimeError(EMOJI * 1000))
    letters = 0
    while (job := await store.claim("q", now_ms=0, lease_ms=60_000)) is not None:
        await store.dead("q", DeadLetter(job, error, 1))
        letters += 1
    assert letters == jobs
    # before: 4,076 bytes more per letter (the error counted, never cut past the bound): 15 MB of a 2 MiB bound
    assert store.used_bytes <= bound + letters * OVERSHOOT, (store.used_bytes, bound)
    kept = [letter.error for letter in (await store.dlq_page("q", 0, letters)) if letter.error != error]
    assert kept and all(len(e.encode()) <= PAST_BOUND_ERROR_BYTES and e.endswith("bytes)") for e in kept)


async def test_dead_letters_within_the_bound_keep_their_whole_error() -> None:
    store = MemoryQueueStore(max_bytes=1024 * 1024)
    error = dlq_error(RuntimeError("x" * 900))
    await store.push("q", Job.new("q", "f::x", {}))
    job = await store.claim("q", now_ms=0, lease_ms=60_000)
    assert job is not None
    await store.dead("q", DeadLetter(job, error, 1))
    assert [letter.error for letter in await store.dlq_page("q", 0, 10)] == [error]


@pytest.mark.parametrize("limit", [0, 1, 2, 3, 5, 13, 14, 15, 20])
@pytest.mark.parametrize("text", ["x" * 100, EMOJI * 100, "é" * 100], ids=["ascii", "emoji", "latin"])
def test_a_budget_smaller_than_the_marker_is_never_passed(text: str, limit: int) -> None:
    # before: 0, 1 and 5 bytes gave the whole 14-byte marker '…(100 bytes)'
    clipped = clip_utf8(text, limit)
    assert len(clipped.encode()) <= limit, (limit, clipped)
    assert clipped == ("" if limit < 3 else "…") or (clipped.endswith("…(" + str(len(text.encode())) + " bytes)")
                                                    and text.startswith(clipped.rsplit("…", 1)[0]))


def test_a_long_text_is_not_encoded_whole_to_be_cut() -> None:
    import tracemalloc

    text = "é" * 5_000_000  # 5 MB held (one byte a character), 10 MB in UTF-8
    tracemalloc.start()
    try:
        clipped = clip_utf8(text, DLQ_ERROR_BYTES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert clipped.endswith("…(10000000 bytes)") and len(clipped.encode()) <= DLQ_ERROR_BYTES
    # before: the whole text encoded, 10 MB
    assert peak < 1_000_000, peak
