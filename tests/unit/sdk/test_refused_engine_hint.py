"""A wait that ends in "cannot reach the engine" because nothing listens at the address (connection refused) asks
whether an engine runs there and says how to start one (it said only "last error: Connection refused"); the text
before it and the exception type are unchanged, and other failures get no such hint."""

from __future__ import annotations

import socket

import pytest

from iii import III, InitOptions, ReconnectionConfig, register_worker
from tests.ports import reserve_port

pytestmark = pytest.mark.timeout(30)

HINT = ": is an engine running there? iii-engine or python -m iii_engine starts one"
FAST = InitOptions(reconnection_config=ReconnectionConfig(initial_delay_ms=10, max_delay_ms=20, jitter_factor=0.0,
                                                          max_retries=2))


def test_register_worker_at_a_refused_port_asks_whether_an_engine_runs_there() -> None:
    with reserve_port() as held:  # bound, never listening: a connection to it is refused
        url = f"ws://127.0.0.1:{held.getsockname()[1]}"
        with pytest.raises(ConnectionError) as failure:
            register_worker(url, FAST)
    assert str(failure.value) == (f"cannot reach the engine at {url}: failed after max retries (3 attempts, "
                                  f"max_retries=2; last error: Connection refused{HINT})"), str(failure.value)


async def test_a_bounded_wait_says_it_too() -> None:
    with reserve_port() as held:
        url = f"ws://127.0.0.1:{held.getsockname()[1]}"
        client = III(url)
        try:
            with pytest.raises(ConnectionError) as failure:
                await client.wait_until_connected_async(1.0)
        finally:
            await client.shutdown_async()
    text = str(failure.value)
    assert text.startswith(f"cannot reach the engine at {url} within 1 s (") and "attempt" in text, text
    assert text.endswith(f"; last error: Connection refused{HINT})"), text


def test_other_failures_get_no_such_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(*_: object, **__: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with pytest.raises(ConnectionError) as failure:
        register_worker("ws://nowhere.invalid:49134", FAST)
    assert str(failure.value).endswith("last error: Name or service not known)"), str(failure.value)


def test_every_address_of_a_name_refused_together_is_a_refusal() -> None:
    from iii.connection import _refused_hint  # (here: the other tests fail on their own before it exists)

    # asyncio's error when localhost's ::1 and 127.0.0.1 both refuse (it has no errno of its own)
    both = OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 1, 0, 0), [Errno 111] Connect call "
                   "failed ('127.0.0.1', 1)")
    assert _refused_hint(both) == HINT
    mixed = OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 1, 0, 0), [Errno 101] Network is "
                    "unreachable")
    assert _refused_hint(mixed) == ""
