"""URL rules, auth and request signing for HTTP-invoked functions (modules.md §7.4).

Everything here is pure or only resolves DNS, so the rules can be tested without an engine.

Example:
    >>> rules = UrlRules(url_allowlist=("*.example.com",), block_private_ips=True, require_https=True)
    >>> rules.check_syntax("https://api.example.com/hook").hostname
    'api.example.com'
    >>> rules.check_syntax("http://api.example.com/hook")
    Traceback (most recent call last):
    ...
    iii_engine.modules.http_security.UrlRejected: HTTPS is required
    >>> sign("s3cret", "1700000000", b'{"a":1}')[:7]
    'sha256='
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from .base import EngineError

_DOCUMENTATION_V4 = tuple(ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
_UNIQUE_LOCAL_V6 = ipaddress.ip_network("fc00::/7")
_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")
_BROADCAST_V4 = ipaddress.ip_address("255.255.255.255")


class UrlRejected(Exception):
    """A URL broke a rule; the message is one of production's (``HTTPS is required``, ``Private IP blocked`` …)."""


def is_blocked_ip(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is in a range production refuses with ``block_private_ips``.

    IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry (ours; production checks them as IPv6).

    Example:
        >>> [is_blocked_ip(ipaddress.ip_address(a)) for a in ("10.1.2.3", "8.8.8.8", "::1", "::ffff:127.0.0.1")]
        [True, False, True, True]
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return (address.is_loopback or address.is_private or address.is_link_local or address == _BROADCAST_V4
                or any(address in net for net in _DOCUMENTATION_V4) or address.is_unspecified)
    return (address.is_loopback or address in _UNIQUE_LOCAL_V6 or address in _LINK_LOCAL_V6
            or address.is_unspecified or address.is_multicast)


@dataclass(frozen=True)
class UrlRules:
    """``security`` settings of the HTTP functions module."""

    url_allowlist: tuple[str, ...] = ("*",)
    block_private_ips: bool = True
    require_https: bool = True

    @classmethod
    def parse(cls, raw: Any) -> UrlRules:
        """From the module's ``security`` object; an empty allowlist means ``["*"]``, as in production.

        Example:
            >>> UrlRules.parse({"url_allowlist": [], "require_https": False})
            UrlRules(url_allowlist=('*',), block_private_ips=True, require_https=False)
        """
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ValueError(f"HTTP functions settings: security must be an object, got {raw!r}")
        allow = raw.get("url_allowlist") or ["*"]
        if not isinstance(allow, list) or not all(isinstance(p, str) for p in allow):
            raise ValueError(f"HTTP functions settings: security.url_allowlist must be a list of strings: {allow!r}")
        flags = {}
        for key in ("block_private_ips", "require_https"):
            value = raw.get(key, True)
            if not isinstance(value, bool):
                raise ValueError(f"HTTP functions settings: security.{key} must be true or false, got {value!r}")
            flags[key] = value
        return cls(tuple(allow), flags["block_private_ips"], flags["require_https"])

    def check_syntax(self, url: str) -> SplitResult:
        """Parse, scheme and allowlist checks (no DNS)."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise UrlRejected("Invalid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UrlRejected("Invalid URL")
        if self.require_https and parts.scheme != "https":
            raise UrlRejected("HTTPS is required")
        host = parts.hostname.lower()
        if not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in self.url_allowlist):
            raise UrlRejected("URL not in allowlist")
        return parts

    async def check(self, url: str) -> SplitResult:
        """Every rule, including the DNS lookup of ``host:443`` when private addresses are blocked."""
        parts = self.check_syntax(url)
        if not self.block_private_ips:
            return parts
        host = parts.hostname or ""
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            if is_blocked_ip(literal):
                raise UrlRejected("Private IP blocked")
            return parts
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        except OSError:
            raise UrlRejected("DNS lookup failed") from None
        if not infos:
            raise UrlRejected("DNS lookup failed")
        for info in infos:
            if is_blocked_ip(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])):
                raise UrlRejected("Private IP blocked")
        return parts


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``x-iii-Signature`` value: HMAC-SHA256 over ``<timestamp>:<base64(body)>``, lower-case hex.

    Example:
        >>> sign("k", "1", b"{}")  # HMAC-SHA256(key=b"k", msg=b"1:e30=")
        'sha256=deed7099e9e23ebec5f80237e0b5e9e149bc829911acbb40c47e32f6af505e5f'
    """
    message = f"{timestamp}:{base64.b64encode(body).decode('ascii')}".encode()
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ResolvedAuth:
    """Auth with its secret read from the engine's environment at registration."""

    kind: str
    secret: str
    header: str | None = None

    def header_for(self, timestamp: str, body: bytes) -> tuple[str, str]:
        """The ``(name, value)`` header this auth adds to a request with ``body`` sent at ``timestamp``.

        Example:
            >>> ResolvedAuth("api_key", "v", "X-Api-Key").header_for("0", b"")
            ('X-Api-Key', 'v')
        """
        if self.kind == "hmac":
            return "x-iii-Signature", sign(self.secret, timestamp, body)
        if self.kind == "bearer":
            return "Authorization", f"Bearer {self.secret}"
        return self.header or "", self.secret


_AUTH_KEYS = {"hmac": ("secret_key", "secret_not_found"), "bearer": ("token_key", "token_not_found"),
              "api_key": ("value_key", "api_key_not_found")}


def resolve_auth(auth: Any, env: Mapping[str, str]) -> ResolvedAuth | None:
    """Read the secret an ``HttpAuthConfig`` names; :class:`EngineError` with production's code if missing.

    Example:
        >>> resolve_auth({"type": "bearer", "token_key": "TOKEN"}, {"TOKEN": "t0k"})
        ResolvedAuth(kind='bearer', secret='t0k', header=None)
        >>> resolve_auth({"type": "hmac", "secret_key": "NOPE"}, {})
        Traceback (most recent call last):
        ...
        iii_engine.modules.base.EngineError: secret_not_found: environment variable NOPE (auth.secret_key) is not set
    """
    if auth is None:
        return None
    if not isinstance(auth, Mapping) or auth.get("type") not in _AUTH_KEYS:
        kind = auth.get("type") if isinstance(auth, Mapping) else auth
        raise EngineError("invalid_auth", f"auth.type must be one of hmac, bearer, api_key, got {kind!r}")
    kind = str(auth["type"])
    key_field, missing_code = _AUTH_KEYS[kind]
    header: str | None = None
    if kind == "api_key":
        header = auth.get("header")
        if not isinstance(header, str) or not header:
            raise EngineError("invalid_auth", "auth.header must name the header for an api_key auth")
    var = auth.get(key_field)
    if not isinstance(var, str) or not var:
        raise EngineError("invalid_auth", f"auth.{key_field} must name an environment variable")
    secret = env.get(var)
    if secret is None:
        raise EngineError(missing_code, f"environment variable {var} (auth.{key_field}) is not set")
    return ResolvedAuth(kind, secret, header)
