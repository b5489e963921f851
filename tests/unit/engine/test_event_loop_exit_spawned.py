"""``iii_engine.event_loop.run``'s bounded exit also covers what the exit itself starts: a task started by one ending
on its cancel, and an async generator ``main`` left open whose ``finally`` never returns (both held the process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

_HEAD = textwrap.dedent("""
    import asyncio, logging, sys
    from iii_engine import event_loop

    logging.basicConfig(level=logging.WARNING)
    event_loop.EXIT_WAIT_S = 0.3

    async def stubborn() -> None:
        while True:  # a store's close that swallows every cancel
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
""")

_SPAWNED = _HEAD + textwrap.dedent("""
    async def closes_on_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        finally:  # a bounded close runs its work as a task of its own
            asyncio.get_running_loop().create_task(stubborn(), name="close-started-on-cancel")

    async def main() -> str:
        asyncio.get_running_loop().create_task(closes_on_cancel(), name="module")
        await asyncio.sleep(0)
        return "main done"

    print(event_loop.run(main(), sys.argv[1]), flush=True)
""")

_ASYNCGEN = _HEAD + textwrap.dedent("""
    async def rows():
        try:
            yield 1
            yield 2
        finally:
            await stubborn()

    async def main() -> str:
        main.rows = rows()  # type: ignore[attr-defined]
        await main.rows.__anext__()  # type: ignore[attr-defined]
        return "main done"

    print(event_loop.run(main(), sys.argv[1]), flush=True)
""")


def _run(script: str, loop: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script, loop], capture_output=True, text=True, timeout=12)
    return done, time.monotonic() - started


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_task_started_by_a_cancelled_one_does_not_hold_the_exit(loop: str) -> None:
    done, took = _run(_SPAWNED, loop)
    assert (done.returncode, done.stdout) == (0, "main done\n"), done.stderr
    assert ("1 task(s) did not end within 0.3 s of their cancel at exit and were left: close-started-on-cancel"
            in done.stderr)
    assert took < 8


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_async_generator_whose_finally_never_returns_does_not_hold_the_exit(loop: str) -> None:
    done, took = _run(_ASYNCGEN, loop)
    assert (done.returncode, done.stdout) == (0, "main done\n"), done.stderr
    assert "the async generators left open did not close within 0.3 s at exit and were left" in done.stderr
    assert took < 8


def test_a_failure_while_closing_is_reported_once_and_mains_error_wins() -> None:
    script = _HEAD + textwrap.dedent("""
        async def fails_on_cancel() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                raise RuntimeError("cleanup failed")

        async def main() -> None:
            asyncio.get_running_loop().create_task(fails_on_cancel(), name="fails-on-cancel")
            asyncio.get_running_loop().create_task(stubborn(), name="stubborn")
            await asyncio.sleep(0)
            raise SystemExit(3)

        event_loop.run(main(), sys.argv[1])
    """)
    done, _ = _run(script, "asyncio")
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("RuntimeError: cleanup failed") == 1
    assert "were left: stubborn" in done.stderr
