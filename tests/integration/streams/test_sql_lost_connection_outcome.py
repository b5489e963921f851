"""SQLStream, when its database connection fails under a write, or another writer holds SQLite's lock:

- PostgreSQL, the connection cut after the write's COMMIT reached the server (which committed it) and before the
  answer came back: the caller's ``StreamUnavailableError`` says the write had been sent and may have been applied
  (``applied is None``); a write that never reached the server says it was not applied (``applied is False``).
  Before: both read "database unreachable: connection was closed in the middle of operation", ``applied`` unset.
- SQLite, another process holding ``BEGIN EXCLUSIVE``: a ``set`` with ``timeout=1`` fails within about 1 s with
  ``applied is False``, and the store writes again at once when the file is free (a guard: this held before).
- PostgreSQL, the store's server connection ended (``pg_terminate_backend``) between operations: the failure names the
  lost connection (before: only asyncpg's "cannot switch to state 15; another operation (2) is in progress"), and
  the operation after it succeeds.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream
from iii_streams.errors import StreamTimeoutError, StreamUnavailableError

pytestmark = pytest.mark.timeout(30)


def _set(group: str, item: str, data: object) -> StreamSetInput:
    return StreamSetInput(stream_name="lost", group_id=group, item_id=item, data=data)


def _get(group: str, item: str) -> StreamGetInput:
    return StreamGetInput(stream_name="lost", group_id=group, item_id=item)


class _CommitCutProxy:
    """A TCP proxy to PostgreSQL that passes everything through until, once ``armed``, the client sends ``COMMIT``;
    the server's answer to it is dropped and both sides cut (the server has committed by then: it answered)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.cuts = 0
        self.armed = False  # (a store's first connect commits too: armed after it)
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.host, self.port)
        armed = asyncio.Event()

        def cut() -> None:
            client_w.transport.abort()
            server_w.transport.abort()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
                if self.armed and data.startswith(b"Q") and b"COMMIT;\x00" in data:  # (not BEGIN's READ COMMITTED;)
                    self.cuts += 1
                    armed.set()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if armed.is_set():
                    cut()  # the COMMIT's answer: dropped
                    return
                client_w.write(data)

        try:
            await asyncio.gather(upstream(), downstream())
        except (ConnectionError, OSError):
            pass
        finally:
            cut()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def commit_cut(pg_url: str) -> AsyncIterator[tuple[_CommitCutProxy, str]]:
    url = make_url(pg_url)
    proxy = _CommitCutProxy(url.host or "127.0.0.1", url.port or 5432)
    port = await proxy.start()
    try:
        # no TLS: the proxy reads the protocol's messages
        proxied = url.set(host="127.0.0.1", port=port).update_query_dict({"ssl": "disable"})
        yield proxy, proxied.render_as_string(hide_password=False)
    finally:
        await proxy.close()


@pytest.mark.postgres
async def test_a_write_whose_commit_answer_is_lost_may_have_been_applied(
        commit_cut: tuple[_CommitCutProxy, str], pg_url: str) -> None:
    # Before: "StreamUnavailableError: SQLStream.set: database unreachable: connection was closed in the middle of
    # operation" with applied unset (None by default) and nothing saying it may have been applied
    proxy, proxied = commit_cut
    group = uuid.uuid4().hex[:8]
    async with SQLStream.from_url(proxied, timeout=10) as store:
        await store.set(_set(group, "warm", 0))
        proxy.armed = True
        with pytest.raises(StreamUnavailableError) as caught:
            await store.set(_set(group, "a", {"n": 1}))  # a new row: a transaction with a COMMIT
    assert proxy.cuts == 1
    assert caught.value.applied is None
    assert "may have been applied" in str(caught.value), str(caught.value)
    async with SQLStream.from_url(pg_url) as direct:
        assert await direct.get(_get(group, "a")) == {"n": 1}  # the server did commit it


@pytest.mark.postgres
async def test_a_write_that_never_reached_the_server_was_not_applied(pg_url: str) -> None:
    server = await asyncio.start_server(lambda _r, w: w.transport.abort(), "127.0.0.1", 0)  # accepts, then cuts
    port = server.sockets[0].getsockname()[1]
    try:
        url = make_url(pg_url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        async with SQLStream.from_url(url, timeout=10) as store:
            with pytest.raises(StreamUnavailableError) as caught:
                await store.set(_set("g", "a", 1))
    finally:
        server.close()
        await server.wait_closed()
    assert caught.value.applied is False
    assert "not applied" in str(caught.value), str(caught.value)


@pytest.mark.parametrize("own_timeout", [False, True], ids=["store-timeout", "call-timeout"])
async def test_sqlite_set_gives_up_within_its_timeout_while_another_writer_holds_the_file(
        tmp_path: Path, own_timeout: bool) -> None:
    # (A guard: this held before too. The attack's "10.0 s" timed the set together with its wait for the other
    # process's end; the set itself gave up at its timeout.)
    path = tmp_path / "s.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True, timeout=5 if own_timeout else 1) as store:
        await store.set(_set("g", "a", 0))
        # another process: SQLite's locks between processes are the file's (the case of two services on one file)
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.readline()", str(path),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            assert holder.stdout is not None and await holder.stdout.readline() == b"locked\n"
            started = time.monotonic()
            with pytest.raises(StreamTimeoutError) as caught:
                await store.set(_set("g", "b", 1), timeout=1 if own_timeout else None)
            took = time.monotonic() - started
            assert took < 1.5, f"set gave up after {took:.1f} s, its timeout 1 s"
            assert caught.value.applied is False, str(caught.value)
        finally:
            holder.kill()  # its lock goes with it
            await holder.wait()
        # the store goes on once the file is free (its timed-out write's busy wait let go as well)
        await store.set(_set("g", "c", 2), timeout=1)
        assert await store.get(_get("g", "b")) is None
        assert await store.get(_get("g", "c")) == 2


class _HalfClosingProxy:
    """A TCP proxy to PostgreSQL that passes everything through, but when the server ends a connection it keeps
    the client's side open (until ``close``): the client gets the server's last words (its FATAL error) and no end
    of the connection, as when the end is still on its way."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.server: asyncio.Server | None = None
        self.ended = asyncio.Event()  # a server connection ended (its client side left open)
        self._clients: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._clients.append(client_w)
        server_r, server_w = await asyncio.open_connection(self.host, self.port)

        async def upstream() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
            server_w.close()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                client_w.write(data)
            self.ended.set()  # the client side stays open

        try:
            await asyncio.gather(upstream(), downstream())
        except (ConnectionError, OSError):
            pass

    async def close(self) -> None:
        for writer in self._clients:
            writer.transport.abort()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.postgres
async def test_postgresql_operation_after_its_backend_was_ended_succeeds(pg_url: str) -> None:
    # The server ends the store's pooled connection (pg_terminate_backend); the driver got its FATAL error but not
    # yet the connection's end. The operation that meets it fails naming the lost connection, and the next succeeds
    # (no broken connection back in the pool). Before: the failure named only the driver's state ("StreamUnavailable
    # Error: SQLStream.set: database unreachable: cannot switch to state 15; another operation (2) is in progress")
    url = make_url(pg_url)
    proxy = _HalfClosingProxy(url.host or "127.0.0.1", url.port or 5432)
    port = await proxy.start()
    proxied = url.set(host="127.0.0.1", port=port).update_query_dict({"ssl": "disable"})
    admin = await asyncpg.connect(host=url.host, port=url.port, user=url.username, database="postgres", ssl=False)
    try:
        async with SQLStream.from_url(proxied.render_as_string(hide_password=False), timeout=10) as store:
            for round_ in range(3):
                await store.set(_set("t", f"warm{round_}", round_))  # a pooled connection, idle now
                proxy.ended.clear()
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = $1 AND pid <> pg_backend_pid()", url.database)
                await proxy.ended.wait()
                failures: list[str] = []
                for attempt in range(3):
                    try:
                        await store.set(_set("t", f"after{round_}", attempt))
                    except StreamUnavailableError as exc:
                        failures.append(str(exc))
                        assert "connection" in str(exc) and "lost" in str(exc), str(exc)
                    else:
                        break
                assert len(failures) <= 1, failures  # the attempt after a failure succeeded
                assert await store.get(_get("t", f"after{round_}")) == len(failures)
    finally:
        await admin.close()
        await proxy.close()
