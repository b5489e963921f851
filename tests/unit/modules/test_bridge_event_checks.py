"""The checks of bridged stream items whose change events came close together
(``iii_engine.modules.bridge.event_check``): a lone event is never checked, a pair is read back once the burst is
quiet, a read during which an event came is made again, a correction goes out only when the stored value differs,
and what is remembered is bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii_engine.modules.bridge import event_check
from iii_engine.modules.bridge.event_check import EventChecks
from iii_streams.events import custom_event, make_event

Key = tuple[str, str, str]


class _Remote:
    """What the back holds, with every read counted; a read may be held until released."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.reads = 0
        self.hold: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def read(self, key: Key) -> Any:
        self.reads += 1
        self.reading.set()
        if self.hold is not None:
            await self.hold.wait()
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks 20 ms after a burst (250 ms in use): the tests wait for them well within the 1 s window."""
    monkeypatch.setattr(event_check, "CHECK_AFTER_S", 0.02)


def _update(value: Any, item: str = "x") -> dict[str, Any]:
    return make_event("s", "g", item, "update", value)


async def _quiet() -> None:
    await asyncio.sleep(event_check.CHECK_AFTER_S * 4)


async def test_a_lone_event_is_not_checked_and_a_pair_is_read_once() -> None:
    remote, told = _Remote("b"), []
    checks = EventChecks(remote.read, told.append)
    checks.note(_update("a", "lone"))
    checks.note(custom_event("s", "g", "x", "ping", {}))  # not a change: never checked
    await _quiet()
    assert remote.reads == 0
    for value in ("a", "a", "b"):  # a burst: read once it is quiet
        checks.note(_update(value))
    await _quiet()
    assert remote.reads == 1 and told == []  # the last event said what is stored
    await checks.close()


async def test_a_read_during_which_an_event_came_is_made_again() -> None:
    remote, told = _Remote("c"), []
    remote.hold = asyncio.Event()
    checks = EventChecks(remote.read, told.append)
    checks.note(_update("a"))
    checks.note(_update("b"))
    await asyncio.wait_for(remote.reading.wait(), 5)
    checks.note(_update("c"))  # may be newer than what the read finds
    remote.value = "c"
    remote.hold.set()
    await _quiet()
    assert remote.reads == 2 and told == []
    await checks.close()


@pytest.mark.parametrize(("stored", "last", "told_event"), [
    ("b", make_event("s", "g", "x", "update", "a"), {"type": "update", "data": "b"}),
    (None, make_event("s", "g", "x", "update", "a"), {"type": "delete", "data": "a"}),
    ("b", make_event("s", "g", "x", "delete", "a"), {"type": "create", "data": "b"}),
])
async def test_the_stored_value_is_told_when_the_last_event_said_otherwise(
        stored: Any, last: dict[str, Any], told_event: dict[str, Any]) -> None:
    remote, told = _Remote(stored), []
    checks = EventChecks(remote.read, told.append)
    checks.note(_update("first"))
    checks.note(last)
    await _quiet()
    assert [event["event"] for event in told] == [told_event]
    assert (told[0]["streamName"], told[0]["groupId"], told[0]["id"]) == ("s", "g", "x")
    await checks.close()


async def test_a_failed_read_tells_nothing_and_the_next_event_checks_again(caplog: pytest.LogCaptureFixture) -> None:
    remote, told = _Remote(ConnectionError("back down")), []
    checks = EventChecks(remote.read, told.append)
    checks.note(_update("a"))
    checks.note(_update("b"))
    await _quiet()
    assert remote.reads == 1 and told == []
    remote.value = "a"
    checks.note(_update("b"))
    await _quiet()
    assert remote.reads == 2 and [event["event"]["data"] for event in told] == ["a"]
    await checks.close()


async def test_events_further_apart_than_the_window_are_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_check, "CHECK_WINDOW_S", 0.01)
    remote, told = _Remote("b"), []
    checks = EventChecks(remote.read, told.append)
    checks.note(_update("a"))
    await asyncio.sleep(0.03)
    checks.note(_update("b"))
    await _quiet()
    assert remote.reads == 0
    await checks.close()


async def test_items_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_check, "MAX_TRACKED", 4)
    remote, told = _Remote(None), []
    checks = EventChecks(remote.read, told.append)
    for n in range(100):
        checks.note(_update(n, item=f"i{n}"))
    assert len(checks._items) <= 5
    await checks.close()


async def test_close_stops_planned_checks_and_those_under_way() -> None:
    remote, told = _Remote("z"), []
    remote.hold = asyncio.Event()
    checks = EventChecks(remote.read, told.append)
    checks.note(_update("a"))
    checks.note(_update("b"))
    checks.note(_update("a", "other"))
    checks.note(_update("b", "other"))
    await asyncio.wait_for(remote.reading.wait(), 5)
    await checks.close()
    remote.hold.set()
    await _quiet()
    assert told == [] and not checks._tasks


@pytest.mark.parametrize(("stored", "last"), [(1, True), (0, False), ({"a": 1}, {"a": True}), ([1.5, 1], [1.5, True])])
async def test_values_are_compared_as_json(stored: Any, last: Any) -> None:
    remote, told = _Remote(stored), []
    checks = EventChecks(remote.read, told.append)
    checks.note(_update("first"))
    checks.note(_update(last))
    await _quiet()
    assert [event["event"]["data"] for event in told] == [stored]  # (True == 1 in Python: it was left stale)
    await checks.close()


async def test_a_stored_null_after_an_event_of_null_is_no_delete() -> None:
    remote, told = _Remote(None), []  # a get answers None for a stored null
    checks = EventChecks(remote.read, told.append)
    checks.note(_update(1))
    checks.note(_update(None))
    await _quiet()
    assert remote.reads == 1 and told == []  # it told its clients the item was deleted
    await checks.close()


async def test_a_burst_of_more_items_than_remembered_still_checks_those_remembered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_check, "MAX_TRACKED", 8)
    remote, told = _Remote("stored"), []
    checks = EventChecks(remote.read, told.append)
    for round_ in range(2):  # every item changed twice, in the same order each time
        for n in range(12):
            checks.note(_update(f"r{round_}", item=f"i{n}"))
    await _quiet()
    assert len(checks._items) <= 8
    # the first 8 (before, each new item pushed out the next one to change: none was checked)
    assert sorted(event["id"] for event in told) == sorted(f"i{n}" for n in range(8))
    await checks.close()


async def test_nothing_is_checked_after_close() -> None:
    remote, told = _Remote("z"), []
    checks = EventChecks(remote.read, told.append)
    await checks.close()
    checks.note(_update("a"))
    checks.note(_update("b"))
    await _quiet()
    assert remote.reads == 0 and told == []


async def test_an_own_and_another_engines_event_further_apart_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow link from one engine to the remote delayed its event 1.05 s behind the other's: past the 1 s window,
    both engines' clients were left on the older value."""
    monkeypatch.setattr(event_check, "CHECK_WINDOW_S", 0.01)
    remote, told = _Remote("mine"), []
    checks = EventChecks(remote.read, told.append)
    mine = _update("mine")
    checks.published(mine)
    checks.note(dict(mine))  # (it comes back as a copy)
    await asyncio.sleep(0.05)
    checks.note(_update("theirs"))  # another engine's, older, delayed
    await _quiet()
    assert [event["event"]["data"] for event in told] == ["mine"]
    for value in ("x", "y"):  # two of other engines' this far apart: not checked
        checks.note(_update(value, item="other"))
        await asyncio.sleep(0.05)
    await _quiet()
    assert remote.reads == 1
    await checks.close()


async def test_when_full_items_past_the_short_window_make_room(monkeypatch: pytest.MonkeyPatch) -> None:
    """Items are kept for the 10 s mixed window, but past the bound those older than the 1 s window make room: kept
    10 s, 1,639 new items a second filled the bound and a race 0.1 s apart on a new item went unchecked."""
    monkeypatch.setattr(event_check, "MAX_TRACKED", 4)
    monkeypatch.setattr(event_check, "CHECK_WINDOW_S", 0.05)
    remote, told = _Remote("b"), []
    checks = EventChecks(remote.read, told.append)
    for n in range(4):
        checks.note(_update(n, item=f"old{n}"))
    await asyncio.sleep(0.1)  # past the short window, within the mixed one
    checks.note(_update("a"))
    checks.note(_update("a"))  # a race on a new item
    await _quiet()
    assert [event["event"]["data"] for event in told] == ["b"]
    await checks.close()


async def test_an_item_being_checked_is_never_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forgotten mid-read, its correction could follow a newer event of the item, tracked anew."""
    monkeypatch.setattr(event_check, "MAX_TRACKED", 2)
    monkeypatch.setattr(event_check, "CHECK_WINDOW_S", 0.05)
    remote, told = _Remote("b"), []
    remote.hold = asyncio.Event()
    checks = EventChecks(remote.read, told.append)
    checks.note(_update("a"))
    checks.note(_update("a"))
    await asyncio.wait_for(remote.reading.wait(), 5)  # its read is under way
    await asyncio.sleep(0.1)  # past the short window
    checks.note(_update(1, item="b"))
    checks.note(_update(1, item="c"))  # full: x being checked keeps its place, c is not tracked
    assert ("s", "g", "x") in checks._items and ("s", "g", "c") not in checks._items
    remote.hold.set()
    await _quiet()
    assert [event["event"]["data"] for event in told] == ["b"]
    await checks.close()
