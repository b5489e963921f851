"""URL rules, auth and request signing for HTTP-invoked functions (docs/guides/engine.md#modules).

Everything here is pure or only resolves DNS, so the rules can be tested without an engine.

Example:
    >>> rules = UrlRules(url_allowlist=("*.example.com",), block_private_ips=True, require_https=True)
    >>> rules.check_syntax("https://api.example.com/hook").hostname
    'api.example.com'
    >>> rules.check_syntax("http://api.example.com/hook")
    Traceback (most recent call last):
    ...
    iii_engine.modules.http.security.UrlRejected: HTTPS is required
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import SplitResult, urlsplit

from pydantic import field_validator

from ...settings import Names, Settings, UnknownKeys
from ..base import EngineError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DNS_TIMEOUT_S = 10.0
"""Bound on one DNS lookup, so a registration never waits on a resolver that does not answer."""

# The IANA IPv4 and IPv6 special-purpose address registries (plus deprecated site-local and multicast). Some of
# these are marked "globally reachable" by IANA (AS112, AMT, NAT64); none is a place an engine should post to.
_BLOCKED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple((ipaddress.IPv4Network(net), name) for net, name in (
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private-use"),
    ("100.64.0.0/10", "shared address space: carrier-grade NAT, cloud metadata"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local, cloud metadata"),
    ("172.16.0.0/12", "private-use"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.31.196.0/24", "AS112"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private-use"),
    ("192.175.48.0/24", "AS112 direct delegation"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "limited broadcast"),
    ("240.0.0.0/4", "reserved"),
))
_BLOCKED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple((ipaddress.IPv6Network(net), name) for net, name in (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("::/96", "IPv4-compatible"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001:db8::/32", "documentation"),
    ("2001::/32", "Teredo"),
    ("2001::/23", "IETF protocol assignments"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6 segment identifiers"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
))
# IANA hands out only 2000::/3 as global unicast; anything else is reserved, so it is refused even when no
# special-purpose entry names it (a future special range cannot slip through).
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_LOW_32 = 0xFFFF_FFFF


class UrlRejected(Exception):
    """A URL broke a rule; the message is one of production's (``HTTPS is required``, ``Private IP blocked`` …).

    ``detail`` says what exactly was wrong (which address, which range), for logs and error messages.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def _rfc6052_ipv4(value: int, prefix_len: int) -> ipaddress.IPv4Address:
    """The IPv4 address an RFC 6052 address with a ``prefix_len`` prefix carries (bits 64-71 are skipped)."""
    bits = f"{value:0128b}"
    without_u_octet = bits[:64] + bits[72:]
    start = prefix_len if prefix_len < 64 else prefix_len - 8
    return ipaddress.IPv4Address(int(without_u_octet[start:start + 32], 2))


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address ``address`` carries: IPv4-mapped, IPv4-compatible, NAT64 (every RFC 6052 layout of the
    local-use prefix), 6to4, and both Teredo server and client.

    Example:
        >>> [str(a) for a in embedded_ipv4(ipaddress.IPv6Address("64:ff9b::a9fe:a9fe"))]
        ['169.254.169.254']
    """
    value = int(address)
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    elif value >> 32 == 0 and value > 1:  # not :: or ::1, as RFC 4291 defines IPv4-compatible
        found.append(ipaddress.IPv4Address(value & _LOW_32))
    elif address in _NAT64_WELL_KNOWN:
        found.append(ipaddress.IPv4Address(value & _LOW_32))
    elif address in _NAT64_LOCAL:
        found.extend(_rfc6052_ipv4(value, length) for length in (48, 56, 64, 96))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return list(dict.fromkeys(found))


def _v4_range(address: ipaddress.IPv4Address) -> str | None:
    for network, name in _BLOCKED_V4:
        if address in network:
            return f"{network} {name}"
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` is refused with ``block_private_ips`` (the range, and any blocked IPv4 it carries), or
    ``None`` for a public unicast address.

    Example:
        >>> blocked_reason(ipaddress.ip_address("100.100.100.200"))
        '100.100.100.200 (in 100.64.0.0/10 shared address space: carrier-grade NAT, cloud metadata)'
        >>> blocked_reason(ipaddress.ip_address("64:ff9b::a00:1"))
        '64:ff9b::a00:1 (in 64:ff9b::/96 NAT64, carrying IPv4 10.0.0.1 in 10.0.0.0/8 private-use)'
        >>> blocked_reason(ipaddress.ip_address("2606:4700:4700::1111")) is None
        True
    """
    if isinstance(address, ipaddress.IPv4Address):
        found = _v4_range(address)
        return None if found is None else f"{address} (in {found})"
    bare = ipaddress.IPv6Address(int(address))  # drops a %scope
    found = next((f"{net} {name}" for net, name in _BLOCKED_V6 if bare in net), None)
    if found is None and bare not in _GLOBAL_UNICAST_V6:
        found = "reserved space outside global unicast 2000::/3"
    carried = embedded_ipv4(bare)
    if found is None and all(_v4_range(v4) is None for v4 in carried):
        return None
    parts = [f"in {found}"] if found is not None else []
    parts += [f"carrying IPv4 {v4} in {_v4_range(v4) or 'public space'}" for v4 in carried]
    return f"{bare} ({', '.join(parts)})"


def is_blocked_ip(address: IPAddress) -> bool:
    """Whether ``address`` is in a range refused with ``block_private_ips`` (see :func:`blocked_reason`).

    IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4, Teredo, …) are refused whatever they carry.

    Example:
        >>> [is_blocked_ip(ipaddress.ip_address(a)) for a in ("10.1.2.3", "8.8.8.8", "::1", "::ffff:8.8.8.8")]
        [True, False, True, True]
    """
    return blocked_reason(address) is not None


def _numeric_host(host: str) -> IPAddress | None:
    """The address ``host`` denotes without DNS: a literal, or a legacy IPv4 form (``127.1``, ``2130706433``,
    ``0x7f.1``, ``0177.0.0.1``) that the C resolver would turn into one."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


async def _getaddrinfo(host: str, port: int, family: int) -> list[Any]:
    """The one DNS lookup (a seam for tests)."""
    return await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)


class UrlRules(Settings):
    """``security`` settings of the HTTP functions module (unknown keys are logged and ignored).

    Example:
        >>> UrlRules.parse({"url_allowlist": [], "require_https": False})
        UrlRules(url_allowlist=('*',), block_private_ips=True, require_https=False, env_allowlist=('*',))
        >>> UrlRules.parse({"require_https": "no"}, at="security")
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: security.require_https: must be true or false, got 'no'
    """

    unknown_keys: ClassVar[UnknownKeys] = "warn"
    label: ClassVar[str] = "HTTP functions settings: security"

    url_allowlist: Names = ("*",)
    block_private_ips: bool = True
    require_https: bool = True
    #: ours: the environment variables an ``auth`` may name (glob patterns). Any connected worker may register an
    #: HTTP function, so with ``*`` (production's behaviour) any worker can have the engine send it any variable.
    env_allowlist: Names = ("*",)

    def allows_env(self, name: str) -> bool:
        """Whether an ``auth`` may name the environment variable ``name``.

        Example:
            >>> rules = UrlRules(env_allowlist=("HOOK_*",))
            >>> rules.allows_env("HOOK_TOKEN"), rules.allows_env("DATABASE_PASSWORD")
            (True, False)
        """
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.env_allowlist)

    @field_validator("url_allowlist")
    @classmethod
    def _empty_means_any(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return patterns or ("*",)  # as production: an empty allowlist allows every host

    def check_syntax(self, url: str) -> SplitResult:
        """Parse, scheme and allowlist checks (no DNS)."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise UrlRejected("Invalid URL", f"cannot parse {url!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UrlRejected("Invalid URL", f"{url!r} needs an http or https scheme and a host")
        if self.require_https and parts.scheme != "https":
            raise UrlRejected("HTTPS is required")
        host = parts.hostname.lower()
        if not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in self.url_allowlist):
            raise UrlRejected("URL not in allowlist")
        return parts

    def check_literal(self, url: str) -> SplitResult:
        """Every rule that needs no DNS: :meth:`check_syntax`, then the address of a numeric host.

        A named host is left to :meth:`resolve`, which must be the lookup the connection uses.
        """
        parts = self.check_syntax(url)
        if self.block_private_ips:
            numeric = _numeric_host(parts.hostname or "")
            reason = None if numeric is None else blocked_reason(numeric)
            if reason is not None:
                raise UrlRejected("Private IP blocked", reason)
        return parts

    async def resolve(self, host: str, port: int, family: int = socket.AF_UNSPEC) -> list[tuple[int, str, int]]:
        """Look ``host`` up once and return every ``(family, address, port)`` answer, all of them vetted.

        Connect only to these: a second lookup could answer differently (DNS rebinding). With
        ``block_private_ips`` a single blocked answer refuses the whole name, as production does.
        """
        try:
            async with asyncio.timeout(DNS_TIMEOUT_S):
                infos = await _getaddrinfo(host, port, family)
        except TimeoutError:
            raise UrlRejected("DNS lookup failed", f"looking up {host} timed out after {DNS_TIMEOUT_S:g} s") from None
        except OSError as exc:
            raise UrlRejected("DNS lookup failed", f"looking up {host} failed: {exc}") from None
        answers: list[tuple[int, str, int]] = []
        for info in infos:
            text = str(info[4][0])
            if self.block_private_ips:
                reason = blocked_reason(ipaddress.ip_address(text.split("%", 1)[0]))
                if reason is not None:
                    raise UrlRejected("Private IP blocked", f"{host} resolves to {reason}")
            answer = (int(info[0]), text, int(info[4][1]))
            if answer not in answers:
                answers.append(answer)
        if not answers:
            raise UrlRejected("DNS lookup failed", f"{host} has no address")
        return answers

    async def check(self, url: str) -> SplitResult:
        """Every rule, including the DNS lookup of ``host:443`` when private addresses are blocked."""
        parts = self.check_literal(url)
        host = parts.hostname or ""
        if self.block_private_ips and _numeric_host(host) is None:
            await self.resolve(host, 443)
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
    secret: str = field(repr=False)  # never in a repr, so never in a log line or an error that shows the auth
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


def resolve_auth(auth: Any, env: Mapping[str, str],
                 allowed: Callable[[str], bool] = lambda name: True) -> ResolvedAuth | None:
    """Read the secret an ``HttpAuthConfig`` names; :class:`EngineError` with production's code if missing, or if
    ``allowed`` (:meth:`UrlRules.allows_env`) refuses the variable's name.

    Example:
        >>> auth = resolve_auth({"type": "bearer", "token_key": "TOKEN"}, {"TOKEN": "t0k"})
        >>> auth, auth.secret  # (the secret is never in the repr)
        (ResolvedAuth(kind='bearer', header=None), 't0k')
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
    if not allowed(var):
        raise EngineError(missing_code, f"environment variable {var} (auth.{key_field}) is not one the "
                                        "security.env_allowlist setting lets an auth name")
    secret = env.get(var)
    if secret is None:
        raise EngineError(missing_code, f"environment variable {var} (auth.{key_field}) is not set")
    return ResolvedAuth(kind, secret, header)
