"""A set or delete already running when a composed update of its item starts is not overwritten by it (R2).

Before, only a write that began while the update was in flight waited for it: one that began just before (its
backend call still running) landed between the update's get and set, was acknowledged, and was then overwritten by
the update's result computed from the older value. Now the update reads only once such writes are done.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii.stream import StreamDeleteInput, StreamDeleteResult, StreamSetInput, StreamSetResult
from iii.stream_glue import StreamFunctions
from tests.polling import until
from tests.unit.sdk.test_ass_stream_glue_ops import GatedGet
from tests.unit.sdk.test_stream_glue import KEY

pytestmark = pytest.mark.timeout(20)

INCREMENT = {"type": "increment", "path": "n", "by": 1}


class SlowWrites(GatedGet):
    """``get`` as :class:`GatedGet`; the first set or delete waits at ``write_gate`` before it writes."""

    def __init__(self) -> None:
        super().__init__()
        self.write_gate = asyncio.Event()
        self.writing = asyncio.Event()
        self.gated = False

    async def _hold_first(self) -> None:
        if not self.gated:
            self.gated = True
            self.writing.set()
            await self.write_gate.wait()

    async def set(self, input: StreamSetInput) -> StreamSetResult[Any] | None:
        await self._hold_first()
        return await super().set(input)

    async def delete(self, input: StreamDeleteInput) -> StreamDeleteResult:
        await self._hold_first()
        return await super().delete(input)


@pytest.mark.parametrize("write", ["set", "delete"])
async def test_a_write_begun_before_a_composed_update_is_not_overwritten_by_it(write: str) -> None:
    stream = SlowWrites()
    stream.items["1"] = {"n": 1}
    handlers = StreamFunctions(stream)
    other = asyncio.ensure_future(handlers.set({**KEY, "data": {"n": 100}}) if write == "set"
                                  else handlers.delete(KEY))
    await stream.writing.wait()  # the write is in its backend call, not written yet
    update = asyncio.ensure_future(handlers.update({**KEY, "ops": [INCREMENT]}))
    # the update either read the old item already (before) or waits for the write (now)
    await until(lambda: stream.read.is_set() or ("g", "1") in handlers._locks)
    stream.write_gate.set()
    await other  # acknowledged
    stream.gate.set()
    result = await update
    expected_old = {"n": 100} if write == "set" else None
    assert result == {"old_value": expected_old, "new_value": {"n": 101} if write == "set" else {"n": 1}}
    assert stream.items["1"] == result["new_value"]  # the update applied on top of the write: nothing lost
    assert handlers._locks == {}

