"""A channel writer's socket leaves the process's allocator as it is (its tuning is for received payloads, and the
first one costs a ``ctypes`` import, ~1 ms of the writer's CPU); a reader's socket tunes it as before."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from iii import ws_fastpath
from iii.channels import ChannelReader, ChannelWriter

OPTS: dict[str, Any] = {"ping_interval": None, "compression": None, "max_size": None}
REF = {"channel_id": "c1", "access_key": "k", "direction": "write"}


@pytest.fixture
def tunings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The calls of ``tune_allocator`` from here on, as if no channel socket had opened in this process yet."""
    calls: list[str] = []

    def tune(*args: Any, **kwargs: Any) -> str:
        calls.append("tune")
        return "tuned"

    monkeypatch.setattr(ws_fastpath, "ALLOCATOR_STATE", None)
    monkeypatch.setattr(ws_fastpath, "tune_allocator", tune)
    return calls


async def test_a_writer_socket_leaves_the_allocator_and_a_reader_socket_tunes_it(tunings: list[str]) -> None:
    received: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and "dir=read" in ws.request.path:
            await ws.send(b"r" * 200_000)
            return
        async for message in ws:
            received.append(len(message))

    async with serve(handler, "127.0.0.1", 0, **OPTS) as server:  # type: ignore[arg-type]
        base = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        writer = ChannelWriter(base, REF)
        await writer.write(b"w" * 300_000)
        await writer.close_async()
        assert sum(received) == 300_000
        assert tunings == []  # before: the writer's socket tuned it (and imported ctypes) as it opened
        assert ws_fastpath.ALLOCATOR_STATE is None

        reader = ChannelReader(base, {**REF, "direction": "read"})
        assert len(await reader.read_all()) == 200_000
        assert tunings == ["tune"]
        assert ws_fastpath.ALLOCATOR_STATE == "tuned"


def test_the_factory_of_a_socket_that_only_sends() -> None:
    assert ws_fastpath.client_factory() is ws_fastpath.FastClientConnection
    sending = ws_fastpath.client_factory(receives_data=False)
    assert sending is ws_fastpath.FastSendingClientConnection
    assert issubclass(sending, ws_fastpath.FastClientConnection)
