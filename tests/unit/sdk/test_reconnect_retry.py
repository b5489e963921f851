"""The bookkeeping of calls sent again after ``function_not_found`` just after a reconnect (``iii.reconnect_retry``):
remembered only while reconnecting or in the window, bounded, sent again per function with a backoff, and
forgotten at every end."""

from __future__ import annotations

import asyncio

import pytest

from iii import reconnect_retry
from iii.errors import InvocationError
from iii.reconnect_retry import NotFoundRetry

NOT_FOUND = InvocationError("function_not_found", "Function f not found")


def _retry(window_s: float = 5.0) -> tuple[NotFoundRetry, list[tuple[str, str]]]:
    sent: list[tuple[str, str]] = []
    retry = NotFoundRetry(asyncio.get_running_loop(), window_s,
                          resend=lambda calls: sent.extend((iid, frame) for iid, _, frame in calls))
    return retry, sent


async def test_nothing_is_remembered_without_a_reconnect() -> None:
    retry, _ = _retry()
    retry.remember("i1", "f", "frame")
    assert not retry.active and not retry.retry("i1", NOT_FOUND)


async def test_only_function_not_found_in_the_window_is_sent_again() -> None:
    retry, sent = _retry()
    retry.lost()
    retry.remember("i1", "f", "one")
    retry.remember("i2", "f", "two")
    retry.ready()
    assert not retry.retry("i1", InvocationError("boom", "failed"))  # another error: forgotten, fails
    assert retry.retry("i2", NOT_FOUND)
    await asyncio.sleep(reconnect_retry.FIRST_DELAY_S * 3)
    assert sent == [("i2", "two")]
    retry.forget("i2")
    assert not retry.active


async def test_after_the_window_a_call_is_not_remembered_nor_sent_again() -> None:
    retry, _ = _retry(window_s=0.01)
    retry.lost()
    retry.remember("i1", "f", "one")
    retry.ready()
    await asyncio.sleep(0.02)
    assert not retry.retry("i1", NOT_FOUND) and not retry.active
    retry.remember("i2", "f", "two")
    assert not retry.active and retry.until == 0.0  # the window closed for good


async def test_a_call_timing_out_while_it_waits_gets_the_not_found_error() -> None:
    retry, sent = _retry()
    retry.lost()
    retry.ready()
    retry.remember("i1", "f", "one")
    assert retry.retry("i1", NOT_FOUND)
    assert retry.expired("i1") is NOT_FOUND
    await asyncio.sleep(reconnect_retry.FIRST_DELAY_S * 3)
    assert sent == [] and not retry.active  # its timer stopped with it


async def test_the_wait_doubles_per_function_up_to_its_bound() -> None:
    loop = asyncio.get_running_loop()
    resent = asyncio.Event()
    retry = NotFoundRetry(loop, 5.0, resend=lambda calls: resent.set())
    retry.lost()
    retry.ready()
    retry.remember("i1", "f", "one")
    times = []
    for _ in range(3):
        asked = loop.time()
        assert retry.retry("i1", NOT_FOUND)
        await asyncio.wait_for(resent.wait(), 5)
        times.append(loop.time() - asked)
        resent.clear()
    assert times[0] < times[1] < times[2]
    assert retry._delays["f"] <= reconnect_retry.MAX_DELAY_S
    retry.close()
    assert not retry.active and retry.until == 0.0


async def test_remembered_calls_are_bounded_in_count_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconnect_retry, "MAX_CALLS", 2)
    monkeypatch.setattr(reconnect_retry, "MAX_BYTES", 10)
    retry, _ = _retry()
    retry.lost()
    retry.remember("big", "f", "x" * 11)
    retry.remember("a", "f", "xx")
    retry.remember("b", "f", "xx")
    retry.remember("c", "f", "xx")
    assert sorted(retry._frames) == ["a", "b"]
    retry.forget("a")
    retry.remember("c", "f", "xx")
    assert sorted(retry._frames) == ["b", "c"] and retry._bytes == 4


async def test_close_returns_the_calls_waiting_to_be_sent_again() -> None:
    retry, _ = _retry()
    retry.lost()
    retry.ready()
    retry.remember("i1", "f", "one")
    retry.remember("i2", "f", "two")
    assert retry.retry("i1", NOT_FOUND)
    assert retry.close() == ["i1"]  # i2 is still the session's (sent, not answered)
    assert not retry.active and retry.until == 0.0


async def test_a_timed_out_call_says_it_was_sent_again() -> None:
    retry, _ = _retry()
    retry.lost()
    retry.ready()
    retry.remember("i1", "f", "one")
    error = InvocationError("function_not_found", "Function f not found")
    assert retry.retry("i1", error)
    assert retry.expired("i1", 3000) is error
    assert error.__notes__ == ["sent again for 3000 ms (its timeout) after the client reconnected to the engine: no "
                               "worker registered the function in that time (iii.reconnect_retry)"]


async def test_functions_named_in_log_lines_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconnect_retry, "MAX_TOLD", 3)
    retry, _ = _retry()
    retry.lost()
    retry.ready()
    for n in range(10):
        retry.remember(f"i{n}", f"f{n}", "frame")
        assert retry.retry(f"i{n}", NOT_FOUND)
    assert len(retry._told) == 4  # three named, then one line for the rest
    retry.close()


async def test_a_call_remembered_again_is_counted_once() -> None:
    """A second loss with the call still queued remembered it again: its bytes counted twice, and left for good once
    it ended (after a few such losses, no call was remembered any more)."""
    retry, _ = _retry()
    retry.lost()
    retry.remember("i1", "f", "x" * 100)
    retry.lost()
    retry.remember("i1", "f", "x" * 100)
    assert retry._bytes == 100
    retry.forget("i1")
    assert retry._bytes == 0 and not retry.active


def test_a_resend_that_fails_unforeseen_fails_its_call_and_sends_the_rest() -> None:
    from iii import InitOptions, ReconnectionConfig
    from iii.iii import III

    client = III("ws://127.0.0.1:1", InitOptions(reconnection_config=ReconnectionConfig(initial_delay_ms=60_000)))
    sent: list[str] = []

    async def send(frame: str, key: str | None = None, **_: object) -> bool:
        if key == "i1":
            raise RuntimeError("unforeseen")
        sent.append(frame)
        return True

    async def resend() -> tuple[BaseException | None, bool]:
        first = client._calls.add("i1", "f", timeout_ms=10_000, on_expire=lambda iid: None)
        second = client._calls.add("i2", "f", timeout_ms=10_000, on_expire=lambda iid: None)
        client._conn.send = send  # type: ignore[method-assign]
        await client._resend_in_turn([("i1", "f", "one"), ("i2", "f", "two")])
        client._calls.discard("i2")
        second.cancel()
        return first.exception(), "i1" in client._calls

    try:
        error, still_waiting = client._run_on_loop(resend())
    finally:
        client.shutdown()
    assert isinstance(error, RuntimeError) and not still_waiting
    assert sent == ["two"]
