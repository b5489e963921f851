"""``iii-engine --event-loop``: the engine process runs on the chosen loop and serves workers there; asking for
uvloop without it installed stops the start with one line naming the extra."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.packaging.helpers import command_line
from tests.packaging.test_extras import run_without

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: runs iii-engine processes")]


@pytest.mark.parametrize(("args", "loop_class"), [
    ((), "asyncio.unix_events._UnixSelectorEventLoop"),
    (("--event-loop", "asyncio"), "asyncio.unix_events._UnixSelectorEventLoop"),
    (("--event-loop", "uvloop"), "uvloop.Loop"),
])
async def test_engine_runs_and_routes_on_the_chosen_loop(engine_process: Callable[..., Awaitable[Any]],
                                                         args: tuple[str, ...], loop_class: str) -> None:
    pytest.importorskip("uvloop")
    proc = await engine_process(*args)
    # logged from inside the running loop: the type of the loop the engine really runs on
    assert f"event loop: {loop_class}\n" in proc.log()
    caller = await RawWorker.connect(proc.url)
    callee = await RawWorker.connect(proc.url)
    await callee.register("loop::echo")
    await callee.sync()
    call = asyncio.create_task(caller.call("loop::echo", {"v": 1}))
    await callee.serve_one({"echo": 1})
    assert (await call)["result"] == {"echo": 1}
    await caller.close()
    await callee.close()
    proc.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.process.wait(), 10) == 0


@pytest.mark.parametrize(("file_loop", "flag", "loop_class"), [
    ("uvloop", (), "uvloop.Loop"),
    ("uvloop", ("--event-loop", "asyncio"), "asyncio.unix_events._UnixSelectorEventLoop"),  # the flag wins
])
async def test_the_config_file_chooses_the_loop_unless_the_flag_does(
        engine_process: Callable[..., Awaitable[Any]], tmp_path: Path, file_loop: str, flag: tuple[str, ...],
        loop_class: str) -> None:
    pytest.importorskip("uvloop")
    config = tmp_path / "engine.yaml"
    config.write_text(f"event_loop: {file_loop}\nmodules: []\n")
    proc = await engine_process("--config", str(config), *flag)
    assert f"event loop: {loop_class}\n" in proc.log()
    proc.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.process.wait(), 10) == 0


def test_uvloop_missing_stops_the_start_with_one_line(tmp_path: Path) -> None:
    done = run_without(("uvloop",), [*command_line("iii-engine", "module"), "--port", "0", "--event-loop", "uvloop"],
                       tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr == ("iii-engine: the uvloop event loop needs the package 'uvloop': "
                           "pip install 'iii-toolkit[uvloop]'\n")
    assert "listening" not in done.stdout  # nothing started, no silent fall-back to asyncio
