"""Waiting for a condition no event reports (engine-side counters, tables): poll it, with a deadline.

Example::

    await until(lambda: not engine.invocations.pending)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Return once ``condition()`` holds; fail the test if it does not within ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, f"condition not met within {within} s"
        await asyncio.sleep(0.005)
