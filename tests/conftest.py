"""Shared fixtures: an in-process engine (``engine``, ``engine_url``) and real ``iii-engine`` processes
(``engine_process``), each on a free port.

Example:
    async def test_something(engine: Engine) -> None:
        async with websockets.connect(engine.url) as ws: ...

    async def test_cli(engine_process) -> None:
        proc = await engine_process("--log-level", "DEBUG")
        async with websockets.connect(proc.url) as ws: ...
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.catalogue import DEFAULT_MODULES

ROOT = Path(__file__).resolve().parents[1]
READY_PREFIX = "iii engine listening on "

# Modules with their own listeners get port 0, so parallel test runs never collide on 3111/3112.
_OWN_PORT_MODULES = ("modules::stream::StreamModule", "modules::api::RestApiModule")


def engine_test_config(**overrides: object) -> EngineConfig:
    """The default module set, every listener on a free loopback port."""
    modules = [ModuleSpec(name, {"host": "127.0.0.1", "port": 0} if name in _OWN_PORT_MODULES else {})
               for name in DEFAULT_MODULES]
    return EngineConfig(host="127.0.0.1", port=0, modules=modules, **overrides)  # type: ignore[arg-type]




@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    """An in-process engine on a free port, default modules."""
    async with Engine(config=engine_test_config()) as running:
        yield running


@pytest.fixture
def engine_url(engine: Engine) -> str:
    """``ws://127.0.0.1:<port>`` of :func:`engine`."""
    return engine.url


@dataclass
class EngineProcess:
    """A running ``python -m iii_engine`` subprocess."""

    process: asyncio.subprocess.Process
    url: str
    stderr_path: Path

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        """Everything it logged so far."""
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture
async def engine_process(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[EngineProcess]]]:
    """Factory: ``await engine_process(*extra_args)`` starts an engine process on a free port and waits until
    it prints its ready line; every process is killed at teardown."""
    started: list[asyncio.subprocess.Process] = []

    async def start(*args: str, ready_within: float = 15.0) -> EngineProcess:
        stderr_path = tmp_path / f"engine-{len(started)}.log"
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": pythonpath}
        with stderr_path.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "iii_engine", "--port", "0", *args,
                stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env, cwd=ROOT)
        started.append(proc)
        assert proc.stdout is not None
        try:
            while True:
                line = (await asyncio.wait_for(proc.stdout.readline(), ready_within)).decode()
                if not line:
                    raise RuntimeError(f"iii-engine exited with {await proc.wait()}: {stderr_path.read_text()}")
                if line.startswith(READY_PREFIX):
                    return EngineProcess(proc, line[len(READY_PREFIX):].strip(), stderr_path)
        except TimeoutError:
            raise RuntimeError(f"iii-engine not ready after {ready_within} s: {stderr_path.read_text()}") from None

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
