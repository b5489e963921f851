"""A telemetry frame over 256 KiB is parsed off the engine's loop.

Before: every frame was parsed on the loop; A-O measured 1.37 s for a 7.7 MB frame of 10,000 records, during which
no call of any worker was answered.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from module_worker import ModuleWorker

from iii.wire import loads
from iii_engine.modules.observability import module as observability_module
from tests.integration.modules.test_ao_observability_attack import log_frame, send, telemetry
from tests.integration.modules.test_observability import engine_with, eventually

pytestmark = pytest.mark.our_engine("configures the observability module")


async def test_a_big_frame_is_parsed_off_the_loop_and_a_small_one_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed_on: dict[int, bool] = {}
    loop_thread = threading.get_ident()

    def recording_loads(body: Any) -> Any:
        parsed_on[len(body)] = threading.get_ident() == loop_thread
        return loads(body)

    monkeypatch.setattr(observability_module, "loads", recording_loads)
    async with engine_with({}) as engine, ModuleWorker(engine.url) as worker:
        assert engine
        small, big = log_frame("small"), log_frame("big " + "b" * 300_000)
        await send(worker, small)
        await send(worker, big)

        async def both_stored() -> bool:
            return bool((await telemetry(worker))["ingested_frames"] == 2)

        assert await eventually(both_stored, within=10)
    assert parsed_on == {len(small) - 4: True, len(big) - 4: False}
