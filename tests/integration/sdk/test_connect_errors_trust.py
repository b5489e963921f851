"""Issue #8, SDK connect errors: a bad URL fails at once, an unreachable engine fails with ``ConnectionError``
after a bounded wait, and a client that connected once still reconnects forever."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import iii.iii as client_module
from iii import III, InitOptions, ReconnectionConfig, register_worker

from .conftest import FAST_RECONNECT, EngineThread, Harness, reconnected, wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sdk_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "iii-sdk-loop" and t.is_alive())


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://127.0.0.1:49134", "scheme 'http'"),
        ("127.0.0.1:49134", "scheme"),
        ("localhost", "scheme"),
        ("ws://:49134", "no host"),
        ("ws://127.0.0.1:0", "port 0"),
        ("ws://127.0.0.1:70000", "port"),
        ("ws://127.0.0.1:abc", "port"),
        ("", "empty"),
    ],
)
def test_a_malformed_url_raises_value_error_at_once(url: str, named: str) -> None:
    before = _sdk_threads()
    start = time.monotonic()
    with pytest.raises(ValueError, match=named) as info:
        register_worker(url)
    assert time.monotonic() - start < 1.0
    assert repr(url) in str(info.value)
    with pytest.raises(ValueError, match=named):
        III(url)
    assert _sdk_threads() == before  # nothing started for a URL that can never work


def test_a_non_string_url_raises_type_error() -> None:
    with pytest.raises(TypeError, match="engine URL must be a str"):
        III(49134)  # type: ignore[arg-type]


def test_unreachable_engine_with_max_retries_raises_after_the_budget() -> None:
    url = f"ws://127.0.0.1:{_free_port()}"
    before = _sdk_threads()
    config = ReconnectionConfig(initial_delay_ms=20, max_delay_ms=50, jitter_factor=0.0, max_retries=3)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"cannot reach the engine at {url}") as info:
        register_worker(url, InitOptions(reconnection_config=config))
    assert time.monotonic() - start < 5.0
    assert "4 attempts" in str(info.value) and "refused" in str(info.value).lower()
    assert _sdk_threads() == before  # the client register_worker gave up on is shut down


def test_unreachable_engine_without_a_retry_limit_raises_after_the_bounded_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "_REFERENCE_CONNECT_WAIT_S", 0.5)
    url = f"ws://127.0.0.1:{_free_port()}"
    before = _sdk_threads()
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"cannot reach the engine at {url} within 0.5 s"):
        register_worker(url, InitOptions(reconnection_config=FAST_RECONNECT))
    assert 0.4 < time.monotonic() - start < 3.0
    assert _sdk_threads() == before


async def test_connect_async_raises_for_an_unreachable_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "_REFERENCE_CONNECT_WAIT_S", 0.5)
    url = f"ws://127.0.0.1:{_free_port()}"
    client = III(url, InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        start = time.monotonic()
        with pytest.raises(ConnectionError, match=f"cannot reach the engine at {url}"):
            await client.connect_async()
        assert time.monotonic() - start < 3.0
    finally:
        await client.shutdown_async()


async def test_connect_async_returns_once_connected(fake: EngineThread) -> None:
    client = III(fake.url, InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        await client.connect_async()
        assert client.get_connection_state() == "connected"
        assert client.worker_id is not None
    finally:
        await client.shutdown_async()


def test_an_engine_that_goes_away_later_is_retried_forever(
    served: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "_REFERENCE_CONNECT_WAIT_S", 0.3)
    client = register_worker(served.url, InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        old = client.worker_id
        served.stop()
        wait_until(lambda: client.get_connection_state() == "reconnecting")
        # Far longer than the initial-connection bound: the client must not give up on an engine it knew.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert client.get_connection_state() in ("reconnecting", "disconnected", "connecting")
            time.sleep(0.05)
        served.start()
        wait_until(lambda: reconnected(client, old))
        assert client.list_functions() is not None
    finally:
        client.shutdown()


def test_an_engine_that_comes_up_during_the_wait_is_used(fake: EngineThread) -> None:
    fake.engine.reject_handshakes = 3  # the first attempts fail, a later one inside the wait succeeds
    client = register_worker(fake.url, InitOptions(reconnection_config=FAST_RECONNECT))
    try:
        assert client.get_connection_state() == "connected"
    finally:
        client.shutdown()

