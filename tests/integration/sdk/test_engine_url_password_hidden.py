"""An engine URL with a password in it (``ws://user:password@host``) never shows that password: not in the error a
caller gets, not in the SDK's log lines about the connection."""

from __future__ import annotations

import logging
import socket

import pytest

from iii import III, InitOptions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_engine_url_keeps_its_password_out_of_errors_and_logs(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="iii")
    url = f"ws://bot:s3cret@127.0.0.1:{_free_port()}"
    client = III(url, InitOptions(otel={"enabled": False}))
    try:
        with pytest.raises(ConnectionError) as info:
            await client.wait_until_connected_async(1.0)
    finally:
        await client.shutdown_async()
    assert "bot:***@127.0.0.1" in str(info.value)
    assert "s3cret" not in str(info.value)
    shown = [record.getMessage() for record in caplog.records]
    assert any("bot:***@127.0.0.1" in line for line in shown), shown  # the connection was logged, masked
    assert not [line for line in shown if "s3cret" in line]
