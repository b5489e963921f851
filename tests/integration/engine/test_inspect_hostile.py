"""``iii-engine logs | traces | metrics | health`` against servers that are not (well-behaved) engines.

Why: the ``--timeout`` lines printed the raw ``--url`` (``ws://admin:s3cret@host`` on stderr); a server that completed
the handshake and then said nothing held ``--timeout 0.5`` for 4.9 s (the SDK's 2 s wait for a worker id, the call,
then 2 s for an answer to the close); a refused port at ``--timeout 0.5`` was "did not complete" with no cause; an
answer of the wrong shape ("garbage", null, ``{"spans": "x"}``) printed a traceback; ``--timeout -inf`` was argparse's
"expected one argument" and ``1e-320`` printed "within 9.99989e-321 s".

The commands run in-process (``main``) so the wall times measure the command, not the interpreter's start.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from iii_engine.inspect_cli import main

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_NAMED = json.dumps({"type": "workerregistered", "worker_id": "w-1"})


def _text_frame(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 126
    return bytes([0x81, len(data)]) + data


@asynccontextmanager
async def _mute_after_handshake(name_the_worker: bool, drop: bool = False) -> AsyncIterator[tuple[str, int]]:
    """A server that completes the WebSocket handshake (and names the worker if asked), then reads nothing and
    answers nothing, not even a Close (``drop``: drops the TCP connection at once); its URL without scheme and its
    port."""
    done = asyncio.Event()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept_key = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept_key + b"\r\n\r\n")
        if name_the_worker:
            writer.write(_text_frame(_NAMED))
        if drop:
            await writer.drain()
            writer.transport.abort()
            return
        await done.wait()
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", server.sockets[0].getsockname()[1]
    finally:
        done.set()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def _answering(result: Any) -> AsyncIterator[str]:
    """A server that names the worker and answers every call with ``result``; its ws:// URL."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send(_NAMED)
        async for raw in ws:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("type") == "invokefunction" and "invocation_id" in message:
                await ws.send(json.dumps({"type": "invocationresult", "invocation_id": message["invocation_id"],
                                          "function_id": message["function_id"], "result": result}))

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"


def _refused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str, float]:
    """``main(argv)`` in a thread (the servers run on this loop): exit status, stdout, stderr, seconds taken."""
    capsys.readouterr()
    started = time.monotonic()
    code = await asyncio.wait_for(asyncio.to_thread(main, list(argv)), 20)
    took = time.monotonic() - started
    captured = capsys.readouterr()
    return code, captured.out, captured.err, took


# ------------------------------------------------------------------------------------------------- secrets


async def test_a_password_or_token_in_the_url_never_reaches_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    port = _refused_port()
    for url, shown in ((f"ws://admin:s3cret@127.0.0.1:{port}", f"ws://admin:***@127.0.0.1:{port}"),
                       (f"ws://127.0.0.1:{port}/?token=s3cret", f"ws://127.0.0.1:{port}/?token=***")):
        code, _, err, _ = await _run(capsys, "health", "--url", url, "--timeout", "0.3")  # the timeout line
        assert code == 1 and "s3cret" not in err and err.startswith(f"iii-engine health: {shown}: "), err
    async with _mute_after_handshake(name_the_worker=True) as (address, _):  # the call's timeout line
        code, _, err, _ = await _run(capsys, "metrics", "--url", f"ws://bot:s3cret@{address}", "--timeout", "0.3")
    assert code == 1 and "s3cret" not in err, err
    assert err == f"iii-engine metrics: ws://bot:***@{address}: engine::metrics::list got no answer within 0.3 s " \
                  "(--timeout)\n"


# ------------------------------------------------------------------------------------------------- one deadline


@pytest.mark.parametrize("name_the_worker", [False, True], ids=["never-names-the-worker", "names-the-worker"])
async def test_a_server_silent_after_the_handshake_holds_the_command_about_the_timeout(
        capsys: pytest.CaptureFixture[str], name_the_worker: bool) -> None:
    # It answers neither the call nor the close. Before: 2 s for a worker id + the call + 2 s for the close
    # (5.0 s and 3.0 s here); now the worker id and the call share --timeout, and the close gets CLOSE_WAIT_S.
    async with _mute_after_handshake(name_the_worker) as (address, _):
        code, _, err, took = await _run(capsys, "health", "--url", f"ws://{address}", "--timeout", "1")
    assert code == 1
    assert err.startswith(f"iii-engine health: ws://{address}: engine::health::check got no answer within 1 s "
                          "(--timeout)"), err
    assert ("never named this worker" in err) is not name_the_worker, err
    assert took < 1 + 1.0, took  # the close's 0.25 s (CLOSE_WAIT_S) and a loaded machine's slack


# ------------------------------------------------------------------------------------------------- causes


async def test_a_refused_port_under_a_short_timeout_names_the_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    port = _refused_port()
    code, _, err, _ = await _run(capsys, "health", "--url", f"ws://127.0.0.1:{port}", "--timeout", "0.3")
    assert code == 1
    assert err.startswith(f"iii-engine health: ws://127.0.0.1:{port}: the connection and WebSocket handshake did not "
                          "complete within 0.3 s (--timeout); last attempt: "), err
    assert "refused" in err.lower(), err


async def test_a_server_that_drops_the_connection_after_the_handshake_is_not_said_to_miss_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    # Each connection is up and lost before the SDK's wait looks: it used to say the handshake did not complete.
    async with _mute_after_handshake(name_the_worker=True, drop=True) as (address, _):
        code, _, err, _ = await _run(capsys, "health", "--url", f"ws://{address}", "--timeout", "0.5")
    assert code == 1 and err.count("\n") == 1, err
    assert "did not complete" not in err and "lost" in err, err


# ------------------------------------------------------------------------------------------------- answers


@pytest.mark.parametrize("argv, call, result, part", [
    (["health"], "engine::health::check", "garbage", "'garbage'"),
    (["health"], "engine::health::check", None, "None"),
    (["health"], "engine::health::check", {"status": 5}, "status = 5"),
    (["health"], "engine::health::check", {"status": "ok", "components": {"db": 1}}, "components.db = 1"),
    (["health", "--json"], "engine::health::check", [1, 2], "[1, 2]"),
    (["metrics"], "engine::metrics::list", 42, "42"),
    (["metrics"], "engine::metrics::list", {"sdk_metrics": "x"}, "sdk_metrics = 'x'"),
    (["metrics"], "engine::metrics::list", {"engine_metrics": {"invocations": []}}, "engine_metrics.invocations = []"),
    (["logs"], "engine::logs::list", [1, 2], "[1, 2]"),
    (["logs"], "engine::logs::list", {"logs": "x"}, "logs = 'x'"),
    (["logs"], "engine::logs::list", {"logs": [1]}, "logs = [1]"),
    (["traces", "--list"], "engine::traces::list", {"spans": "x"}, "spans = 'x'"),
    (["traces"], "engine::traces::list", {"spans": [{"name": "no id"}]}, "spans[0].trace_id = None"),
    (["traces", "T"], "engine::traces::tree", {"roots": [{"children": "x"}]}, "roots[0].children = 'x'"),
    (["traces", "T"], "engine::traces::tree", "garbage", "'garbage'"),
])
async def test_an_answer_of_the_wrong_shape_is_one_line(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                        call: str, result: Any, part: str) -> None:
    async with _answering(result) as url:
        code, _, err, _ = await _run(capsys, *argv, "--url", url, "--timeout", "5")
    assert code == 1
    assert err == f"iii-engine {argv[0]}: the engine's answer to {call} is not what this command reads: {part}\n"


# ------------------------------------------------------------------------------------------------- --timeout values


@pytest.mark.parametrize("value", ["-inf", "-1e5", "-nan", "1e-320", "0.0009", "0", "-1", "nan", "inf", "x"])
def test_a_bad_timeout_is_the_same_one_line_usage_error(capsys: pytest.CaptureFixture[str], value: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["health", "--timeout", value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == ("iii-engine: argument --timeout: must be a number of seconds from 0.001 up, got "
                   f"{value!r} (see iii-engine --help)\n"), err
