"""``iii-engine`` given SIGTERM while a module's start waits on a silent peer (a store's open, a Redis subscription
that is never confirmed): it should end the start (``Engine.stop()`` during the start gives the module start under
way ``MODULE_START_WAIT_S``, then cancels it) and exit within the stop's bounds.

Before: the CLI's signal handler only set an event that was awaited once ``engine.start()`` returned: a SIGTERM
during the start waited for the whole start (each module's own bounds, e.g. a pubsub Redis subscription's 10 s,
one module after another; for good when a start never ends), and only then stopped.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from iii_engine import cli, closing
    from iii_engine.modules.state.module import StateModule

    closing.MODULE_START_WAIT_S = 0.5

    async def silent_start(self) -> None:  # a store open that never gets an answer
        print("state module starting", flush=True)
        await asyncio.get_running_loop().create_future()

    StateModule.start = silent_start
    sys.exit(cli.main(["--port", "0"]))
""")


def test_sigterm_while_a_module_start_hangs_exits_within_the_bounds() -> None:
    engine = subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert engine.stdout is not None
        assert engine.stdout.readline() == "state module starting\n"
        began = time.monotonic()
        engine.send_signal(signal.SIGTERM)
        try:
            engine.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("iii-engine still running 10 s after SIGTERM during its start")
        took = time.monotonic() - began
    finally:
        engine.kill()
        engine.communicate()
    assert engine.returncode in (0, 1)
    assert took < 8, took
