"""``engine::workers::list`` sorts a worker's function ids once per change of them (attack report registry F9).

Before, every call sorted every worker's ids again: 100,000 functions, 65 ms of loop time per call; a client keeping
4 calls in flight raised another worker's echo p50 from 0.2 to 132 ms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from iii_engine import Engine
from iii_engine import workers as workers_module
from iii_engine.workers import Outbox, WorkerConnection

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: our worker listing cache")]


class _Sorts:
    """``sorted`` as the workers module sees it, counting the calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, items: Iterable[Any], **kwargs: Any) -> list[Any]:
        self.count += 1
        return sorted(items, **kwargs)


@pytest.fixture
def sorts(monkeypatch: pytest.MonkeyPatch) -> _Sorts:
    counting = _Sorts()
    monkeypatch.setattr(workers_module, "sorted", counting, raising=False)
    return counting


async def _send(_: str) -> None:
    pass


async def test_info_sorts_once_per_change_of_either_set(sorts: _Sorts) -> None:
    worker = WorkerConnection(outbox=Outbox(_send))
    worker.functions.update({"b", "a"})
    first = worker.info()
    assert first["functions"] == ["a", "b"] and first["function_count"] == 2
    first["functions"].append("mine")  # the caller's copy: the cached listing is not changed
    assert worker.info()["functions"] == ["a", "b"]
    assert sorts.count == 1  # before: one sort per info() (3 here)
    changes: list[tuple[Callable[[], object], list[str]]] = [
        (lambda: worker.external_functions.add("c"), ["a", "b", "c"]),
        (lambda: worker.functions.discard("a"), ["b", "c"]),
        (lambda: worker.external_functions.__ior__({"0"}), ["0", "b", "c"]),
        (lambda: worker.functions.__isub__({"b"}), ["0", "c"])]
    for change, expected in changes:
        change()
        assert worker.info()["functions"] == expected == sorted(worker.functions | worker.external_functions)
        assert worker.info()["function_count"] == len(expected)
    assert sorts.count == 5
    worker.functions = {"z"}  # a plain set put in its place: listed right, sorted every time
    assert worker.info()["functions"] == ["0", "c", "z"]
    await worker.outbox.close()


async def test_workers_list_sorts_a_worker_once_until_its_functions_change(engine: Engine, sorts: _Sorts) -> None:
    worker = await RawWorker.connect(engine.url)
    for function_id in ("w::b", "w::a", "w::c"):
        await worker.register(function_id)

    async def listed() -> list[str]:
        [info] = (await worker.result_of("engine::workers::list", {"worker_id": worker.worker_id}))["workers"]
        assert info["function_count"] == len(info["functions"])
        return list(info["functions"])

    assert await listed() == ["w::a", "w::b", "w::c"]
    before = sorts.count
    for _ in range(5):
        assert await listed() == ["w::a", "w::b", "w::c"]
    assert sorts.count == before  # before: 5 more
    await worker.send({"type": "unregisterfunction", "id": "w::b"})
    await worker.register("w::0")
    assert await listed() == ["w::0", "w::a", "w::c"]
    assert await listed() == ["w::0", "w::a", "w::c"]
    assert sorts.count == before + 1
    await worker.close()
