"""A throwaway ``redis-server`` on a spare port that a test may stop and start again (Redis restart tests).

Append-only persistence is on, so data written before a stop is there after the next start; the directory is the
test's ``tmp_path``. Skips (fails under CI) when no ``redis-server`` binary is on ``PATH``.

The port: ``redis-server --port 0`` turns TCP off rather than binding a port the kernel picks, and a port found free
and closed may be another test process's by the time the server binds it. So the port stays reserved
(:func:`tests.ports.reserve_port`) from the constructor to the end of the ``with`` block, across stops, and a first
start that finds it taken anyway moves to a new one (``url`` is final once the first ``start()`` returns). A restart
that finds it taken raises ``RuntimeError`` at once: clients were given the old URL.

Example:
    async def test_x(tmp_path: Path) -> None:
        with PrivateRedis(tmp_path) as server:
            await server.start()
            ...                     # use server.url
            server.stop()           # Redis is down
            await server.start()    # and back, with its data
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.ports import reserve_port
from tests.services import unavailable

__all__ = ["PrivateRedis"]

# first starts that find their port taken before the server is given another one
_PORT_ATTEMPTS = 5


class PrivateRedis:
    """One private ``redis-server``; ``with`` guarantees the process is killed and its port released at the end.

    ``_cmd`` is the command line without its ``--port`` (tests append options to it before the first start).
    """

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server binary not on PATH")
        self._log = directory / "redis.log"
        self._cmd = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                     "--dir", str(directory), "--daemonize", "no", "--logfile", str(self._log)]
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        self._reserved = reserve_port()
        self.port: int = self._reserved.getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start the server and return once it answers PING (and is the process that answers)."""
        if self._proc is not None:
            raise RuntimeError("private redis-server is already running")
        for _ in range(_PORT_ATTEMPTS):
            if await self._started():
                self._started_once = True
                return
            if self._started_once:
                raise RuntimeError(f"private redis-server cannot restart: port {self.port} was taken while it was "
                                   f"stopped (its clients were given {self.url})")
            self._reserved.close()
            self._reserved = reserve_port()
            self.port = self._reserved.getsockname()[1]
        raise RuntimeError(f"private redis-server found its port taken {_PORT_ATTEMPTS} times")

    async def _started(self) -> bool:
        """Run the server on ``self.port`` until it answers: False when it exits because the port is taken."""
        logged = self._log.stat().st_size if self._log.exists() else 0
        proc = self._proc = subprocess.Popen([*self._cmd, "--port", str(self.port)])  # noqa: ASYNC220 - returns at once
        # timeouts: whatever else may listen on the port must not hold the wait
        client = aioredis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            for _ in range(200):
                if proc.poll() is not None:
                    self._proc = None
                    with self._log.open("rb") as log:
                        log.seek(logged)
                        said = log.read().decode(errors="replace")
                    taken = f"127.0.0.1:{self.port}: bind: Address already in use"
                    if any(taken in line and "TCP" in line for line in said.splitlines()):
                        return False
                    raise RuntimeError(f"private redis-server exited with {proc.returncode}: {said[-2000:]}")
                try:
                    # another test process's redis-server may hold the port: only ours counts
                    if (await client.info("server")).get("process_id") == proc.pid:
                        return True
                except RedisError:
                    pass
                await asyncio.sleep(0.025)  # polling a process that has no readiness signal
            self.kill()
            raise RuntimeError(f"private redis-server on port {self.port} did not start")
        finally:
            await client.aclose()

    def stop(self) -> None:
        """SIGTERM: redis-server flushes its append-only file and exits; waits for the exit."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(10)

    def kill(self) -> None:
        """Kill the server if it runs (teardown)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.kill()
        finally:
            self._reserved.close()
