"""``caplog`` (tests/conftest.py) starts after earlier tests' garbage is collected: a task one test leaves pending
is destroyed whenever the collector next runs, and its "Task was destroyed but it is pending!" ERROR must not land
in a later test's records (it failed a log test at the dependency floors, where pytest-asyncio leaves such tasks)."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest


class _Cycle:
    def __init__(self) -> None:
        self.me = self  # only the cycle collector frees it, at a time no test chooses
        self.task = asyncio.get_running_loop().create_task(asyncio.Event().wait())


async def test_a_test_leaves_a_pending_task_in_a_cycle() -> None:
    left = _Cycle()
    await asyncio.sleep(0)
    assert not left.task.done()


async def test_the_next_tests_records_hold_none_of_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    gc.collect()  # before: the first test's task destroyed here, one asyncio ERROR record
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
