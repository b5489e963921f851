"""What the docs say of ``state`` triggers with two engines sharing one Redis state store
(docs/reference/payloads.md#state-state): a trigger fires for writes made through its own engine, never for a
write made through the other one (the store's change feed carries no ``old_value`` to build the payload from).

The attack this pins: 8 workers split across engines A and B, 200 ``state::update`` increments each; a trigger on A
saw 801 of 1,601 changes, and nothing said so.
"""

from __future__ import annotations

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from tests.services import require_redis

from .helpers import Recorder, Worker, trigger_active

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("starts two of our engines on one Redis")]


def _config(prefix: str) -> EngineConfig:
    url = f"{require_redis()}?key_prefix={prefix}"
    return EngineConfig(host="127.0.0.1", port=0,
                        modules=[ModuleSpec("modules::state::StateModule", {"store_url": url})])


async def test_state_trigger_fires_for_its_own_engines_writes_only(redis_key_prefix: str) -> None:
    async with Engine(config=_config(redis_key_prefix)) as a, Engine(config=_config(redis_key_prefix)) as b:
        on_a, via_a, via_b = await Worker.connect(a.url), await Worker.connect(a.url), await Worker.connect(b.url)
        try:
            seen = Recorder()
            await on_a.register("seen", seen)
            await trigger_active(a, await on_a.trigger("state", "seen", {"scope": "s"}))
            await via_b.result("state::set", {"scope": "s", "key": "through-b", "value": 1})
            assert await via_a.result("state::get", {"scope": "s", "key": "through-b"}) == 1  # one shared store
            await via_a.result("state::set", {"scope": "s", "key": "through-a", "value": 2})
            await via_a.result("state::set", {"scope": "s", "key": "marker", "value": 3})
            keys = sorted(p["key"] for p in await seen.wait_for(2))
            assert keys == ["marker", "through-a"], keys  # B's write, made first, never reached A's trigger
        finally:
            for w in (on_a, via_a, via_b):
                await w.close()
