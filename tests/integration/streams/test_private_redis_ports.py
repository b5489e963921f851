"""PrivateRedis under a second test process: its port taken before the server binds it (by a bare listener or by
another redis-server), or while it is stopped for a restart, or asked for by another bind to port 0."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.integration.streams.private_redis import PrivateRedis


@contextmanager
def listening_on(port: int) -> Iterator[socket.socket]:
    """A listener that accepts nothing and answers nothing, on ``port`` (as a server of another process would)."""
    with socket.socket() as taker:
        taker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers bind
        taker.bind(("127.0.0.1", port))
        taker.listen()
        yield taker


async def _answering_pid(url: str) -> int:
    client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        pid: int = (await client.info("server"))["process_id"]
        return pid
    finally:
        await client.aclose()


async def test_a_port_taken_before_the_first_start_moves_the_server_to_another(tmp_path: Path) -> None:
    # before: start() sent PING to the listener that took the port and failed on its read timeout
    with PrivateRedis(tmp_path) as server:
        taken = server.port
        with listening_on(taken):
            await asyncio.wait_for(server.start(), 15)
            assert server.port != taken and server.url == f"redis://127.0.0.1:{server.port}/0"
            assert await _answering_pid(server.url) > 0


async def test_another_redis_server_on_the_port_is_not_taken_for_ours(tmp_path: Path) -> None:
    # before: start() returned as soon as the other process's redis-server answered PING, and the test went on
    # against a server it neither owns nor can stop
    binary = shutil.which("redis-server")
    assert binary is not None  # PrivateRedis skips without it
    ours, elsewhere = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    elsewhere.mkdir()
    with PrivateRedis(ours) as server:
        taken = server.port
        theirs = subprocess.Popen([  # noqa: ASYNC220 - returns at once; readiness is awaited below
            binary, "--port", str(taken), "--bind", "127.0.0.1", "--save", "", "--dir", str(elsewhere),
            "--logfile", str(elsewhere / "redis.log")])
        try:
            for _ in range(200):
                with suppress(RedisError):
                    if await _answering_pid(f"redis://127.0.0.1:{taken}/0") == theirs.pid:
                        break
                await asyncio.sleep(0.025)  # polling a process that has no readiness signal
            else:
                pytest.fail("the other redis-server did not start")
            await asyncio.wait_for(server.start(), 15)
            assert await _answering_pid(server.url) != theirs.pid
            assert server.port != taken
        finally:
            theirs.kill()
            theirs.wait(10)


async def test_a_port_taken_while_stopped_fails_the_restart_at_once(tmp_path: Path) -> None:
    # before: the restart sent PING to the listener that took the port and failed on its read timeout
    with PrivateRedis(tmp_path) as server:
        await server.start()
        url = server.url
        server.stop()
        with listening_on(server.port), pytest.raises(RuntimeError, match=r"cannot restart: port \d+ was taken"):
            await asyncio.wait_for(server.start(), 15)
        assert server.url == url  # clients keep the address they were given


async def test_the_port_stays_reserved_while_the_server_is_stopped(tmp_path: Path) -> None:
    # before: nothing held the port once the server exited, so a bind to port 0 could be given it
    with PrivateRedis(tmp_path) as server:
        await server.start()
        server.stop()
        with socket.socket() as other, pytest.raises(OSError, match="Address already in use"):
            other.bind(("127.0.0.1", server.port))
        await server.start()  # and the restart still binds it
        assert await _answering_pid(server.url) > 0
    with socket.socket() as after:
        after.bind(("127.0.0.1", server.port))  # released at the end of the block
