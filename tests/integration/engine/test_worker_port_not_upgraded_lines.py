"""Connections to the engine's port that never become a WebSocket are counted in one INFO line per interval, not
logged a line or two each by websockets.

Before: every such connection (bytes that are not HTTP, a TLS ClientHello, HTTP/1.0, a path answered 404, one closed
before its request) wrote websockets' "connection closed" line, and a refused one "connection rejected (…)" or "HTTP
response sent (…)" too: an attack's flood wrote 4,137 lines in 20 s. Upgraded connections keep websockets' lines.
"""

from __future__ import annotations

import json
import logging

import pytest
import websockets

from iii_engine import Engine, EngineConfig
from tests.not_upgraded import NOT_UPGRADED, sent_then_closed, websockets_lines
from tests.polling import until

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.our_engine("counts the connections to its port that never upgrade")]

async def test_connections_that_never_upgrade_are_counted_not_logged_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "iii_engine.server")
    rounds = 5
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as engine:
        listener = engine._listener
        for _ in range(rounds):
            for data in NOT_UPGRADED:
                await sent_then_closed(listener.port, data)
        async with websockets.connect(engine.url) as worker:  # upgraded: websockets' own lines stay
            assert json.loads(await worker.recv())["type"] == "workerregistered"
        expected = rounds * len(NOT_UPGRADED)
        # each is counted once its connection is closed on the engine's side, a loop turn or so after the client's
        await until(lambda: listener._not_upgraded.count >= expected, within=5)
        assert listener._not_upgraded.count == expected
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("iii_engine.server")]
    # before: 30 "connection closed", 20 refusals (505, 400, 404, 400) and the worker's two
    assert websockets_lines(messages) == ["connection open", "connection closed"], websockets_lines(messages)
    # nor a line of the engine's own per refused request (before: "refused … HTTP 404" each), nor an error (before:
    # "process_request failed" and a traceback for "//[x/", whose urlsplit raised)
    assert not [m for m in messages if m.startswith("refused ")], messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    counted = [m for m in messages if "closed without a WebSocket upgrade" in m]
    assert len(counted) == 2, counted  # the first at once, the rest at the end of the interval (the stop here)
    assert counted[0].startswith("1 connection(s)") and "latest: ('127.0.0.1'," in counted[0]
    assert counted[1].startswith(f"{expected - 1} connection(s)") and f"{expected} in all" in counted[1]
