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

from tests.unit.engine import test_cli_exit_hung_stores as hung_stores

# the hung-stores engine script of the SIGTERM test, given a configuration file too (its third argument)
_SCRIPT = hung_stores._SCRIPT.replace('"--event-loop", sys.argv[1]]',
                                                  '"--event-loop", sys.argv[1], "--config", sys.argv[2]]')
assert "--config" in _SCRIPT


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
        ended = subprocess.run([sys.executable, "-c", _SCRIPT, loop, str(config)], capture_output=True, text=True,
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
