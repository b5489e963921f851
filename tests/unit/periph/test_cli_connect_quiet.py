"""``iii-channel``'s first connection: when it fails, the client's reconnection attempts are stopped while their
log messages are still hidden, so the command's error stays one line."""

from __future__ import annotations

import argparse
import logging
import socket

import pytest

from iii.iii import III
from iii_channels import cli


async def test_a_failed_first_connection_stops_the_attempts_before_unhiding_their_messages(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = III(f"ws://127.0.0.1:{port}")
    try:
        with caplog.at_level(logging.INFO, logger="iii.connection"), pytest.raises(ConnectionError):
            await cli._connect(client, argparse.Namespace(connect_timeout=0.3))
        assert client.get_connection_state() == "disconnected"  # not "reconnecting": nothing left to log
        assert not [r for r in caplog.records if "failed" in r.getMessage()]
    finally:
        await client.shutdown_async()
