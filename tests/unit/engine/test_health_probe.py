"""A health probe answers within its bound even when what it probes does not end at its cancel (a SQLite opening in
aiosqlite's thread ends only with its statement: a check that awaited the cancel answered after another process's
15 s lock, not within 2 s)."""

from __future__ import annotations

import asyncio
import time

import pytest

from iii_engine.modules import health


async def _stubborn(ended: asyncio.Event) -> None:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(1.5)  # ends its cancel in its own time
        ended.set()
        raise


async def test_a_probe_whose_check_ignores_its_cancel_still_answers_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "PROBE_TIMEOUT_S", 0.2)
    ended = asyncio.Event()
    started = time.monotonic()
    found = await health.probe(_stubborn(ended), adapter="sqlite")
    took = time.monotonic() - started
    assert found == {"status": "unhealthy", "details": {"adapter": "sqlite", "error": "no answer within 0.2 s"}}
    assert took < 1.0, took
    await asyncio.wait_for(ended.wait(), 5)  # and the check was told to stop, and did


async def test_a_module_whose_health_hangs_is_one_unhealthy_component(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "PROBE_TIMEOUT_S", 0.2)
    ended = asyncio.Event()

    class Stuck:
        name = "stuck"

        async def health(self) -> dict[str, health.Component]:
            await _stubborn(ended)
            return {}

    started = time.monotonic()
    found = await health.modules_health([Stuck()])  # type: ignore[list-item]
    assert time.monotonic() - started < 1.2
    assert found["stuck"]["status"] == "unhealthy" and "did not answer" in found["stuck"]["details"]["error"]
    await asyncio.wait_for(ended.wait(), 5)
