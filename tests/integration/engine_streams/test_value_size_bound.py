"""A value a write would leave in the store is at most half of ``max_message_size`` less the answer frame
(``value_limit``): ``state::update`` / ``stream::update`` / ``state::set`` over it fail with the module's error, and
nothing changes (no write, no trigger call). An update's bound is the store's own (``update_parsed(max_bytes=)``).
And ``state::set`` stores ``null`` as production does (it reads as a missing key).

Before: three ``state::update`` of 3 MB each (each under the 4 MiB ``max_message_size``) stored a 9 MB value, and
two concurrent ``state::get`` of it closed the reader's connection with 1008 (18,000,288 bytes queued, over
``max_outbox_bytes`` 16 MiB); a worker updating a key its own state trigger watches was closed once the value
reached ~15 MB.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.stream.api import value_limit

from .helpers import Recorder, Worker, registered

pytestmark = pytest.mark.our_engine("starts our engine with a small max_message_size")

MAX_MESSAGE_SIZE = 64 * 1024
LIMIT = value_limit(MAX_MESSAGE_SIZE)  # 30,720 bytes of JSON
PART = "x" * 12_000  # two fit under LIMIT, three do not


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Memory, SQLite and Redis (the conftest's ``store_url`` of each)."""
    return str(request.param)


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[Engine]:
    config = EngineConfig(host="127.0.0.1", port=0, max_message_size=MAX_MESSAGE_SIZE, modules=[
        ModuleSpec("modules::state::StateModule", {"store_url": store_url}),
        ModuleSpec("modules::stream::StreamModule", {"store_url": store_url, "host": "127.0.0.1", "port": 0})])
    async with Engine(config=config) as running:
        yield running


@pytest.fixture
async def worker(engine: Engine) -> AsyncIterator[Worker]:
    w = await Worker.connect(engine.url)
    yield w
    await w.close()


def _grow(i: int) -> list[dict[str, object]]:
    return [{"type": "set", "path": f"f{i}", "value": PART}]


async def test_state_update_past_the_value_limit_is_refused_and_changes_nothing(engine: Engine,
                                                                                 worker: Worker) -> None:
    scope = f"grow-{uuid.uuid4().hex}"
    recorder = Recorder()
    await worker.register("t::watch", recorder)
    await worker.trigger("state", "t::watch", {"scope": scope})
    await registered(engine, "t::watch")
    key = {"scope": scope, "key": "k"}
    for i in range(2):
        await worker.result("state::update", {**key, "ops": _grow(i)})
    error = await worker.error("state::update", {**key, "ops": _grow(2)})
    assert error["code"] == "UPDATE_ERROR", error
    message = error["message"]
    assert f"over the {LIMIT} bytes" in message and "max_message_size" in message and "nothing was changed" in message
    assert int(message.split(" is ", 1)[1].split(" ", 1)[0]) > 3 * len(PART), message
    assert await worker.result("state::get", key) == {"f0": PART, "f1": PART}
    # the two updates that were made fired; a third, refused one would be the third payload
    await worker.result("state::set", {"scope": scope, "key": "marker", "value": 1})
    payloads = await recorder.wait_for(3)
    assert [(p["key"], p["event_type"]) for p in payloads] == [
        ("k", "state:created"), ("k", "state:updated"), ("marker", "state:created")]


async def test_stream_update_past_the_value_limit_is_refused_and_changes_nothing(worker: Worker) -> None:
    item = {"stream_name": "s", "group_id": f"g-{uuid.uuid4().hex}", "item_id": "i"}
    for i in range(2):
        await worker.result("stream::update", {**item, "ops": _grow(i)})
    error = await worker.error("stream::update", {**item, "ops": _grow(2)})
    assert error["code"] == "STREAM_UPDATE_ERROR", error
    assert f"over the {LIMIT} bytes" in error["message"], error
    assert await worker.result("stream::get", item) == {"f0": PART, "f1": PART}
    # an update that shrinks a value is never refused
    await worker.result("stream::update", {**item, "ops": [{"type": "remove", "path": "f0"}]})
    assert await worker.result("stream::get", item) == {"f1": PART}


async def test_state_set_past_the_value_limit_is_refused(worker: Worker) -> None:
    key = {"scope": f"big-{uuid.uuid4().hex}", "key": "k"}
    value = "x" * (LIMIT - 1)  # its JSON, with the quotes: LIMIT + 1 bytes, within one frame
    error = await worker.error("state::set", {**key, "value": value})
    assert error["code"] == "SET_ERROR" and error["message"].startswith("value is "), error
    assert f"over the {LIMIT} bytes" in error["message"], error
    assert await worker.result("state::list", {"scope": key["scope"]}) == []
    fits = "x" * (LIMIT - 2)  # its JSON: LIMIT bytes
    assert (await worker.result("state::set", {**key, "data": fits}))["new_value"] == fits


async def test_state_set_null_is_stored_and_reads_as_missing(engine: Engine, worker: Worker) -> None:
    """As production (its input accepts any JSON value): a null is stored; docs/reference/payloads.md says how it
    then reads (as a missing key), is deleted (answer null, no ``state:deleted``) and overwritten (``created``)."""
    scope = f"null-{uuid.uuid4().hex}"
    recorder = Recorder()
    await worker.register("t::nulls", recorder)
    await worker.trigger("state", "t::nulls", {"scope": scope})
    await registered(engine, "t::nulls")
    key = {"scope": scope, "key": "k"}
    for field in ("value", "data"):
        assert await worker.result("state::set", {**key, field: None}) == {"old_value": None, "new_value": None}
    assert await worker.result("state::get", key) is None
    assert await worker.result("state::list", {"scope": scope}) == [None]
    assert await worker.result("state::delete", key) is None  # the old value: null, as for a missing key
    assert await worker.result("state::list", {"scope": scope}) == []
    await worker.result("state::set", {**key, "value": None})
    await worker.result("state::set", {**key, "value": 1})  # over a stored null: reported as created
    assert await worker.result("state::delete", key) == 1
    payloads = await recorder.wait_for(5)
    assert [(p["event_type"], p["old_value"], p["new_value"]) for p in payloads] == [
        ("state:created", None, None), ("state:created", None, None), ("state:created", None, None),
        ("state:created", None, 1), ("state:deleted", 1, None)]
