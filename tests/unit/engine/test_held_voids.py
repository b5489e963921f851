"""iii_engine.held_voids with fake collaborators: what a release does when its function goes, calls held behind a
release, and what a held call keeps (findings of an attack of the first versions)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from iii_engine.held_voids import HeldVoids


def _held(served: list[bool]) -> tuple[HeldVoids, list[int], list[str], asyncio.Event]:
    """A store whose function is served while ``served[0]``; each route waits for ``gate`` (a callee's full queue)."""
    routed: list[int] = []
    dropped: list[str] = []
    gate = asyncio.Event()

    def route(caller: Any, msg: dict[str, Any], size: int) -> Any:
        routed.append(msg["data"]["i"])
        return gate.wait()

    held = HeldVoids(60_000, route=route, drop=lambda caller, function_id: dropped.append(function_id),
                     connected=lambda caller: True, served=lambda function_id: served[0])
    return held, routed, dropped, gate


def _void(i: int) -> dict[str, Any]:
    return {"function_id": "f", "data": {"i": i}}


async def test_a_release_stops_when_its_function_goes_and_the_rest_keep_waiting() -> None:
    """Its callee's connection closed while a release waited for room: before, every held call was routed into
    it and lost (15 of 15 uncounted); now the release stops and the rest wait for the next registration."""
    served = [True]
    held, routed, dropped, gate = _held(served)
    caller = SimpleNamespace(id="w")
    for i in range(3):
        assert held.hold(caller, _void(i), 10)
    held.registered("f")
    await asyncio.sleep(0)
    assert routed == [0]  # waiting for room
    assert held.releasing("f", caller) and held.hold(caller, _void(3), 10, behind=True)
    served[0] = False  # the callee's connection closes
    gate.set()
    await held.released("f")
    assert routed == [0] and len(held) == 3 and not dropped
    # the one held behind the release has a grace now, like the others
    assert all(h.deadline is not None for w in held._by_function.values() for h in w)
    served[0] = True
    held.registered("f")
    await held.released("f")
    assert routed == [0, 1, 2, 3]
    await held.close()


async def test_calls_held_behind_a_release_are_not_dropped_for_a_slow_callee() -> None:
    """Before, a call held behind a release had the grace of the others and was dropped as unknown once a slow
    callee (its queue full) outlasted it: 16 of 45 voids sent to a served function."""
    held, routed, dropped, gate = _held([True])
    held.grace_ms = 1  # (ms)
    caller = SimpleNamespace(id="w")
    assert held.hold(caller, _void(0), 10)
    assert held.hold(caller, _void(1), 10)  # held before the registration: its grace ends as the release waits
    held.registered("f")
    await asyncio.sleep(0)
    assert held.hold(caller, _void(2), 10, behind=True)
    await asyncio.sleep(0.05)  # many graces later (the expiry is a timer: nothing to await)
    assert not dropped and len(held) == 2
    gate.set()
    await held.released("f")
    assert routed == [0, 1, 2] and len(held) == 0 and held.bytes == 0
    await held.close()


async def test_a_held_call_keeps_its_text_not_its_parsed_message() -> None:
    """Held parsed, a message of many small values took 24 times its frame's bytes (the bounds count)."""
    held, _, _, _ = _held([False])
    caller = SimpleNamespace(id="w")
    message = {"function_id": "f", "data": [[] for _ in range(1000)]}
    assert held.hold(caller, message, 10)
    (one,) = held._by_function["f"]
    assert isinstance(one.text, str) and not hasattr(one, "msg")
    assert held.bytes == len(one.text) >= 3000
    await held.close()


async def test_only_a_caller_with_calls_in_the_release_waits_behind_it() -> None:
    """Another caller's calls of the function are routed as usual: a callee that stops reading holds back only the
    callers whose calls it already holds (its attack: a stalled release held every caller's voids of the function,
    with no grace, even once another worker served it, and blocked their readers past the bounds)."""
    held, routed, _, gate = _held([True])
    first, other = SimpleNamespace(id="a"), SimpleNamespace(id="b")
    assert held.hold(first, _void(0), 10)
    assert held.hold(first, _void(1), 10)
    held.registered("f")
    await asyncio.sleep(0)
    assert routed == [0]  # its route waits (the callee's queue is full)
    assert held.releasing("f", first) and not held.releasing("f", other)
    gate.set()
    await held.released("f")
    assert not held.releasing("f", first) and held._pending == {}
    await held.close()
