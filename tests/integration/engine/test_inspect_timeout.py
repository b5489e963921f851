"""``iii-engine health | logs | traces | metrics`` against an address that never answers: bounded by ``--timeout``.

Why: against a server that accepted TCP and said nothing, ``iii-engine health`` waited for the SDK's 30 s connect
bound (two 10 s opening handshakes) and failed after 31 s; one that completed the WebSocket handshake and never
answered a call held it for the SDK's call timeout. Now ``--timeout`` (default 5 s) bounds the connection and
handshake, then each call, and the error is one line naming the address and what timed out.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve

from iii_engine.inspect_cli import parse_args
from tests.conftest import ROOT


async def _cli(*args: str) -> tuple[int, str, float]:
    """Run ``python -m iii_engine ARGS``: its exit status, its stderr and how long it took (at most 20 s)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "iii_engine", *args, env=env, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode(), time.monotonic() - started


@asynccontextmanager
async def _silent_tcp() -> AsyncIterator[str]:
    """A TCP server that accepts and never answers; its ws:// URL."""
    done = asyncio.Event()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        done.set()
        server.close()
        await server.wait_closed()


def test_the_default_timeout_is_at_most_ten_seconds() -> None:
    assert 0 < parse_args(["health"]).timeout <= 10


async def test_a_server_that_accepts_tcp_and_never_answers_fails_within_the_timeout() -> None:
    async with _silent_tcp() as url:
        code, err, took = await _cli("health", "--url", url, "--timeout", "0.5")
    assert code == 1, err
    assert err == (f"iii-engine health: {url}: the connection and WebSocket handshake did not complete within 0.5 s "
                   "(--timeout)\n")
    assert took < 8, took  # the interpreter's start and the SDK's import are most of it


async def test_an_engine_that_never_answers_a_call_fails_within_the_timeout() -> None:
    async def never_answer(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(never_answer, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        code, err, took = await _cli("metrics", "--url", url, "--timeout", "0.5")
    assert code == 1, err
    # (it accepts the upgrade and never names the worker: the line says so, not only that the call timed out)
    assert err == (f"iii-engine metrics: {url}: engine::metrics::list got no answer within 0.5 s (--timeout); the "
                   "server completed the WebSocket handshake but never named this worker (no workerregistered): is it "
                   "an iii engine's worker port?\n")
    assert took < 8, took


@pytest.mark.parametrize(("argv", "env"), [(["health", "--url", "http://x"], {}), (["health"], {"III_URL": "garbage"})])
def test_a_bad_url_is_a_usage_error(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    # before: exit 1, as for an engine that cannot be reached; every other usage error exits with 2
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "argument --url: engine URL" in line and "expected ws:// or wss://" in line, line
