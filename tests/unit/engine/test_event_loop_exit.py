"""``iii_engine.event_loop.run`` ends within a bound when ``main`` leaves a task that ignores its cancel."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

_SCRIPT = textwrap.dedent("""
    import asyncio, logging
    from iii_engine import event_loop

    logging.basicConfig(level=logging.WARNING)
    event_loop.EXIT_WAIT_S = 0.3

    async def stubborn() -> None:
        while True:  # a store's close that swallows every cancel
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    async def polite() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            print("polite ended", flush=True)

    async def main() -> str:
        asyncio.get_running_loop().create_task(stubborn(), name="stubborn-close")
        asyncio.get_running_loop().create_task(polite(), name="polite")
        await asyncio.sleep(0)
        return "main done"

    print(event_loop.run(main()), flush=True)
""")


def test_a_task_that_ignores_its_cancel_does_not_hold_the_exit() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=15)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["polite ended", "main done"]
    assert "1 task(s) did not end within 0.3 s of their cancel at exit and were left: stubborn-close" in done.stderr
    assert took < 12


def test_a_clean_exit_is_quiet() -> None:
    script = ("from iii_engine import event_loop\nimport asyncio\nasync def main():\n    return 7\n"
              "print(event_loop.run(main()))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=25)
    assert (done.returncode, done.stdout, done.stderr) == (0, "7\n", "")
