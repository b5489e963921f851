"""An update whose ops set the root to an object and then change it leaves the op's value as the caller gave it.
Before, the ops after the root set changed the op's own dict: a constant op list drifted call after call, and a
store that ran the ops again (a retried compare-and-set, a batch run again one write at a time) applied them twice
and stored and answered ``{"n": 2}`` for ``[set "" {"n": 0}, increment n 1]``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from iii.stream import StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement, UpdateSet
from iii.stream_ops import apply_ops, parse_ops
from iii_streams import MemoryStream, SQLStream

RESET = [{"type": "set", "path": "", "value": {"n": 0}}, {"type": "increment", "path": "n", "by": 1}]


def test_ops_applied_twice_give_the_same_answer_and_keep_their_value() -> None:
    parsed = parse_ops(RESET)
    assert apply_ops({"n": 7}, parsed) == {"n": 1}
    assert apply_ops({"n": 7}, parsed) == {"n": 1}  # (was {"n": 2}: the first run changed the op's value)
    assert parsed[0].value == {"n": 0}
    assert RESET[0]["value"] == {"n": 0}


def test_a_root_set_result_is_not_the_callers_object() -> None:
    value = {"a": {"b": 1}}
    result = apply_ops(None, [{"type": "set", "path": "", "value": value}, {"type": "set", "path": "c", "value": 2}])
    assert result == {"a": {"b": 1}, "c": 2} and value == {"a": {"b": 1}}


async def test_a_memory_store_update_leaves_the_callers_ops_alone() -> None:
    store = MemoryStream()
    ops = [UpdateSet(path="", value={"n": 0}), UpdateIncrement(path="n", by=1)]
    for _ in range(3):
        result = await store.update(StreamUpdateInput(stream_name="s", group_id="g", item_id="x", ops=ops))
        assert result.new_value == {"n": 1}
    assert ops[0].value == {"n": 0}


_REFUSE = ("CREATE TRIGGER refuse_{kind} BEFORE {kind} ON iii_stream_items WHEN NEW.value LIKE '%refuse-me%' "
           "BEGIN SELECT RAISE(ABORT, 'refused'); END")


async def test_a_sqlite_batch_run_again_applies_the_ops_once(tmp_path: Path) -> None:
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{tmp_path}/r.db", timeout=10) as store:
        await store.prepare()
        async with store.engine.begin() as conn:
            for kind in ("INSERT", "UPDATE"):
                await conn.exec_driver_sql(_REFUSE.format(kind=kind))
        item = {"stream_name": "s", "group_id": "g"}
        # The refused write makes the batch run again one write at a time: the update's ops run a second time.
        update, refused = await asyncio.gather(
            store.update(StreamUpdateInput(**item, item_id="x",
                                           ops=[UpdateSet(path="", value={"n": 0}), UpdateIncrement(path="n", by=1)])),
            store.set(StreamSetInput(**item, item_id="y", data={"tag": "refuse-me"})), return_exceptions=True)
        assert isinstance(refused, Exception)
        assert not isinstance(update, BaseException) and update.new_value == {"n": 1}
        assert await store.get(StreamGetInput(**item, item_id="x")) == {"n": 1}
