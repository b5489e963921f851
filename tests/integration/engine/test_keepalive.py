"""The engine turns TCP keepalive on for the connections it accepts, workers' and channel ends' alike, so that a peer
that vanished without closing (a host lost, a partition) is noticed within about a minute. Before, nothing did: the
engine never pings its workers, and such a connection kept its registrations for good (brought back when the
worker's new connection unregistered the same ids)."""

from __future__ import annotations

import socket

import pytest

from iii_engine import Engine
from iii_engine.keepalive import IDLE_S, INTERVAL_S, PROBES

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: the engine's sockets")]


def _options(sock: socket.socket) -> tuple[int, ...]:
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0,
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="the platform has no TCP_KEEPIDLE")
async def test_accepted_connections_have_tcp_keepalive(engine: Engine) -> None:
    worker = await RawWorker.connect(engine.url)
    await worker.sync()
    connections = list(engine._listener._connections)
    assert len(connections) == 1
    sock = connections[0].transport.get_extra_info("socket")
    assert _options(sock) == (True, IDLE_S, INTERVAL_S, PROBES)  # before: (False, 7200, 75, 9), the kernel's
    await worker.close()
