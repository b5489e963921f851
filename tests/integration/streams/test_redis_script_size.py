"""RedisStream keeps each write script's arguments bounded, and a write Redis refuses as too large says so.

Before: the events of one update run were joined into one argument whatever their size (256 increments of a
2.2 MB item: 563 MB, over Redis's 512 MB proto-max-bulk-len, every one failed "unreachable", applied=None), and a
write over proto-max-bulk-len said applied=None ("may have been applied") and left a closed connection in the pool.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from iii.stream import StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream
from iii_streams.errors import StreamBackendError
from iii_streams.redis import _MAX_SCRIPT_BYTES, KeyLayout
from tests.integration.streams.conftest import delete_redis_keys
from tests.integration.streams.private_redis import PrivateRedis
from tests.services import require_redis

pytestmark = pytest.mark.redis


def _size(arg: Any) -> int:
    return len(arg) if isinstance(arg, (str, bytes)) else 8


async def test_an_update_run_over_the_bound_goes_in_several_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    tag = f"scriptsize-{uuid.uuid4().hex[:8]}"
    async with RedisStream.from_url(require_redis(), layout=KeyLayout(prefix=f"{tag}:stream"),
                                    channel=f"{tag}::events") as store:
        try:
            item = {"stream_name": "s", "group_id": "g", "item_id": "x"}
            await store.set(StreamSetInput(**item, data={"n": 0, "pad": "p" * 2_000_000}))
            sizes: list[int] = []
            real = store._run_once

            async def recorded(key: str, pick: Callable[[], Any], progress: Any = None,
                               scripts: Sequence[Any] = ()) -> Any:
                def measured() -> Any:
                    picked = pick()
                    if picked is not None:
                        sizes.append(sum(_size(arg) for arg in picked[1]))
                    return picked

                return await real(key, measured, progress, scripts)

            monkeypatch.setattr(store, "_run_once", recorded)
            ops = [UpdateIncrement(path="n", by=1)]
            results = await asyncio.gather(*(store.update(StreamUpdateInput(**item, ops=ops)) for _ in range(12)))
            assert sorted(r.new_value["n"] for r in results) == list(range(1, 13))
            assert [r.new_value["n"] for r in results] == list(range(1, 13))  # in the order made
            assert (await store.get(StreamGetInput(**item)))["n"] == 12
            assert len(sizes) >= 3, sizes
            assert max(sizes) <= _MAX_SCRIPT_BYTES + 4_100_000, sizes  # the bound plus at most one text and event
        finally:
            await delete_redis_keys(f"{tag}:*")


async def test_a_write_over_proto_max_bulk_len_is_refused_unapplied(tmp_path: Path) -> None:
    with PrivateRedis(tmp_path) as server:
        server._cmd += ["--proto-max-bulk-len", "1mb"]
        await server.start()
        async with RedisStream.from_url(server.url, timeout=10) as store:
            item = {"stream_name": "s", "group_id": "g", "item_id": "x"}
            with pytest.raises(StreamBackendError) as refused:
                await store.set(StreamSetInput(**item, data="x" * 1_100_000))
            assert refused.value.applied is False and "too large" in str(refused.value)
            done = await store.update(StreamUpdateInput(**item, ops=[UpdateIncrement(path="n", by=1)]))
            assert done.new_value == {"n": 1}  # the next write goes out on a good connection
