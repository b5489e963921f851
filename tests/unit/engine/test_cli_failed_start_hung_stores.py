"""``iii-engine`` whose start fails (the stream module cannot bind its port) while the stores' closes never return
(their library swallows the cancel): it exits 1 within the store-close and exit bounds, the start error on one line
after the warnings naming each hung close, and nothing after it.

Before: each let-go close was reported once more at the interpreter's end, four lines of "Task was destroyed but it
is pending!" and its repr after the start error (they had already been named in the exit warning).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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
    sys.exit(cli.main(["--port", "0", "--config", sys.argv[1], "--event-loop", sys.argv[2]]))
""")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_failed_start_with_hung_store_closes_exits_1_with_the_error_last(loop: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = tmp_path / "config.yaml"
        config.write_text(textwrap.dedent(f"""
            modules:
              - class: modules::state::StateModule
              - class: modules::stream::StreamModule
                config: {{host: 127.0.0.1, port: {taken.getsockname()[1]}}}
        """))
        began = time.monotonic()
        ended = subprocess.run([sys.executable, "-c", _SCRIPT, str(config), loop], capture_output=True, text=True,
                               timeout=20)
        took = time.monotonic() - began
    assert ended.returncode == 1, ended.stderr
    lines = ended.stderr.splitlines()
    assert lines[-1].startswith("iii-engine: module modules::stream::StreamModule cannot start: "), ended.stderr
    assert "address already in use" in lines[-1]
    for name in ("state", "stream"):
        assert f"the {name} module's store (MemoryStream) did not end within 0.5 s; cancelled and let go" in (
            ended.stderr)
    assert "Task was destroyed" not in ended.stderr
    assert took < 10, took
