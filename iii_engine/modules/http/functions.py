"""HTTP-invoked functions (``modules::http_functions::HttpFunctionsModule``, docs/guides/engine.md#modules; off by
default).

A worker registers a function whose body is an HTTP endpoint: ``registerfunction`` with an ``invocation``
object. The engine core hands that to :meth:`HttpFunctionsModule.register_external`, which checks the URL and
reads the auth secret from the engine's environment, and returns the built-in that routes each call through
:meth:`HttpFunctionsModule.call`. Failures are :class:`EngineError`\\ s with production's codes; at registration
the core only logs them (the worker is never told, docs/protocol.md#production-behaviour-our-sdk-copes-with (T37)).

Example (engine configuration, as the reference SDK's test setup uses it):
    modules:
      - class: modules::http_functions::HttpFunctionsModule
        config:
          security: {url_allowlist: [localhost, 127.0.0.1], block_private_ips: false, require_https: false}
"""

from __future__ import annotations

import http
import ipaddress
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict
from yarl import URL

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii._cli import mask_passwords
from iii.wire import dumps, loads

from ...channels import DEFAULT_MAX_MESSAGE_SIZE
from ...settings import Field, Settings, UnknownKeys
from ..base import BuiltinFunction, EngineError, EngineModule, EngineServices, InvocationContext
from .security import ResolvedAuth, UrlRejected, UrlRules, resolve_auth

# SSRF (issue #8): the URL rules look a name up once and the connection uses exactly the addresses that lookup
# returned (VettingResolver), so DNS cannot answer a public address to the check and a private one to the
# connect. Literal addresses never reach a resolver; UrlRules.check_literal covers them, and _client_url makes
# sure the rules and the HTTP client read the same host out of the URL. Redirects are never followed.

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 30_000
MAX_RESPONSE_BYTES = DEFAULT_MAX_MESSAGE_SIZE
"""Largest (decompressed) response body read; a bigger result could not reach the caller in one frame anyway."""
_READ_CHUNK = 64 * 1024
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class HttpFunctionsSettings(Settings):
    """The module's settings: only ``security`` (unknown keys are logged and ignored)."""

    unknown_keys: ClassVar[UnknownKeys] = "warn"
    label: ClassVar[str] = "HTTP functions settings"

    security: UrlRules = Field(default_factory=UrlRules)


@dataclass(frozen=True)
class HttpFunction:
    """A registered HTTP-invoked function, with its secret already resolved.

    ``url`` is where requests go; logs, errors and the repr show :attr:`shown_url`, and never the headers (an API
    key or a signature often rides in the query, a token in a header).

    Example:
        >>> HttpFunction("f", "https://x.example/h").method
        'POST'
        >>> HttpFunction("f", "https://x.example/h?api_key=s3cret", headers=(("X-Api-Key", "k3y"),))
        HttpFunction('f', 'https://x.example/h?api_key=***', method='POST', timeout_ms=30000, owner_worker_id=None)
    """

    function_id: str
    url: str
    method: str = "POST"
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    headers: tuple[tuple[str, str], ...] = ()
    auth: ResolvedAuth | None = None
    owner_worker_id: str | None = None

    @property
    def shown_url(self) -> str:
        """:attr:`url` with its password and secret-looking query values masked (:func:`mask_passwords`)."""
        return mask_passwords(self.url)

    def __repr__(self) -> str:
        return (f"HttpFunction({self.function_id!r}, {self.shown_url!r}, method={self.method!r}, "
                f"timeout_ms={self.timeout_ms}, owner_worker_id={self.owner_worker_id!r})")


# A header name is a token (RFC 9110 section 5.1). A value may hold visible characters, SP, HTAB and obs-text (5.5);
# the client sends a str value as UTF-8, so any character goes but the control ones and lone surrogates.
_FIELD_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_NAME_CHAR: Final = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")  # the first character a name may not hold
_FIELD_VALUE_FORBIDDEN: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


def parse_invocation(function_id: str, raw: Any, env: Mapping[str, str], owner: str | None = None) -> HttpFunction:
    """Validate an ``HttpInvocationRef``; :class:`EngineError` ``invalid_invocation`` names the bad key.

    Example:
        >>> parse_invocation("f", {"url": "https://x.example/h", "method": "put", "timeout_ms": 500}, {}).method
        'PUT'
    """
    if not isinstance(raw, Mapping):  # a bare URL string is the likely mistake, with its secrets: masked
        raise _failure("invalid_invocation", f"{function_id}: invocation must be an object, got {raw!r}")
    url = raw.get("url")
    if not isinstance(url, str) or not url:
        raise EngineError("invalid_invocation", f"{function_id}: invocation.url must be a non-empty string")
    method = raw.get("method") or "POST"
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise EngineError("invalid_invocation",
                          f"{function_id}: invocation.method {method!r} is not one of {', '.join(METHODS)}")
    timeout_ms = raw.get("timeout_ms")
    if timeout_ms is None:
        timeout_ms = DEFAULT_TIMEOUT_MS
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
        raise EngineError("invalid_invocation",
                          f"{function_id}: invocation.timeout_ms must be a positive integer, got {timeout_ms!r}")
    headers = raw.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in headers.items()):
        raise EngineError("invalid_invocation", f"{function_id}: invocation.headers must map strings to strings")
    auth = resolve_auth(raw.get("auth"), env)
    for name, value in headers.items():
        _check_field(function_id, "invocation.headers", name, value)
    if auth is not None and auth.kind != "hmac":  # an HMAC signature is hex; these send the secret as it is
        _check_field(function_id, "invocation.auth", *auth.header_for("", b""))
    return HttpFunction(function_id, url, method.upper(), timeout_ms, tuple(headers.items()), auth, owner)


def _check_field(function_id: str, where: str, name: str, value: str) -> None:
    """``invalid_invocation`` for a header HTTP does not allow, naming it but never quoting its value (often the
    secret).

    Refused at registration: the HTTP client refuses CR, LF and NUL only as it sends (every call failed), and sends
    other control characters as they are.
    """
    if not _FIELD_NAME.fullmatch(name):
        # quoted up to its first character HTTP does not allow only: a whole header line put in the name by mistake
        # ("Authorization: Bearer …") holds its value after it
        bad = _FIELD_NAME_CHAR.search(name)
        what = (f"{name[:bad.start()][:_CHAIN_PART_CHARS]!r} then {name[bad.start()]!r}" if bad is not None
                else "an empty one")
        raise EngineError("invalid_invocation", f"{function_id}: {where} has a header name HTTP does not allow: "
                                                f"{what} (letters, digits and !#$%&'*+-.^_`|~ only)")
    if _FIELD_VALUE_FORBIDDEN.search(value):
        raise EngineError("invalid_invocation", f"{function_id}: {where}: the value of header {name} holds a character "
                                                "HTTP forbids (CR, LF, NUL or another control character) or a lone "
                                                "surrogate")


class _Refused(OSError):
    """A vetting refusal raised inside aiohttp's connector, which passes only ``OSError``\\ s through."""

    def __init__(self, rejected: UrlRejected) -> None:
        super().__init__(f"{rejected}: {rejected.detail}")
        self.rejected = rejected


class VettingResolver(AbstractResolver):
    """aiohttp resolver that looks each name up once through the current :class:`UrlRules` and answers only
    vetted addresses, so the client connects to exactly what was checked (no DNS rebinding window).

    ``rules`` is read at every lookup, so a module whose rules change is obeyed at once.
    """

    def __init__(self, rules: Callable[[], UrlRules]) -> None:
        self._rules = rules

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        """Vetted addresses of ``host``; a refusal surfaces as :class:`aiohttp.ClientConnectorError`."""
        try:
            answers = await self._rules().resolve(host, port, family)
        except UrlRejected as exc:
            raise _Refused(exc) from None
        return [ResolveResult(hostname=host, host=address, port=answer_port, family=answer_family, proto=0,
                              flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
                for answer_family, address, answer_port in answers]

    async def close(self) -> None:
        """Nothing to release: lookups use the event loop's resolver."""


def _same_host(rules_host: str, client_host: str) -> bool:
    def canonical(host: str) -> str:
        try:
            return ipaddress.ip_address(host.split("%", 1)[0]).compressed
        except ValueError:
            return host.lower()

    return canonical(rules_host) == canonical(client_host)


def _client_url(rules: UrlRules, url: str) -> URL:
    """``url`` as the HTTP client will read it, after every rule that needs no DNS; :class:`UrlRejected`
    ``Invalid URL`` when the client would read another host than the rules checked (a parser differential)."""
    parts = rules.check_literal(url)
    try:
        target = URL(url)
    except ValueError as exc:
        raise UrlRejected("Invalid URL", f"the HTTP client cannot parse {url!r}: {exc}") from None
    if target.host is None or not _same_host(parts.hostname or "", target.host):
        raise UrlRejected("Invalid URL", f"{url!r} names host {parts.hostname!r} to the URL rules but "
                                         f"{target.host!r} to the HTTP client")
    return target


def _failure(code: str, message: str) -> EngineError:
    """An error whose message may quote the endpoint's URL, itself or inside the HTTP client's text (aiohttp's
    response errors end with ``url=...``): it travels back to the caller and into logs, so secrets are masked."""
    return EngineError(code, mask_passwords(message))


def _rejected(exc: UrlRejected) -> EngineError:
    """``url_validation_failed`` with production's message first, then what exactly was wrong."""
    return _failure("url_validation_failed", f"{exc}: {exc.detail}" if exc.detail else str(exc))


# Each part of an error chain, at most: a parser's message can quote what it choked on (8 KiB of a header line).
_CHAIN_PART_CHARS = 200


def _chain(exc: BaseException) -> str:
    """``outer: inner: …`` like production's error-chain messages, on one line and bounded (each part within
    ``_CHAIN_PART_CHARS``): the client's parser errors span lines and quote the bytes they refused.

    Example:
        >>> _chain(ValueError("Bad status line:\\n  b'garbage'\\n    ^"))
        "Bad status line: b'garbage' ^"
    """
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 8:
        text = " ".join((str(seen) or type(seen).__name__).split())
        if len(text) > _CHAIN_PART_CHARS:
            text = f"{text[:_CHAIN_PART_CHARS]}…"
        if not parts or text not in parts[-1]:
            parts.append(text)
        seen = seen.__cause__ or seen.__context__
    return ": ".join(parts)


def _reason(status: int, fallback: str | None) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return fallback or ""


class HttpFunctionsModule(EngineModule):
    """Functions whose body is an HTTP endpoint called by the engine.

    It serves the engine's :class:`~iii_engine.modules.base.ExternalFunctions` (registered at start):
    :meth:`register_external`, :meth:`unregister_external` and, through the returned built-in, :meth:`call`.

    Example:
        >>> module = HttpFunctionsModule(services, {"security": {"require_https": False}})  # doctest: +SKIP
        >>> await module.start()  # doctest: +SKIP
        >>> hook = {"url": "http://hooks.example.com/o"}
        >>> fn = await module.register_external("orders.hook", hook, "w1")  # doctest: +SKIP
        >>> await module.call("orders.hook", {"id": 7})  # doctest: +SKIP
        {'accepted': True}
    """

    name = "http_functions"
    class_names = ("modules::http_functions::HttpFunctionsModule",)
    enabled_by_default = False

    def __init__(self, services: EngineServices, config: Mapping[str, Any] | None = None,
                 *, env: Mapping[str, str] | None = None) -> None:
        super().__init__(services, config)
        self.rules = HttpFunctionsSettings.parse(self.config).security
        self._env: Mapping[str, str] = os.environ if env is None else env
        # by (function id, owner): when a worker overwrites another's registration of an id, the engine keeps the
        # first one to restore it when the second owner leaves (E5), so both endpoints must be kept, each with its own
        self._endpoints: dict[tuple[str, str | None], HttpFunction] = {}
        self._session: aiohttp.ClientSession | None = None
        self.max_response_bytes = MAX_RESPONSE_BYTES

    async def start(self) -> None:
        """Open the HTTP client: every name it connects to is resolved and vetted by :class:`VettingResolver`."""
        # No DNS cache: each new connection is vetted under the current rules. trust_env=False: a proxy from
        # the environment would resolve the name itself, out of the rules' reach.
        connector = aiohttp.TCPConnector(resolver=VettingResolver(lambda: self.rules), use_dns_cache=False)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)
        self.services.serve_external_functions(self)

    async def stop(self) -> None:
        """Close the HTTP client."""
        self.services.serve_external_functions(None)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def register_external(self, function_id: str, invocation_config: Any,
                                owner_worker_id: str | None) -> BuiltinFunction:
        """Check and remember an HTTP-invoked function; the returned built-in routes calls to :meth:`call`.

        Raises :class:`EngineError`: ``url_validation_failed`` (message as production's), ``secret_not_found`` /
        ``token_not_found`` / ``api_key_not_found`` for a missing environment variable, ``invalid_invocation`` or
        ``invalid_auth`` for a malformed object.
        """
        function = parse_invocation(function_id, invocation_config, self._env, owner_worker_id)
        try:
            await self.rules.check(function.url)
            _client_url(self.rules, function.url)
        except UrlRejected as exc:
            raise _rejected(exc) from None
        self._endpoints[(function_id, owner_worker_id)] = function
        log.info("HTTP-invoked function %s -> %s %s", function_id, function.method, function.shown_url)

        async def handler(data: Any, ctx: InvocationContext) -> Any:
            # this registration's own endpoint, also once another owner's registration of the id came and went
            if self._endpoints.get((function_id, owner_worker_id)) is not function:
                raise EngineError("function_not_found", f"Function {function_id} not found")
            return await self._call(function, data)

        return BuiltinFunction(function_id, handler, description=f"HTTP {function.method} {function.shown_url}")

    def unregister_external(self, function_id: str, owner_worker_id: str | None) -> None:
        """Forget ``owner_worker_id``'s HTTP-invoked registration of ``function_id`` (its worker left, it was
        unregistered or replaced)."""
        self._endpoints.pop((function_id, owner_worker_id), None)

    @property
    def functions(self) -> dict[str, HttpFunction]:
        """The endpoints kept, by function id (the latest registration of an id several owners registered)."""
        return {function_id: function for (function_id, _), function in self._endpoints.items()}

    async def call(self, function_id: str, data: Any, ctx: InvocationContext | None = None) -> Any:
        """Call the endpoint with ``data`` as JSON and return its JSON result (``None`` for an empty 2xx body)."""
        function = self.functions.get(function_id)
        if function is None:
            raise EngineError("function_not_found", f"Function {function_id} not found")
        return await self._call(function, data)

    async def _call(self, function: HttpFunction, data: Any) -> Any:
        try:
            # Names are looked up and vetted by VettingResolver as the connection is made, not here: a
            # lookup here and another there is the DNS rebinding window.
            target = _client_url(self.rules, function.url)
        except UrlRejected as exc:
            raise _rejected(exc) from None
        body = dumps(data).encode()
        headers = self._headers(function, body)
        if self._session is None:
            raise EngineError("http_request_failed", "HttpFunctionsModule is not started")
        try:
            async with self._session.request(
                    function.method, target, data=body, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=function.timeout_ms / 1000)) as response:
                try:
                    raw = await self._read_bounded(function, response)
                except TimeoutError:
                    raise _failure("http_response_failed", f"the response of {function.url} did not arrive whole "
                                                           f"within {function.timeout_ms} ms") from None
                except aiohttp.ClientError as exc:
                    raise _failure("http_response_failed",
                                   f"reading the response of {function.url} failed: {_chain(exc)}") from None
                return self._result(function, response.status, response.reason, raw)
        except TimeoutError:
            raise _failure("http_request_failed",
                           f"request to {function.url} timed out after {function.timeout_ms} ms") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _Refused):
                raise _rejected(exc.os_error.rejected) from None
            raise _failure("http_request_failed", f"request to {function.url} failed: {_chain(exc)}") from None
        except (aiohttp.ClientError, ValueError) as exc:
            # ValueError: what the client raises for a request it refuses to send (a header it will not write)
            raise _failure("http_request_failed", f"request to {function.url} failed: {_chain(exc)}") from None

    async def _read_bounded(self, function: HttpFunction, response: aiohttp.ClientResponse) -> bytes:
        """The whole body, or ``http_response_failed`` as soon as it is known to exceed the bound."""
        limit = self.max_response_bytes

        def too_big() -> EngineError:
            return _failure("http_response_failed",
                            f"response of {function.url} is larger than {limit} bytes; not read")

        declared = response.content_length
        if declared is not None and declared > limit and not response.headers.get("Content-Encoding"):
            raise too_big()
        raw = bytearray()
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            raw += chunk
            if len(raw) > limit:  # counted after decompression, so a compressed bomb stops here too
                raise too_big()
        return bytes(raw)

    def _headers(self, function: HttpFunction, body: bytes) -> CIMultiDict[str]:
        timestamp = str(int(time.time()))
        headers: CIMultiDict[str] = CIMultiDict()
        headers["Content-Type"] = "application/json"
        headers["x-iii-Function-Path"] = function.function_id
        headers["x-iii-Invocation-ID"] = str(uuid.uuid4())
        headers["x-iii-Timestamp"] = timestamp
        for name, value in function.headers:
            headers.add(name, value)  # added, not replacing, as production's client does
        if function.auth is not None:
            headers.add(*function.auth.header_for(timestamp, body))
        return headers

    @staticmethod
    def _result(function: HttpFunction, status: int, reason: str | None, raw: bytes) -> Any:
        if 200 <= status < 300:
            if not raw.strip():
                return None
            try:
                return loads(raw)
            except ValueError:
                snippet = raw[:80].decode("utf-8", "replace")
                raise _failure("invalid_response", f"response of {function.url} is not JSON: {snippet!r}") from None
        try:
            parsed = loads(raw) if raw.strip() else None
        except ValueError:
            parsed = None
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict):
            code = error.get("code")
            message = error.get("message")
            raise EngineError(code if isinstance(code, str) and code else "http_error",
                              message if isinstance(message, str) else "HTTP request failed")
        raise EngineError("http_error", f"HTTP {status} {_reason(status, reason)}".rstrip())
