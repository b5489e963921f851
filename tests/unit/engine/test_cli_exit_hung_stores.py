"""``iii-engine`` stopped by SIGTERM while its stores' closes never return (their library swallows the cancel): it
exits 0 within the store-close and exit bounds, each hung close named in a warning, the stragglers by what they are."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import iii_streams
    from iii_engine import cli, closing, event_loop

    closing.STORE_CLOSE_TIMEOUT_S = 0.5
    event_loop.EXIT_WAIT_S = 0.5

    async def stubborn_close(self) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    iii_streams.MemoryStream.aclose = stubborn_close
    sys.exit(cli.main(["--port", "0", "--event-loop", sys.argv[1]]))
""")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_sigterm_with_hung_store_closes_exits_0_in_bounds_naming_them(loop: str) -> None:
    engine = subprocess.Popen([sys.executable, "-c", _SCRIPT, loop], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert engine.stdout is not None
        assert engine.stdout.readline().startswith("iii engine listening on ws://")
        began = time.monotonic()
        engine.send_signal(signal.SIGTERM)
        _, err = engine.communicate(timeout=20)
    finally:
        engine.kill()
    took = time.monotonic() - began
    assert engine.returncode == 0, err
    for name in ("state", "stream"):
        assert f"the {name} module's store (MemoryStream) did not end within 0.5 s; cancelled and let go" in err
    assert ("2 task(s) did not end within 0.5 s of their cancel at exit and were left: "
            "the state module's store (MemoryStream), the stream module's store (MemoryStream)") in err
    assert took < 10, took
