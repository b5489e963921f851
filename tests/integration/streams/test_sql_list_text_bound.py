"""SQL stores (SQLite, PostgreSQL): ``list_text(max_bytes=...)`` refuses a group over the bound without its texts
leaving the database (the database sums their bytes in the statement that would read them), and the bound stays
exact: an answer of exactly ``max_bytes`` UTF-8 bytes (ASCII, 2-byte and 4-byte characters) comes back whole.

Before, every text was read to be counted: 8 refused ``state::list`` calls of a 40 x 1 MB scope, 3 rounds, took the
engine from 93 to 385 MB RSS on SQLite (100 to 408 MB on PostgreSQL) and another worker's ``state::get`` to 197 ms.
"""

from __future__ import annotations

import tracemalloc
import uuid

import pytest

from iii.stream import StreamListInput, StreamSetInput
from iii_streams import SQLStream
from iii_streams.errors import StreamTooLargeError

pytestmark = pytest.mark.timeout(30)

ITEMS = 20
ITEM_CHARS = 1_000_000


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_kind(request: pytest.FixtureRequest) -> str:
    """SQLite and PostgreSQL (the conftest's ``store`` of each, an ``SQLStream``)."""
    return str(request.param)


async def _fill(store: SQLStream, values: list[str]) -> StreamListInput:
    stream = f"bound-{uuid.uuid4().hex[:8]}"
    for i, value in enumerate(values):
        await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id=f"k{i}", data=value))
    return StreamListInput(stream_name=stream, group_id="g")


async def test_a_refused_list_does_not_read_the_texts(store: SQLStream) -> None:
    group = await _fill(store, ["z" * ITEM_CHARS] * ITEMS)  # 20 MB of JSON
    await store.list_text(StreamListInput(stream_name="other", group_id="g"), max_bytes=1024)  # connected
    tracemalloc.start()
    try:
        with pytest.raises(StreamTooLargeError) as refused:
            await store.list_text(group, max_bytes=4 * 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.size == ITEMS * (ITEM_CHARS + 2) + ITEMS + 1, refused.value  # the exact size, not a guess
    # before: 20,000,000+ bytes (every text, read to be counted)
    assert peak < 2_000_000, f"a refused list of a {ITEMS} MB group took {peak:,} bytes of Python memory"


@pytest.mark.parametrize("char", ["a", "é", "😀"])
async def test_an_answer_of_exactly_max_bytes_comes_back_whole(store: SQLStream, char: str) -> None:
    group = await _fill(store, [char * n for n in (1, 700, 3000)])
    whole = await store.list_text(group)
    size = len(whole.encode("utf-8"))
    assert await store.list_text(group, max_bytes=size) == whole
    with pytest.raises(StreamTooLargeError) as refused:
        await store.list_text(group, max_bytes=size - 1)
    assert (refused.value.size, refused.value.max_bytes) == (size, size - 1)
    empty = StreamListInput(stream_name=group.stream_name, group_id="nothing-here")
    assert await store.list_text(empty, max_bytes=2) == "[]"
