"""The remembered texts the SQL and Redis stores share (iii_streams.known_texts): bounded in items and characters,
an item another process wrote distrusted for a while."""

from __future__ import annotations

import asyncio

from iii_streams.known_texts import KnownTexts


async def test_the_least_recently_written_go_past_max_items_and_long_texts_are_not_kept() -> None:
    known = KnownTexts[int](max_items=3, max_chars=4)
    for key in range(4):
        known.wrote(key, f"t{key}")
    assert len(known) == 3 and known.get(0) is None and known.get(3) == "t3"
    known.wrote(1, "12345")  # over max_chars: forgotten, not kept stale
    assert known.get(1) is None
    known.wrote(2, None)  # deleted
    assert known.get(2) is None


async def test_a_distrusted_item_is_not_remembered_until_the_time_is_up() -> None:
    known = KnownTexts[str](distrust_s=0.05)
    known.wrote("a", "x")
    known.distrust("a")
    known.wrote("a", "y")
    assert known.get("a") is None
    await asyncio.sleep(0.06)  # the distrust period itself is what is under test
    known.wrote("a", "z")
    assert known.get("a") == "z"
    known.distrust("a")
    known.forget("a")  # forgetting drops the distrust too
    known.wrote("a", "w")
    assert known.get("a") == "w"
