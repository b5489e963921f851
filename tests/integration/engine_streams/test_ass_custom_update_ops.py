"""``stream::update`` of a custom stream: the worker's ``stream::update(NAME)`` gets the ops the engine validated,
in their wire form, so an op the engine accepts is one every SDK's models take."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from iii.iii import III
from iii_engine import Engine
from iii_streams import MemoryStream
from tests.integration.sdk.conftest import RealEngineThread, workers_of

from .helpers import Recorder, Worker, registered

pytestmark = pytest.mark.our_engine("serves a custom stream through our engine")


async def test_the_worker_gets_the_validated_ops_in_wire_form(engine: Engine) -> None:
    """Before, the caller's ops went on as written: a root merge without ``path`` reached the worker without it."""
    worker = await Worker.connect(engine.url)
    update = Recorder({"old_value": None, "new_value": {"a": 1}})
    await worker.register("stream::update(cust)", update)
    await registered(engine, "stream::update(cust)")
    ops: list[dict[str, Any]] = [{"type": "merge", "value": {"a": 1}}, {"type": "merge", "path": None, "value": {}},
                                 {"type": "set", "path": "s", "value": [1], "note": "not an op field"},
                                 {"type": "decrement", "path": "n", "by": 3}]
    answer = await worker.result("stream::update", {"stream_name": "cust", "group_id": "g", "item_id": "i",
                                                    "ops": ops})
    assert answer == {"old_value": None, "new_value": {"a": 1}}
    [payload] = update.payloads
    assert payload["ops"] == [{"type": "merge", "path": "", "value": {"a": 1}},
                              {"type": "merge", "path": "", "value": {}},
                              {"type": "set", "path": "s", "value": [1]},
                              {"type": "decrement", "path": "n", "by": 3}]
    await worker.close()


@pytest.fixture
def two_workers() -> Iterator[tuple[III, III]]:
    with RealEngineThread() as real:
        for make in workers_of(real.url):
            yield make("server"), make("client")


def test_a_root_merge_without_path_on_a_create_stream_served_stream(two_workers: tuple[III, III]) -> None:
    server, client = two_workers
    server.create_stream("served", MemoryStream())
    server.list_functions()  # barrier: the stream's functions are registered
    key = {"stream_name": "served", "group_id": "g", "item_id": "i"}
    client.trigger({"function_id": "stream::set", "payload": {**key, "data": {"n": 1}}})
    result = client.trigger({"function_id": "stream::update",
                             "payload": {**key, "ops": [{"type": "merge", "value": {"a": 2}}]}})
    assert result == {"old_value": {"n": 1}, "new_value": {"n": 1, "a": 2}}
    assert client.trigger({"function_id": "stream::get", "payload": key}) == {"n": 1, "a": 2}
