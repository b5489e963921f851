"""``iii-engine logs | traces | metrics | health`` uses only the SDK's public API, and the public API it needs.

Why: the command called ``III._wait_until_connected`` and read ``client._conn.last_lost`` / ``last_error``: the SDK
had no public sync wait with a bound and no public word on why the last connection ended, so a change inside the
SDK could break the command with nothing in the SDK's own tests to say so. Now ``III.wait_until_connected(within)``,
``III.last_connection_error`` and ``III.last_connection_loss`` (ours) are public and tested here.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import socket
import time
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

import iii_engine.inspect_cli
from iii import InitOptions, ReconnectionConfig
from iii._cli import seconds
from iii.errors import ShuttingDownError
from iii.iii import III
from tests.integration.engine.test_inspect_hostile import _mute_after_handshake
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

FAST_RECONNECT = ReconnectionConfig(initial_delay_ms=20, max_delay_ms=200, jitter_factor=0.0)


def _private_sdk_uses(source: str) -> list[str]:
    """``client._x``, ``self.client._x`` and ``III._x`` in ``source``: the SDK's private names it reaches for."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        owner = node.value
        name = owner.attr if isinstance(owner, ast.Attribute) else owner.id if isinstance(owner, ast.Name) else ""
        if name in ("client", "III"):
            found.append(f"{ast.unparse(node)} (line {node.lineno})")
    return found


def test_the_inspect_cli_uses_only_the_sdks_public_api() -> None:
    source = Path(iii_engine.inspect_cli.__file__).read_text()
    assert _private_sdk_uses(source) == []


def test_the_check_sees_private_uses() -> None:
    assert _private_sdk_uses("self.client._conn.last_lost\nclient._wait_until_connected(1)\nself._left()") == [
        "self.client._conn (line 1)", "client._wait_until_connected (line 2)"]


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_wait_until_connected_fails_within_its_bound_naming_the_last_error() -> None:
    client = III(f"ws://127.0.0.1:{_refused_port()}", InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        began = time.monotonic()
        with pytest.raises(ConnectionError, match=r"within 0\.3 s"):
            client.wait_until_connected(0.3)
        assert 0.3 <= time.monotonic() - began < 2.0
        assert client.last_connection_error is not None and "refused" in client.last_connection_error.lower()
        assert client.last_connection_loss is None  # no connection was ever up
    finally:
        client.shutdown(close_timeout=0)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1"], ids=repr)
def test_wait_until_connected_refuses_what_the_async_wait_refuses(bad: object) -> None:
    client = III("ws://127.0.0.1:1", InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        with pytest.raises(ValueError, match=f"within must be a finite number of seconds >= 0, got {bad!r}"):
            client.wait_until_connected(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=f"within must be a finite number of seconds >= 0, got {bad!r}"):
            asyncio.run(client.wait_until_connected_async(bad))  # type: ignore[arg-type]
    finally:
        client.shutdown(close_timeout=0)


def test_wait_until_connected_after_shutdown_is_shutting_down() -> None:
    client = III("ws://127.0.0.1:1", InitOptions(reconnection_config=FAST_RECONNECT))
    client.shutdown(close_timeout=0)
    with pytest.raises(ShuttingDownError):
        client.wait_until_connected(1)


async def test_wait_until_connected_returns_once_the_engine_named_the_worker() -> None:
    async with _mute_after_handshake(name_the_worker=True) as (address, _):
        client = III(f"ws://{address}", InitOptions(reconnection_config=FAST_RECONNECT))
        try:
            await asyncio.to_thread(client.wait_until_connected, 5)
            assert client.get_connection_state() == "connected" and client.worker_id == "w-1"
        finally:
            await client.shutdown_async(close_timeout=0)


async def test_last_connection_loss_says_why_a_connection_that_was_up_ended() -> None:
    async def close_at_once(ws: ServerConnection) -> None:
        await ws.close(1011, "going away")

    async with serve(close_at_once, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        client = III(url, InitOptions(reconnection_config=FAST_RECONNECT))
        try:
            assert client.last_connection_loss is None
            await until(lambda: client.last_connection_loss is not None, within=5)
            assert "1011" in str(client.last_connection_loss) and "going away" in str(client.last_connection_loss)
        finally:
            await client.shutdown_async(close_timeout=0)


# ------------------------------------------------------------------------------- one parser of --…timeout SECONDS


@pytest.mark.parametrize(("value", "message"), [
    ("1e6", "must be at most 86400 seconds, got '1e6'"),  # inspect's own parser took any finite number
    ("1e-320", "must be a number of seconds from 0.001 up, got '1e-320'"),  # iii._cli.seconds took it
    ("0.0009", "must be a number of seconds from 0.001 up, got '0.0009'"),
    ("x", "must be a number of seconds from 0.001 up, got 'x'"),
])
def test_every_commands_timeout_is_read_by_one_parser(capsys: pytest.CaptureFixture[str], value: str,
                                                      message: str) -> None:
    with pytest.raises(SystemExit) as exited:
        iii_engine.inspect_cli.main(["health", "--timeout", value])
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"iii-engine: argument --timeout: {message} (see iii-engine --help)\n"
    with pytest.raises(argparse.ArgumentTypeError) as refused:  # what iii-channel and iii-streams use
        seconds(value)
    assert str(refused.value) == message


def test_the_bounds_themselves_are_accepted() -> None:
    assert iii_engine.inspect_cli.parse_args(["health", "--timeout", "0.001"]).timeout == 0.001
    assert iii_engine.inspect_cli.parse_args(["health", "--timeout", "86400"]).timeout == 86400.0
    assert seconds("0.001") == 0.001 and seconds("86400") == 86400.0
