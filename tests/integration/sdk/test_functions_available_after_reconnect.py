"""``on_functions_available`` after a reconnect whose old connection the engine still held (a host gone without a
close, seen only by keepalive): a change made while the worker was away was pushed to the old connection, and the
re-registration changed nothing the engine compares, so the callbacks kept the old list until some later change
(still stale 3 s after the reconnect in the attack). The client now reads the list once after a reconnect and hands
it on when it differs."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import pytest
from polling import until

from iii import III, InitOptions, ReconnectionConfig
from iii.iii_types import FunctionInfo
from iii_engine import Engine

pytestmark = pytest.mark.timeout(30)


@dataclass
class HalfRelay:
    """A TCP relay whose :meth:`cut_client` resets only the client's side: the engine's side stays open and silent."""

    target_port: int
    pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[bool]]] = field(default_factory=list)
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        dead = [False]
        self.pairs.append((writer, up_writer, dead))
        for pump in (self._pump(reader, up_writer, dead), self._pump(up_reader, writer, dead)):
            task = asyncio.ensure_future(pump)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, dead: list[bool]) -> None:
        try:
            while data := await src.read(65536):
                if not dead[0]:
                    dst.write(data)
                    await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not dead[0]:
                dst.transport.abort()

    def cut_client(self) -> None:
        for client, _, dead in self.pairs:
            if not dead[0]:
                dead[0] = True
                client.transport.abort()

    def close(self) -> None:
        for client, up, _ in self.pairs:
            client.transport.abort()
            up.transport.abort()
        if self.server is not None:
            self.server.close()


async def test_a_change_made_while_the_listener_was_away_reaches_its_callback() -> None:
    async with Engine(port=0) as engine:
        relay = HalfRelay(engine.port)
        await relay.start()
        seen: list[list[str]] = []
        lock = threading.Lock()

        def callback(functions: list[FunctionInfo]) -> None:
            with lock:
                seen.append(sorted(f.function_id for f in functions if f.function_id.startswith("half::")))

        # (reconnecting after the engine's debounced push went out: to the old connection)
        slow = ReconnectionConfig(initial_delay_ms=600, max_delay_ms=600, jitter_factor=0.0)
        listener = III(relay.url, InitOptions(worker_name="listener", reconnection_config=slow))
        other = III(engine.url, InitOptions(worker_name="other"))
        try:
            await listener.connect_async()
            await other.connect_async()
            listener.on_functions_available(callback)
            await until(lambda: len(engine.registry.triggers_of_type("engine::functions-available")) == 1)
            other.register_function("half::a", lambda data: data)
            await until(lambda: bool(seen) and seen[-1] == ["half::a"])
            old_worker = listener.worker_id
            relay.cut_client()  # the listener's side is gone; the engine still holds the old connection
            other.register_function("half::b", lambda data: data)
            # the engine has taken the change as its new set and pushed it, to the old connection
            snapshot = lambda: engine.modules["worker"]._snapshot or []  # noqa: E731
            await until(lambda: "half::b" in snapshot())
            assert listener.worker_id in (None, old_worker)  # (not back yet: the push went to the old connection)
            await until(lambda: listener.worker_id not in (None, old_worker))
            assert old_worker in engine.workers  # (still held: the case this is about)
            await until(lambda: seen[-1] == ["half::a", "half::b"])
        finally:
            await listener.shutdown_async()
            await other.shutdown_async()
            relay.close()
