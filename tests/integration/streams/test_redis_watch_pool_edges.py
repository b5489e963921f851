"""Edges of a ``RedisStream``'s own watch pool against a real server: ``aclose()`` while the first watch is still
opening (waiting for the store's full watch pool, or for a server that never answers) ends that open at once; the
client shapes callers pass (database 3, RESP3, decoded replies, an ACL user in a URL, a unix socket, TLS) reach the
watch connection; many stores on one client; every pub/sub connection killed, and a restart, under 500 watches.

Connections are told apart with ``CLIENT LIST`` by each test's own ``client_name`` (the server is shared); the tests
that kill every pub/sub connection or need a unix socket or TLS run on a private ``redis-server``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from iii.stream import StreamSetInput
from iii_streams import RedisStream, StreamGapError
from iii_streams.errors import StreamClosedError
from iii_streams.redis import KeyLayout
from tests.integration.streams.private_redis import PrivateRedis
from tests.integration.streams.test_redis_watch_pool import _next_id, _ours, _settles, _subscribed
from tests.ports import reserve_port
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


@pytest.fixture
def name() -> str:
    return f"hwpe{uuid.uuid4().hex[:10]}"


def _store(client: aioredis.Redis, name: str, **options: Any) -> RedisStream:
    return RedisStream(client, layout=KeyLayout(name), channel=name, **options)


async def test_aclose_ends_a_first_watch_waiting_for_the_full_watch_pool(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the opening watch waited out the watch pool's bound after the store had closed, then failed with
    PoolExhaustedError (30 s in production; 5 s here)."""
    monkeypatch.setattr("iii_streams.redis._WATCH_POOL_TIMEOUT", 5.0)
    client = aioredis.Redis.from_url(require_redis(), client_name=name)
    try:
        store = _store(client, name)
        pool = store._watch_client.connection_pool
        held = [await pool.get_connection() for _ in range(pool.max_connections)]  # type: ignore[no-untyped-call]
        try:
            opening = asyncio.ensure_future(store.watch("s").open())
            done, _ = await asyncio.wait({opening}, timeout=0.2)
            assert not done, opening.exception() if done else None  # waiting for the pool
            await asyncio.wait_for(store.aclose(), 5)
            with pytest.raises(StreamClosedError):
                await asyncio.wait_for(opening, 2)
        finally:
            for conn in held:
                await pool.release(conn)
        assert not pool._in_use_connections
    finally:
        await client.aclose()


async def test_aclose_ends_a_first_watch_whose_server_never_answers(name: str, silent_port: int) -> None:
    """Before: the opening watch waited for the silent server until the store's own timeout (10 s here, 60 s by
    default) though the store had closed, and then failed with a timeout."""
    client = aioredis.Redis(host="127.0.0.1", port=silent_port, client_name=name)
    try:
        store = _store(client, name, timeout=10)
        opening = asyncio.ensure_future(store.watch("s").open())
        done, _ = await asyncio.wait({opening}, timeout=0.3)
        assert not done, opening.exception() if done else None  # its CLIENT SETNAME waits for a reply
        await asyncio.wait_for(store.aclose(), 5)
        with pytest.raises(StreamClosedError):
            await asyncio.wait_for(opening, 2)
        pool = store._watch_client.connection_pool
        assert not pool._in_use_connections
    finally:
        await client.aclose()


async def _round_trip(store: RedisStream, item_id: str) -> None:
    """A watch of ``store`` hears a write of ``store``."""
    async with store.watch("s") as watch:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id=item_id, data={"t": "é"}))
        assert await _next_id(watch) == item_id


@pytest.mark.parametrize("options", [{"db": 3}, {"protocol": 3}, {"protocol": 3, "decode_responses": True},
                                     {"decode_responses": True, "socket_timeout": 0.3}],
                         ids=["db3", "resp3", "resp3-decoded", "decoded-short-socket-timeout"])
async def test_a_callers_client_shape_reaches_the_watch_connection(
        name: str, options: dict[str, Any], redis_admin: aioredis.Redis) -> None:
    """The watch connection is made with the caller's options (its database, protocol, decoding, timeouts): on the
    server it looks like the caller's own connection, and the watch pool holds that one connection alone."""
    address = redis_admin.connection_pool.connection_kwargs
    client = aioredis.Redis(host=address["host"], port=address["port"], client_name=name, **options)
    try:
        async with _store(client, name) as store:
            watch_options = store._watch_client.connection_pool.connection_kwargs
            assert {k: watch_options[k] for k in options} == options
            await _round_trip(store, "a")
            async with store.watch("s"):
                assert await client.ping()  # the caller's own connection, next to the watch's
                conns = await _settles(redis_admin, name, 2)
                [subscribed] = _subscribed(conns)
                [callers] = [c for c in conns if c is not subscribed]
                assert (subscribed["db"], subscribed["resp"]) == (callers["db"], callers["resp"])
                assert int(subscribed["db"]) == options.get("db", 0)
                pool = store._watch_client.connection_pool
                assert (len(pool._in_use_connections), len(pool._available_connections)) == (1, 0)
    finally:
        await client.aclose()


async def test_an_acl_user_in_the_callers_url_is_the_watch_connections_user(
        name: str, redis_admin: aioredis.Redis) -> None:
    """The watch connection logs in as the URL's user (created here, allowed the store's channel alone; the
    password has a character the URL escapes)."""
    user = f"{name}u"
    await redis_admin.acl_setuser(user, enabled=True, passwords=["+pw:1"], keys=["*"], channels=[name],
                                  commands=["+@all"])
    try:
        client = aioredis.Redis.from_url(f"redis://{user}:pw%3A1@127.0.0.1:6379/0", client_name=name)
        try:
            async with _store(client, name) as store:
                await _round_trip(store, "acl")
                async with store.watch("s"):
                    [subscribed] = _subscribed(await _ours(redis_admin, name))
                    assert subscribed["user"] == user
        finally:
            await client.aclose()
    finally:
        await redis_admin.acl_deluser(user)


async def test_many_stores_on_one_client_hold_one_watch_connection_each_while_watched(
        name: str, redis_admin: aioredis.Redis) -> None:
    client = aioredis.Redis.from_url(require_redis(), client_name=name)
    try:
        stores = [_store(client, name) for _ in range(10)]
        assert not await _ours(redis_admin, name)  # a store makes no connection before its first watch
        watches = [store.watch("s") for store in stores for _ in range(3)]
        for watch in watches:
            await watch.open()
        assert len(_subscribed(await _settles(redis_admin, name, 10))) == 10
        for watch in watches:
            await watch.aclose()
        await _settles(redis_admin, name, 0)  # the last watch's close closes its store's watch connection
        for store in stores:
            await store.aclose()
    finally:
        await client.aclose()


@pytest.fixture
def socket_path() -> Iterator[str]:
    """A short path for the server's unix socket: Redis's CLIENT LIST cuts ``laddr`` at 77 characters, and a
    parallel run's ``tmp_path`` is longer than that."""
    with tempfile.TemporaryDirectory(prefix="iii-", dir="/tmp") as directory:
        yield f"{directory}/redis.sock"


@pytest.fixture
async def server(tmp_path: Path, socket_path: str) -> AsyncIterator[PrivateRedis]:
    """A private redis-server that also listens on the unix socket ``socket_path``."""
    with PrivateRedis(tmp_path) as private:
        private._cmd += ["--unixsocket", socket_path, "--unixsocketperm", "700"]
        await private.start()
        yield private


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """(key, certificate): a throwaway self-signed certificate for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a certificate with")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return key, cert


@pytest.fixture
async def tls_server(tmp_path: Path, certificate: tuple[Path, Path]) -> AsyncIterator[tuple[int, Path]]:
    """A private redis-server that also takes TLS: its TLS port and its certificate."""
    key, cert = certificate
    # redis-server cannot be given TLS port 0 and say what it bound, so the TLS port stays reserved until the end
    # (the server can listen on it all the same); one a process picked before the reservation and binds anyway
    # fails the start on "Address already in use", which is tried once more on new ports
    for attempt in (1, 2):
        directory = tmp_path / f"tls-{attempt}"
        directory.mkdir()
        with reserve_port() as spare, PrivateRedis(directory) as private:
            tls_port: int = spare.getsockname()[1]
            private._cmd += ["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                             "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
            try:
                await private.start()
            except RuntimeError:
                log = directory / "redis.log"
                if attempt == 2 or not log.exists() or "Address already in use" not in log.read_text(errors="replace"):
                    raise
                continue
            yield tls_port, cert
            return


async def test_a_tls_clients_watch_connection_verifies_the_server_as_the_client_does(
        tls_server: tuple[int, Path], name: str) -> None:
    """The TLS port takes TLS alone, and the server's certificate verifies only with the caller's CA file: a watch
    hearing an event there has the caller's connection class and TLS options."""
    port, cert = tls_server
    client = aioredis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert), ssl_cert_reqs="required",
                            client_name=name)
    try:
        async with _store(client, name) as store:
            assert store._watch_client.connection_pool.connection_class is aioredis.SSLConnection
            await _round_trip(store, "tls")
    finally:
        await client.aclose()


async def test_a_unix_socket_clients_watch_connection_uses_the_socket(
        server: PrivateRedis, name: str, socket_path: str) -> None:
    path = socket_path
    client = aioredis.Redis(unix_socket_path=path, client_name=name)
    admin = aioredis.Redis.from_url(server.url)
    try:
        async with _store(client, name) as store:
            await _round_trip(store, "unix")
            async with store.watch("s"):
                [subscribed] = _subscribed(await _ours(admin, name))
                assert subscribed["laddr"].startswith(path), subscribed
    finally:
        await client.aclose()
        await admin.aclose()


async def test_every_pubsub_connection_killed_under_500_watches_costs_one_gap_each_and_one_connection(
        server: PrivateRedis, name: str) -> None:
    """``CLIENT KILL TYPE pubsub``, three times, then a restart of the server: each time every watch gets one gap
    and the next event, and the store holds one watch connection (the one subscribed)."""
    client = aioredis.Redis.from_url(server.url, client_name=name)
    admin = aioredis.Redis.from_url(server.url)
    try:
        async with _store(client, name, report_watch_gaps=True) as store:
            pool = store._watch_client.connection_pool
            watches = [store.watch("s") for _ in range(500)]
            for watch in watches:
                await watch.open()
            for round_ in range(4):
                if round_ < 3:
                    assert await admin.client_kill_filter(_type="pubsub") == 1
                else:
                    server.stop()
                    await server.start()
                    for stale in (client, admin):  # their idle connections (plain pools) are the old server's
                        await stale.connection_pool.disconnect()
                for watch in watches:
                    with pytest.raises(StreamGapError):
                        await asyncio.wait_for(anext(watch), 10)
                await store.set(StreamSetInput(stream_name="s", group_id="g", item_id=f"r{round_}", data=1))
                assert {await _next_id(watch) for watch in watches} == {f"r{round_}"}
                assert (len(pool._in_use_connections), len(pool._available_connections)) == (1, 0)
                assert len(_subscribed(await _ours(admin, name))) == 1
            for watch in watches:
                await watch.aclose()
    finally:
        await client.aclose()
        await admin.aclose()
