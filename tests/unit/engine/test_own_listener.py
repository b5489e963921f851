"""Which bridge URLs reach the engine's own worker port (iii_engine.own_listener): the forms a URL can name this
machine's addresses in, and the listeners of another address family or address that are not this one (the
re-attack on the self-bridge check: an IPv6 engine beside an IPv4 one was refused, ``127.1`` or ``0.0.0.0`` got
through)."""

from __future__ import annotations

import pytest

from iii_engine.own_listener import PortOwners, reaches_listener
from iii_engine.settings import ConfigError


@pytest.mark.parametrize(("url", "host"), [
    ("ws://127.0.0.1:5000", "0.0.0.0"),
    ("ws://0.0.0.0:5000", "localhost"),
    ("ws://127.1:5000", "127.0.0.1"),
    ("ws://2130706433:5000", "0.0.0.0"),
    ("ws://[::]:5000", "localhost"),
    ("ws://localhost.:5000", "0.0.0.0"),
    ("ws://LOCALHOST:5000", "0.0.0.0"),
    ("ws://[::ffff:127.0.0.1]:5000", "127.0.0.1"),
    ("ws://127.0.0.1:5000", "LOCALHOST"),
    ("ws://127.0.0.1:5000", "127.0.0.1 "),
    ("ws://[::1%lo]:5000", "::"),
    ("ws://[::1]:5000", ""),
])
def test_urls_that_reach_this_engine(url: str, host: str) -> None:
    assert reaches_listener(url, host, 5000)


@pytest.mark.parametrize(("url", "host"), [
    ("ws://[::1]:5000", "0.0.0.0"),  # an IPv6 listener beside this IPv4 one
    ("ws://127.0.0.1:5000", "::"),  # asyncio binds :: IPv6-only
    ("ws://0.0.0.0:5000", "10.1.2.3"),
    ("ws://127.0.0.2:5000", "127.0.0.1"),
    ("ws://127.0.0.1:5001", "0.0.0.0"),
    ("ws://engine.example:5000", "0.0.0.0"),  # a host name is not looked up
])
def test_urls_that_reach_another_listener(url: str, host: str) -> None:
    assert not reaches_listener(url, host, 5000)


@pytest.mark.parametrize(("engine_host", "module_host", "clash"), [
    ("0.0.0.0", "127.0.0.1", True), ("127.0.0.1", "127.0.0.1", True), ("", "::1", True), ("localhost", "::", True),
    ("0.0.0.0", "::", False),  # asyncio binds :: IPv6-only: two listeners
    ("127.0.0.1", "127.0.0.2", False),
])
def test_listeners_given_one_port_clash_when_their_hosts_overlap(engine_host: str, module_host: str,
                                                                 clash: bool) -> None:
    ports = PortOwners(engine_host, 5000, "the engine's own worker port")
    if clash:
        with pytest.raises(ConfigError, match="5000 is the engine's own worker port already"):
            ports.claim((module_host, 5000), "modules[0]")
    else:
        ports.claim((module_host, 5000), "modules[0]")
