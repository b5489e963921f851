"""Which worker port the engine starting in this context listens on, so that a module about to connect to another
engine (a Bridge) can refuse a URL that reaches this engine itself.

Why: a Bridge adapter's ``bridge_url`` defaults to ``ws://localhost:49134``, the engine's own default port, so a
configuration naming the adapter without a URL bridged the engine to itself. It started without a word, and one
``state::set`` then called itself through the bridge about 10,000 deep (until ``max_calls_per_worker``), the engine
growing to 6 GB.

The engine sets :data:`LISTENING` for the duration of its modules' starts (they run in tasks that copy the start's
context); :func:`refuse_own_listener` is what a bridge calls as it starts.

Example:
    >>> token = LISTENING.set(("0.0.0.0", 49134))
    >>> refuse_own_listener("ws://localhost:49134", "bridge_url")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: bridge_url ws://localhost:49134 reaches this engine's own worker port (49134): ...
    >>> refuse_own_listener("ws://localhost:49135", "bridge_url")  # another engine on this machine: fine
    >>> LISTENING.reset(token)
"""

from __future__ import annotations

import contextvars
import ipaddress
import socket
from urllib.parse import urlsplit

from .settings import ConfigError

__all__ = ["LISTENING", "PortOwners", "reaches_listener", "refuse_own_listener"]

#: ``(host, port)`` the engine whose modules are starting listens on for workers (``None``: no engine's start).
LISTENING: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("iii_engine_listening",
                                                                                   default=None)


def refuse_own_listener(url: str, what: str) -> None:
    """Raise :class:`~iii_engine.settings.ConfigError` naming ``what`` when ``url`` reaches the worker port of the
    engine whose start is under way (see :data:`LISTENING`); outside an engine's start, nothing is checked."""
    listening = LISTENING.get()
    if listening is not None and reaches_listener(url, *listening):
        raise ConfigError(f"{what} {url} reaches this engine's own worker port ({listening[1]}): the bridge would call "
                         f"this engine itself, each call calling itself again; name the engine that keeps the data")


def reaches_listener(url: str, host: str, port: int) -> bool:
    """Whether a connection to ``url`` reaches a listener bound to ``host``:``port`` on this machine. Host names
    other than ``localhost`` are not looked up (a DNS query at start could hold the engine's loop): only a URL
    naming an address (in any form the system reads: ``127.1``, ``[::ffff:127.0.0.1]``) is recognised. A wildcard
    bind covers its own address family only (asyncio binds ``::`` IPv6-only).

    Example:
        >>> reaches_listener("ws://127.0.0.1:49134", "0.0.0.0", 49134)
        True
        >>> reaches_listener("ws://127.0.0.1:49134", "10.1.2.3", 49134)  # bound elsewhere: another listener
        False
        >>> reaches_listener("ws://[::1]:49134", "0.0.0.0", 49134)  # an IPv6 listener: not this one
        False
        >>> reaches_listener("wss://engine.example:49134", "0.0.0.0", 49134)
        False
    """
    parts = urlsplit(url)
    try:
        target_port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        return False
    if target_port != port or parts.hostname is None:
        return False
    wildcard, bound = _bound(host)
    for target in _addresses(parts.hostname):
        if target.is_unspecified:  # connecting to 0.0.0.0 or :: reaches this host's loopback
            target = ipaddress.ip_address("127.0.0.1" if target.version == 4 else "::1")
        if target in bound or (target.version in wildcard and (target.is_loopback or _is_local(target))):
            return True
    return False


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _bound(host: str) -> tuple[set[int], set[_Address]]:
    """What a listener bound to ``host`` covers: the address families it takes every local address of, and the
    addresses it is bound to (empty for a host name other than ``localhost``: not looked up)."""
    host = host.strip().lower()
    if host in ("", "*"):
        return {4, 6}, set()
    if host == "0.0.0.0":
        return {4}, set()
    if host == "::":
        return {6}, set()
    return set(), set(_addresses(host))


def _addresses(name: str) -> list[_Address]:
    """The addresses ``name`` stands for without a DNS query: ``localhost`` (with or without its final dot, any
    case), or an address in any form the system reads; IPv4-mapped IPv6 addresses as their IPv4 address, scope
    ids dropped. Empty for any other name."""
    name = name.strip().strip("[]").lower().split("%", 1)[0]
    if name.rstrip(".") == "localhost":
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    try:
        found = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return []
    addresses: list[_Address] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        addresses.append(address)
    return addresses


def _is_local(address: _Address) -> bool:
    """Whether ``address`` is one of this machine's: only a local address can be bound."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


class PortOwners:
    """The ports an engine's listeners are given, each with its owner, so a second listener given one of them is
    refused naming the first (:meth:`claim`).

    Example:
        >>> ports = PortOwners("0.0.0.0", 49134, "the engine's own worker port")
        >>> ports.claim(("127.0.0.1", 3111), "modules[0] (modules::api::RestApiModule)")
        >>> ports.claim(("127.0.0.1", 49134), "modules[1] (modules::stream::StreamModule)")
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: port: 49134 is the engine's own worker port already
    """

    def __init__(self, host: str, port: int, owner: str) -> None:
        self._owners: dict[int, list[tuple[str, str]]] = {}
        self.claim((host, port), owner)

    def claim(self, address: tuple[str, int] | None, owner: str) -> None:
        """Note ``address`` as ``owner``'s; :class:`~iii_engine.settings.ConfigError` (at ``port``) when a listener
        noted before is given its port on an overlapping host (a wildcard overlaps every host). Port 0 (a free
        one) never clashes."""
        if address is None or address[1] == 0:
            return
        host, port = address
        for other_host, other in self._owners.get(port, ()):
            if _overlap(host, other_host):
                raise ConfigError(f"{port} is {other} already", "port")
        self._owners.setdefault(port, []).append((host, owner))


def _overlap(one: str, other: str) -> bool:
    """Whether listeners bound to hosts ``one`` and ``other`` on one port would collide: the same host, or a wildcard
    and a host of its address family (``0.0.0.0`` and ``::`` do not: asyncio binds ``::`` IPv6-only).

    Example:
        >>> _overlap("0.0.0.0", "127.0.0.1"), _overlap("0.0.0.0", "::"), _overlap("", "::1")
        (True, False, True)
    """
    one, other = one.strip().lower(), other.strip().lower()
    return one == other or bool(_bound(one)[0] & _families(other)) or bool(_bound(other)[0] & _families(one))


def _families(host: str) -> set[int]:
    """The address families a bind to ``host`` takes (a host name: both, as it may stand for either)."""
    try:
        return {ipaddress.ip_address(host.strip("[]").split("%", 1)[0]).version}
    except ValueError:
        return {4, 6}
