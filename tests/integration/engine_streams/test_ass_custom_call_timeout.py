"""A custom stream's functions that never answer: the engine's calls to them are bounded
(``custom_call_timeout_ms``), so a composed update (custom get → ops → custom set, under the item's lock) cannot
hold that item's lock, and with it every later update of the item, for as long as the serving worker lives."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from iii_engine import Engine
from tests.polling import until

from .helpers import Recorder, Worker, engine_config, registered

pytestmark = pytest.mark.our_engine("bounds the stream module's calls to custom streams with its own setting")

KEY = {"stream_name": "stuck", "group_id": "g", "item_id": "i"}
INC = [{"type": "increment", "path": "n", "by": 1}]


async def test_a_hanging_custom_get_does_not_hold_the_item_s_update_lock() -> None:
    """Before, the first update waited on the custom get forever while holding the item's lock: its caller gave up,
    and every later update of the item queued behind it (the reference SDK's create_stream registers no
    update(NAME), so its streams always take this path)."""
    async with Engine(config=engine_config(custom_call_timeout_ms=300)) as engine:
        worker = await Worker.connect(engine.url)
        gets: list[Any] = []
        first = asyncio.Event()

        async def get(data: Any) -> Any:
            gets.append(data)
            if len(gets) == 1:
                first.set()
                await asyncio.Event().wait()  # the first get never answers
            return {"n": 41}

        sets = Recorder({"new_value": None})
        await worker.register("stream::get(stuck)", get)
        await worker.register("stream::set(stuck)", sets)
        await registered(engine, "stream::set(stuck)")
        started = time.monotonic()
        hung = asyncio.ensure_future(worker.error("stream::update", {**KEY, "ops": INC}))
        await first.wait()
        assert await worker.result("stream::update", {**KEY, "ops": INC}) == {"old_value": {"n": 41},
                                                                            "new_value": {"n": 42}}
        error = await hung
        assert error["code"] == "STREAM_UPDATE_ERROR"
        assert "stream::get(stuck)" in error["message"] and "timed out after 0.3 s" in error["message"]
        assert time.monotonic() - started < 4  # the second waited for the first's deadline, no longer
        assert [p["data"] for p in sets.payloads] == [{"n": 42}]  # the timed-out update wrote nothing
        await worker.close()


async def test_a_hanging_custom_read_answers_its_caller_with_a_timeout() -> None:
    async with Engine(config=engine_config(custom_call_timeout_ms=300)) as engine:
        worker = await Worker.connect(engine.url)

        async def forever(_: Any) -> Any:
            await asyncio.Event().wait()

        for op in ("get", "list", "list_groups", "delete"):
            await worker.register(f"stream::{op}(stuck)", forever)
        await registered(engine, "stream::delete(stuck)")
        for function_id, payload in (("stream::get", KEY), ("stream::list", {"stream_name": "stuck", "group_id": "g"}),
                                     ("stream::list_groups", {"stream_name": "stuck"}), ("stream::delete", KEY)):
            error = await worker.error(function_id, payload)
            assert "timed out after 0.3 s" in error["message"], (function_id, error)
            assert f"{function_id}(stuck)" in error["message"], (function_id, error)
        await worker.close()


async def test_a_custom_write_that_times_out_is_said_maybe_applied() -> None:
    """Attack on custom streams: a slow worker applied 241 of 300 sets its callers were told had failed (timed out),
    and no change event went out for them; the error now says the outcome is not known."""
    async with Engine(config=engine_config(custom_call_timeout_ms=300)) as engine:
        worker = await Worker.connect(engine.url)
        release = asyncio.Event()
        applied: list[Any] = []

        async def slow_set(data: Any) -> Any:
            await release.wait()
            applied.append(data["data"])
            return {"old_value": None, "new_value": data["data"]}

        await worker.register("stream::set(stuck)", slow_set)
        await registered(engine, "stream::set(stuck)")
        error = await worker.error("stream::set", {**KEY, "data": 1})
        release.set()
        assert error["code"] == "STREAM_SET_ERROR" and "timed out after 0.3 s" in error["message"]
        assert "the worker may have applied it, or may still: no change event goes out for it" in error["message"]
        await until(lambda: applied == [1])  # (it was: the error read as "not done")
        await worker.close()
