"""The ``IStream`` conformance suite, reusable by any stream implementation (ours or a third party's).

Subclass :class:`StreamConformance` in a test module and override the ``stream`` fixture; pytest collects the
inherited tests. Tests of the extras (``send``, ``watch``, ``list_all``) run only when the object has them, the
``timeout=`` tests only when its operations accept that keyword, and the two-process test only when
``stream_url`` gives a URL another process can open with :func:`iii_streams.open_stream`. Every test uses
fresh, unique stream names (the ``names`` fixture), so runs against a shared server never collide.

Needs ``pytest`` and ``pytest-asyncio`` (the ``testing`` extra) and works in pytest-asyncio's default
``strict`` mode as well as in ``auto`` mode: the tests carry the ``asyncio`` mark, and an ``async`` ``stream``
fixture declared with a plain ``@pytest.fixture`` is handed to pytest-asyncio when the subclass is created
(pytest >= 8.4; ``@pytest_asyncio.fixture`` works with every version).

Every store of this package passes the whole suite, including exact group listing: the Redis layout escapes
``:`` in stream names (``a:b`` is ``stream:a%3Ab:<group>``), so ``list_groups("a")`` never reports the groups of
stream ``a:b``. ``exact_group_listing = False`` remains for stores of your own that cannot tell them apart.

Example (a test module)::

    import pytest
    from iii_streams import MemoryStream
    from iii_streams.testing import StreamConformance

    class TestMyStore(StreamConformance):
        @pytest.fixture
        async def stream(self):
            async with MemoryStream() as store:
                yield store
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.stream import (
    IStream,
    StreamDeleteInput,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamUpdateInput,
    UpdateDecrement,
    UpdateIncrement,
    UpdateMerge,
    UpdateRemove,
    UpdateSet,
)
from iii.stream_ops import parse_ops

from .messages import missing_extra

# the suite is an optional part: without the testing extra, say which extra to install
with missing_extra("iii_streams.testing"):
    import pytest
    import pytest_asyncio

__all__ = ["HOSTILE_NAMES", "JSON_SAMPLES", "Names", "StreamConformance"]

# Names that break naive key building, glob patterns, SQL or encodings; all must be stored and listed literally.
HOSTILE_NAMES: tuple[str, ...] = (
    ":",
    "a:b:c",
    "*",
    "?[a-z]\\",
    "'",
    '"quoted"',
    "'; DROP TABLE iii_stream_items; --",
    "%_ LIKE",
    "ünïcödé 日本語 🎉",
    " spaced out ",
    "x" * 5000,
)

JSON_SAMPLES: tuple[Any, ...] = (
    {"z": 1, "a": 2, "m": {"y": [], "b": {}}},
    [1, [2, [3, []]], {"k": None}],
    2**70,
    -(2**70),
    {"big": 123456789012345678901234567890, "float": 2.0, "neg": -0.5, "exp": 1e300},
    "text with \"quotes\", \\backslash, \n newline, \u0000 nul and ü日本🎉",
    True,
    0,
    [],
    {},
)


class Names:
    """Unique names for one test: ``names.stream("todos")`` → ``"todos-<run id>"``.

    Example:
        >>> n = Names("r1")
        >>> n.stream("s")
        's-r1'
    """

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.used: list[str] = []

    def stream(self, label: str = "s") -> str:
        """A stream name unique to this test, containing ``label``.

        Example:
            >>> names = Names("run7")
            >>> names.stream("todos"), names.stream(), names.used
            ('todos-run7', 's-run7', ['todos-run7', 's-run7'])
        """
        name = f"{label}-{self.run_id}"
        self.used.append(name)
        return name


def _get(stream: str, group: str, item: str) -> StreamGetInput:
    return StreamGetInput(stream_name=stream, group_id=group, item_id=item)


def _set(stream: str, group: str, item: str, data: Any) -> StreamSetInput:
    return StreamSetInput(stream_name=stream, group_id=group, item_id=item, data=data)


def _del(stream: str, group: str, item: str) -> StreamDeleteInput:
    return StreamDeleteInput(stream_name=stream, group_id=group, item_id=item)


def _upd(stream: str, group: str, item: str, ops: list[Any]) -> StreamUpdateInput:
    return StreamUpdateInput(stream_name=stream, group_id=group, item_id=item, ops=ops)


async def _next(events: Any) -> dict[str, Any]:
    result: dict[str, Any] = await asyncio.wait_for(anext(events), 10.0)
    return result


_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from iii.stream import StreamUpdateInput, UpdateIncrement
    from iii_streams import open_stream

    async def main(url, stream, n):
        async with open_stream(url) as store:
            for _ in range(n):
                await store.update(StreamUpdateInput(stream_name=stream, group_id="g", item_id="counter",
                                                     ops=[UpdateIncrement(path="n", by=1)]))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


class StreamConformance:
    """Inherit, override ``stream`` (and optionally ``stream_url``), and pytest runs the whole suite.

    Class flags for documented limits of a store of yours: ``exact_group_listing = False`` when ``list_groups``
    of stream ``a`` may also report groups of stream ``a:b``; ``ordered_lists = False`` when ``list`` does not
    keep insertion order.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # pytest-asyncio's strict mode runs only fixtures it was told about; the documented override is a plain
        # @pytest.fixture on an async function, so hand such fixtures to pytest-asyncio here (same scope)
        for name in ("stream", "stream_url"):
            declared = cls.__dict__.get(name)
            function = getattr(declared, "__wrapped__", None)
            marker = getattr(declared, "_fixture_function_marker", None)
            is_async = inspect.isasyncgenfunction(function) or inspect.iscoroutinefunction(function)
            if marker is None or not is_async or getattr(function, "_force_asyncio_fixture", False):
                continue
            setattr(cls, name, pytest_asyncio.fixture(function, scope=marker.scope, params=marker.params,
                                                      ids=marker.ids, name=marker.name))

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    exact_group_listing: ClassVar[bool] = True
    ordered_lists: ClassVar[bool] = True
    concurrent_tasks: ClassVar[int] = 40
    increments_per_task: ClassVar[int] = 3
    process_increments: ClassVar[int] = 60

    @pytest_asyncio.fixture
    async def stream(self) -> AsyncIterator[IStream[Any]]:
        """Override: yield the store under test (and close it afterwards)."""
        raise NotImplementedError("override the `stream` fixture in your StreamConformance subclass")
        yield  # pragma: no cover

    @pytest.fixture
    def stream_url(self) -> str | None:
        """Override with a URL another process can open to reach the same data (enables the 2-process test)."""
        return None

    @pytest.fixture
    def names(self) -> Names:
        """Unique names for the running test."""
        return Names()

    # -- basic contract ------------------------------------------------------------------------------------------

    async def test_set_new_item_reports_no_old_value(self, stream: IStream[Any], names: Names) -> None:
        s = names.stream()
        result = await stream.set(_set(s, "g", "1", {"n": 1}))
        assert result is not None
        assert (result.old_value, result.new_value) == (None, {"n": 1})
        assert await stream.get(_get(s, "g", "1")) == {"n": 1}

    async def test_overwrite_reports_both_values(self, stream: IStream[Any], names: Names) -> None:
        s = names.stream()
        await stream.set(_set(s, "g", "1", {"v": 1}))
        result = await stream.set(_set(s, "g", "1", {"v": 2}))
        assert result is not None
        assert (result.old_value, result.new_value) == ({"v": 1}, {"v": 2})
        assert await stream.get(_get(s, "g", "1")) == {"v": 2}

    async def test_get_missing_is_none(self, stream: IStream[Any], names: Names) -> None:
        s = names.stream()
        assert await stream.get(_get(s, "g", "nope")) is None
        await stream.set(_set(s, "g", "1", 1))
        assert await stream.get(_get(s, "g", "nope")) is None
        assert await stream.get(_get(s, "other", "1")) is None

    async def test_delete(self, stream: IStream[Any], names: Names) -> None:
        s = names.stream()
        missing = await stream.delete(_del(s, "g", "nope"))
        assert missing.old_value is None
        await stream.set(_set(s, "g", "1", {"x": [1]}))
        removed = await stream.delete(_del(s, "g", "1"))
        assert removed.old_value == {"x": [1]}
        assert await stream.get(_get(s, "g", "1")) is None
        assert (await stream.delete(_del(s, "g", "1"))).old_value is None

    async def test_list_values(self, stream: IStream[Any], names: Names) -> None:
        s = names.stream()
        assert await stream.list(StreamListInput(stream_name=s, group_id="g")) == []
        for i in (3, 1, 2):
            await stream.set(_set(s, "g", f"i{i}", {"i": i}))
        await stream.set(_set(s, "g", "i3", {"i": 30}))  # an overwrite keeps its position
        await stream.set(_set(s, "other", "x", {"i": 99}))
        values = await stream.list(StreamListInput(stream_name=s, group_id="g"))
        if self.ordered_lists:
            assert values == [{"i": 30}, {"i": 1}, {"i": 2}]
        else:
            assert sorted(v["i"] for v in values) == [1, 2, 30]

    async def test_list_groups_exact_and_empty_groups_disappear(self, stream: IStream[Any], names: Names) -> None:
        s = names.stream()
        assert await stream.list_groups(StreamListGroupsInput(stream_name=s)) == []
        await stream.set(_set(s, "g1", "a", 1))
        await stream.set(_set(s, "g2", "a", 2))
        await stream.set(_set(s, "g2", "b", 3))
        await stream.set(_set(s + "-other", "elsewhere", "a", 4))
        if self.exact_group_listing:
            await stream.set(_set(s + ":g1", "nested", "a", 5))
        groups = await stream.list_groups(StreamListGroupsInput(stream_name=s))
        assert sorted(groups) == ["g1", "g2"]
        await stream.delete(_del(s, "g2", "a"))
        assert sorted(await stream.list_groups(StreamListGroupsInput(stream_name=s))) == ["g1", "g2"]
        await stream.delete(_del(s, "g2", "b"))
        assert await stream.list_groups(StreamListGroupsInput(stream_name=s)) == ["g1"]
        assert await stream.list(StreamListInput(stream_name=s, group_id="g2")) == []

    # -- JSON fidelity and hostile names --------------------------------------------------------------------------

    @pytest.mark.parametrize("value", JSON_SAMPLES, ids=lambda v: type(v).__name__)
    async def test_json_round_trip_is_exact(self, stream: IStream[Any], names: Names, value: Any) -> None:
        s = names.stream()
        await stream.set(_set(s, "g", "v", value))
        got = await stream.get(_get(s, "g", "v"))
        assert got == value
        assert type(got) is type(value)
        if isinstance(value, dict):
            assert list(got) == list(value)  # key order kept
        if isinstance(value, dict) and "float" in value:
            assert type(got["float"]) is float and type(got["big"]) is int
        assert await stream.list(StreamListInput(stream_name=s, group_id="g")) == [value]

    async def test_hostile_names_are_literal(self, stream: IStream[Any], names: Names) -> None:
        for i, hostile in enumerate(HOSTILE_NAMES):
            s = names.stream(f"h{i}{hostile[:200]}")
            await stream.set(_set(s, hostile, hostile, {"name": hostile}))
            assert await stream.get(_get(s, hostile, hostile)) == {"name": hostile}
            assert await stream.list(StreamListInput(stream_name=s, group_id=hostile)) == [{"name": hostile}]
            assert await stream.list_groups(StreamListGroupsInput(stream_name=s)) == [hostile]
        # the same item id in two groups, and a group named like a glob, never alias each other
        s = names.stream("alias")
        await stream.set(_set(s, "*", "k", "star"))
        await stream.set(_set(s, "a", "k", "a"))
        assert await stream.get(_get(s, "*", "k")) == "star"
        assert await stream.list(StreamListInput(stream_name=s, group_id="*")) == ["star"]
        assert (await stream.delete(_del(s, "*", "k"))).old_value == "star"
        assert await stream.get(_get(s, "a", "k")) == "a"

    # -- update ---------------------------------------------------------------------------------------------------

    async def test_update_creates_and_applies_ops_in_order(self, stream: IStream[Any], names: Names) -> None:
        s = names.stream()
        first = await stream.update(_upd(s, "g", "i", [UpdateIncrement(path="n", by=5)]))
        assert first is not None
        assert (first.old_value, first.new_value) == (None, {"n": 5})
        ops = [
            UpdateDecrement(path="n", by=2),
            UpdateSet(path="a.b", value=[1, 2**70]),
            UpdateMerge(type="merge", path="", value={"m": 1, "n": 10}),
            UpdateRemove(path="m"),
            UpdateIncrement(path="s", by=1),
            {"type": "increment", "path": "n", "by": 1},
        ]
        second = await stream.update(_upd(s, "g", "i", ops))
        assert second is not None
        assert second.old_value == {"n": 5}
        assert second.new_value == {"n": 11, "a.b": [1, 2**70], "s": 1}
        assert await stream.get(_get(s, "g", "i")) == second.new_value

    async def test_update_parsed_matches_update(self, stream: IStream[Any], names: Names) -> None:
        # An engine updates a Backend through update_parsed (ops it already parsed): same answers, same values.
        update_parsed = getattr(stream, "update_parsed", None)
        if update_parsed is None:
            pytest.skip("not a Backend: an engine calls update() on it")
        s = names.stream()
        ops: list[Any] = [UpdateIncrement(path="n", by=5), UpdateSet(path="big", value=2**70),
                          UpdateMerge(type="merge", path="", value={"m": [1, {"x": None}]}), UpdateRemove(path="gone")]
        for item in ("by-update", "by-parsed"):
            await stream.set(_set(s, "g", item, {"gone": 1, "n": 1}))
        via_update = await stream.update(_upd(s, "g", "by-update", ops))
        via_parsed = await update_parsed(s, "g", "by-parsed", parse_ops(ops))
        assert via_update is not None and via_parsed is not None
        assert (via_parsed.old_value, via_parsed.new_value) == (via_update.old_value, via_update.new_value)
        assert await stream.get(_get(s, "g", "by-parsed")) == await stream.get(_get(s, "g", "by-update"))

    async def test_update_with_no_ops_still_creates(self, stream: IStream[Any], names: Names) -> None:
        s = names.stream()
        result = await stream.update(_upd(s, "g", "i", []))
        assert result is not None and (result.old_value, result.new_value) == (None, {})
        assert await stream.get(_get(s, "g", "i")) == {}

    async def test_update_leaves_non_objects_alone(self, stream: IStream[Any], names: Names) -> None:
        s = names.stream()
        await stream.set(_set(s, "g", "i", [1, 2]))
        result = await stream.update(_upd(s, "g", "i", [UpdateIncrement(path="n", by=1)]))
        assert result is not None and result.new_value == [1, 2]
        replaced = await stream.update(_upd(s, "g", "i", [UpdateSet(path="", value={"fresh": True})]))
        assert replaced is not None and replaced.new_value == {"fresh": True}

    async def test_invalid_op_fails_without_writing(self, stream: IStream[Any], names: Names) -> None:
        s = names.stream()
        bad = [UpdateIncrement(path="n", by=1), {"type": "increment", "path": "n", "by": 1.5}]
        with pytest.raises(ValueError, match="by"):
            await stream.update(_upd(s, "g", "i", bad))
        assert await stream.get(_get(s, "g", "i")) is None
        assert await stream.list_groups(StreamListGroupsInput(stream_name=s)) == []

    async def test_concurrent_increments_lose_nothing(self, stream: IStream[Any], names: Names) -> None:
        s = names.stream()

        async def worker() -> list[int]:
            seen = []
            for _ in range(self.increments_per_task):
                result = await stream.update(_upd(s, "g", "c", [UpdateIncrement(path="n", by=1)]))
                assert result is not None
                seen.append(result.new_value["n"])
            return seen

        results = await asyncio.gather(*(worker() for _ in range(self.concurrent_tasks)))
        total = self.concurrent_tasks * self.increments_per_task
        assert sorted(n for seen in results for n in seen) == list(range(1, total + 1))
        assert await stream.get(_get(s, "g", "c")) == {"n": total}

    async def test_concurrent_creation_has_one_creator(self, stream: IStream[Any], names: Names) -> None:
        s = names.stream()
        results = await asyncio.gather(
            *(stream.update(_upd(s, "g", "new", [UpdateIncrement(path="n", by=1)])) for _ in range(20))
        )
        assert sum(1 for r in results if r is not None and r.old_value is None) == 1
        assert await stream.get(_get(s, "g", "new")) == {"n": 20}

    async def test_two_processes_increment_without_loss(
        self, stream: IStream[Any], names: Names, stream_url: str | None
    ) -> None:
        if stream_url is None:
            pytest.skip("no stream_url: this store cannot be shared with another process")
        s = names.stream()
        n = self.process_increments
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, stream_url, s, str(n), env=env, stderr=subprocess.PIPE
        )
        for _ in range(n):
            await stream.update(_upd(s, "g", "counter", [UpdateIncrement(path="n", by=1)]))
        _, stderr = await asyncio.wait_for(proc.communicate(), 25)
        assert proc.returncode == 0, stderr.decode()
        assert await stream.get(_get(s, "g", "counter")) == {"n": 2 * n}

    # -- timeout= (the stores of this package; skipped for stores whose operations do not take it) --------------

    async def test_operations_accept_a_timeout(self, stream: IStream[Any], names: Names) -> None:
        if "timeout" not in inspect.signature(stream.get).parameters:
            pytest.skip(f"{type(stream).__name__}.get takes no timeout")
        s = names.stream()
        timed: Any = stream
        assert (await timed.set(_set(s, "g", "1", {"n": 1}), timeout=10)).old_value is None
        assert await timed.get(_get(s, "g", "1"), timeout=10) == {"n": 1}
        result = await timed.update(_upd(s, "g", "1", [UpdateIncrement(path="n", by=1)]), timeout=10.0)
        assert result.new_value == {"n": 2}
        assert await timed.list(StreamListInput(stream_name=s, group_id="g"), timeout=10) == [{"n": 2}]
        assert await timed.list_groups(StreamListGroupsInput(stream_name=s), timeout=10) == ["g"]
        assert (await timed.delete(_del(s, "g", "1"), timeout=10)).old_value == {"n": 2}
        for bad in (0, -1, float("nan"), float("inf"), "5", True):
            with pytest.raises(ValueError, match="timeout must be a positive number"):
                await timed.get(_get(s, "g", "1"), timeout=bad)
        assert await stream.get(_get(s, "g", "1")) is None

    # -- extras: send / watch / list_all ------------------------------------------------------------------------

    @staticmethod
    def _need(stream: Any, *methods: str) -> None:
        missing = [m for m in methods if not callable(getattr(stream, m, None))]
        if missing:
            pytest.skip(f"{type(stream).__name__} has no {', '.join(missing)}")

    async def test_watch_sees_every_change_in_order(self, stream: IStream[Any], names: Names) -> None:
        self._need(stream, "watch", "send")
        s = names.stream()
        watched: Any = stream
        async with watched.watch(stream_name=s) as events:
            await stream.set(_set(s, "g", "1", {"v": 1}))
            await stream.update(_upd(s, "g", "1", [UpdateIncrement(path="v", by=1)]))
            await stream.set(_set(s + "-other", "g", "1", "ignored by the filter"))
            await stream.delete(_del(s, "g", "1"))
            await stream.delete(_del(s, "g", "1"))  # nothing removed: no event
            await watched.send(s, "g", None, "custom", {"big": 2**70})
            got = [await _next(events) for _ in range(4)]
        for ev in got:
            assert (ev["type"], ev["streamName"], ev["groupId"]) == ("stream", s, "g")
            assert isinstance(ev["timestamp"], int)
        assert [ev["event"] for ev in got] == [
            {"type": "create", "data": {"v": 1}},
            {"type": "update", "data": {"v": 2}},
            {"type": "delete", "data": {"v": 2}},
            {"type": "event", "event": {"type": "custom", "data": {"big": 2**70}}},
        ]
        assert [ev["id"] for ev in got] == ["1", "1", "1", None]

    async def test_each_watcher_gets_its_own_events(self, stream: IStream[Any], names: Names) -> None:
        """A watcher changing an event it got changes it for no other watcher, and the data a caller sent or set
        is not the event's (each is a copy)."""
        self._need(stream, "watch", "send")
        s = names.stream()
        watched: Any = stream
        sent, value = {"n": 1, "list": [1]}, {"v": 1}
        async with watched.watch(stream_name=s) as first, watched.watch(stream_name=s) as second:
            await stream.set(_set(s, "g", "1", value))
            await watched.send(s, "g", None, "custom", sent)
            sent["n"], value["v"] = 2, 2  # the callers' objects change after the calls
            for ev in [await _next(first) for _ in range(2)]:
                ev["event"]["data" if "data" in ev["event"] else "event"].clear()
                ev["groupId"] = "changed"
            got = [await _next(second) for _ in range(2)]
        assert [(ev["groupId"], ev["event"]) for ev in got] == [
            ("g", {"type": "create", "data": {"v": 1}}),
            ("g", {"type": "event", "event": {"type": "custom", "data": {"n": 1, "list": [1]}}}),
        ]

    async def test_watch_filters_by_item_and_carries_large_values(self, stream: IStream[Any], names: Names) -> None:
        self._need(stream, "watch")
        s = names.stream()
        big = {"blob": "x" * 20_000, "order": [3, 2, 1]}
        watched: Any = stream
        async with watched.watch(stream_name=s, group_id="g", item_id="wanted") as events:
            await stream.set(_set(s, "g", "other", 1))
            await stream.set(_set(s, "g2", "wanted", 1))
            await stream.set(_set(s, "g", "wanted", big))
            ev = await _next(events)
        assert ev["id"] == "wanted" and ev["event"] == {"type": "create", "data": big}

    async def test_list_all_reports_streams_and_groups(self, stream: IStream[Any], names: Names) -> None:
        self._need(stream, "list_all")
        s = names.stream()
        await stream.set(_set(s, "b:2", "i", 1))
        await stream.set(_set(s, "a", "i", 1))
        listing = dict(await stream.list_all())  # type: ignore[attr-defined]
        assert listing[s] == ["a", "b:2"]
