"""A throwaway ``redis-server`` on a spare port that a test may stop and start again (Redis restart tests).

Append-only persistence is on, so data written before a stop is there after the next start; the directory is the
test's ``tmp_path``. Skips (fails under CI) when no ``redis-server`` binary is on ``PATH``.

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
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.services import unavailable

__all__ = ["PrivateRedis"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """One private ``redis-server``; ``with`` guarantees the process is killed at the end."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server binary not on PATH")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                     "--dir", str(directory), "--daemonize", "no", "--logfile", str(directory / "redis.log")]
        self._proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Start the server and return once it answers PING."""
        if self._proc is not None:
            raise RuntimeError("private redis-server is already running")
        self._proc = subprocess.Popen(self._cmd)  # noqa: ASYNC220 - returns at once; readiness is awaited below
        client = aioredis.Redis.from_url(self.url)
        try:
            for _ in range(200):
                try:
                    await client.ping()
                    return
                except RedisConnectionError:
                    await asyncio.sleep(0.025)  # polling a process that has no readiness signal
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
        self.kill()
