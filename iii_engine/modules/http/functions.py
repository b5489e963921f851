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

import asyncio
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
from typing import Any, ClassVar, Final, Protocol

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict
from yarl import URL

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii._cli import mask_passwords
from iii.loss_log import LossLog
from iii.protocol.client import RESULT_NOT_SENT
from iii.protocol.worker_session import REPLY_REASON_CLIP, clip_text
from iii.wire import dumps, loads

from ... import closing
from ...config import DEFAULT_CONTROL_MAX_MESSAGE_SIZE, EngineConfig
from ...fd_limits import open_files_share
from ...invocations import CALLER_LEFT, ENGINE_STOPPING, stopped
from ...limits import SKIP_LOG_INTERVAL_S, TOO_MANY_CALLS
from ...settings import Field, Settings, UnknownKeys
from ..base import BuiltinFunction, EngineError, EngineModule, EngineServices, InvocationContext
from .content_coding import BodyDecoder, BodyError, wire_bound
from .endpoint_client import ACCEPT_ENCODING, BoundedResponse, FreshConnector, InterimResponsesError
from .security import ResolvedAuth, UrlRejected, UrlRules, resolve_auth

# SSRF (issue #8): the URL rules look a name up once and the connection uses exactly the addresses that lookup
# returned (VettingResolver), so DNS cannot answer a public address to the check and a private one to the
# connect. Literal addresses never reach a resolver; UrlRules.check_literal covers them, and _client_url makes
# sure the rules and the HTTP client read the same host out of the URL. Redirects are never followed.

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS: Final = 24 * 3600 * 1000
"""Largest ``timeout_ms`` a registration may give (24 h, as the bridge's): it bounds how long a call holds its place
under :attr:`HttpFunctionsSettings.max_calls_in_flight` (and 10**400 ms overflowed the HTTP client at every call)."""
MAX_RESPONSE_BYTES = DEFAULT_CONTROL_MAX_MESSAGE_SIZE
"""The engine's default ``max_message_size``; the module reads no larger (decompressed) response body than the
engine's own setting: a bigger result could not reach its caller in one frame anyway."""
DEFAULT_MAX_CONNECTIONS_PER_HOST = 100
MAX_DEFAULT_CONNECTIONS: Final = 1024
"""Largest default ``max_connections`` (an eighth of the open-file limit below 8,192)."""
DEFAULT_MAX_WAITING_PER_HOST = 1_000
DEFAULT_MAX_CALLS_IN_FLIGHT = 10_000
CALLER_SHARES: Final = 4
"""``max_calls_per_caller`` is by default this fraction of ``max_calls_in_flight``: one worker (or the calls workers
that disconnected left running) fills at most a quarter of it."""
# an error object's code and message, at most, as an endpoint's answer gives them (a 100 KB code was passed on)
_ERROR_CODE_CHARS = 200
# a URL quoted in an error message or a log line, at most (a 100 KB URL made errors of 100,174 characters)
_URL_CHARS = 200
_VOID_MESSAGE_CHARS = 500  # a failed void call's message in the warning
PIECE_BYTES: Final = 16
"""What each piece of a response body (an HTTP chunk, or what one read of an unchunked body brought) counts against
the body's bound on the wire, at least: each costs the parser and the read loop the same whatever its size, and a body
of 1-byte chunks cost about 10 s of the engine's CPU per call before it reached the 4 MiB bound (0.6 s now). A count
of pieces instead refused streamed JSON of one element per chunk (80,001 chunks of 207 KB) and slow writers'
bodies."""
# Control characters (C0, DEL, C1, the Unicode line separators, and the format characters that reorder or hide
# text: bidi overrides and isolates, zero-width ones, the BOM) in an endpoint's text: escaped, so that it cannot start
# a line of its own in a log (CR LF and a forged record), colour a terminal or turn a log line around.
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class HttpCore(EngineServices, Protocol):
    """What the module needs beyond :class:`EngineServices`: the engine's configuration (its ``max_message_size``
    bounds a response), its worker events (a caller's disconnect stops its answered calls) and its connected
    workers (a call whose worker left before it started counts as left running)."""

    config: EngineConfig

    @property
    def workers(self) -> Mapping[str, object]:
        """The workers connected, by id."""

    def add_worker_listener(self, listener: Callable[[str, str], None]) -> None:
        """Be told about worker events (``worker_disconnected``, with the worker's id)."""


class HttpFunctionsSettings(Settings):
    """The module's settings (unknown keys are logged and ignored): ``security`` (production's), and our bounds:

    - ``max_connections_per_host`` (100): connections open to one endpoint (scheme, host, port) at once, and never
      more than half of ``max_connections``: one endpoint that never answers holds at most its own share, and a
      call to another host is sent at once. A call past it waits for one of them, within its ``timeout_ms``.
    - ``max_connections`` (default an eighth of the open-file limit, at most 1,024): connections open to every
      endpoint together, so that endpoints that never answer cannot take the engine's file descriptors (with no
      total, 100 such endpoints took 1,023 of 1,024 and workers could no longer connect).
    - ``max_waiting_per_host`` (1,000): calls waiting for a connection to one endpoint; one more is refused at once
      (``too_many_calls``).
    - ``max_calls_in_flight`` (10,000): HTTP calls running engine-wide (waiting for a connection or on one),
      whoever made them; one more is refused at once (``too_many_calls``).
    - ``max_calls_per_caller`` (default a quarter of ``max_calls_in_flight``): HTTP calls one worker has in flight,
      answered or void; one more is refused at once, so one worker cannot fill ``max_calls_in_flight`` for the
      others. A worker that disconnects leaves its void calls running (its answered ones are stopped), and the calls
      so left by every worker that disconnected share one such share: past it the ones not sent yet are dropped
      (counted in ``refused``, logged), so a worker that reconnects in a loop does not get a new share each time.
      Calls the engine makes itself (queue jobs, triggers) are bounded by their own modules, not here.

    Example:
        >>> s = HttpFunctionsSettings.parse({"max_connections_per_host": 8})
        >>> s.max_connections_per_host, s.max_waiting_per_host, s.max_calls_in_flight, s.max_calls_per_caller
        (8, 1000, 10000, None)
    """

    unknown_keys: ClassVar[UnknownKeys] = "warn"
    label: ClassVar[str] = "HTTP functions settings"

    security: UrlRules = Field(default_factory=UrlRules)
    max_connections_per_host: int = Field(DEFAULT_MAX_CONNECTIONS_PER_HOST, ge=1)
    max_connections: int | None = Field(None, ge=2)
    max_waiting_per_host: int = Field(DEFAULT_MAX_WAITING_PER_HOST, ge=0)
    max_calls_in_flight: int = Field(DEFAULT_MAX_CALLS_IN_FLIGHT, ge=1)
    max_calls_per_caller: int | None = Field(None, ge=1)


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
# Headers that frame, route or encode the request and its answer: the engine's to set. A worker's were sent beside the
# engine's own: Content-Length 3 cut the caller's data to its first 3 bytes and the call still succeeded, Host sent it
# to another virtual host than the URL's (past the allowlist), Expect held the body back, Accept-Encoding asked for an
# encoding the engine does not decode.
RESERVED_HEADERS: Final = ("Accept-Encoding", "Connection", "Content-Encoding", "Content-Length", "Expect", "Host",
                           "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
                           # what reverse proxies route by, as Host
                           "Forwarded", "X-Forwarded-Host", "X-Original-URL", "X-Rewrite-URL",
                           "X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override",
                           # the engine's own: an endpoint reading the last of two would read the worker's
                           "x-iii-Function-Path", "x-iii-Invocation-ID", "x-iii-Timestamp", "x-iii-Signature")
_RESERVED: Final = frozenset(name.lower() for name in RESERVED_HEADERS)


def parse_invocation(function_id: str, raw: Any, env: Mapping[str, str], owner: str | None = None,
                     rules: UrlRules | None = None) -> HttpFunction:
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
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or not 0 < timeout_ms <= MAX_TIMEOUT_MS:
        # repr of a huge integer is thousands of digits (past 4,300 it raises)
        shown = (f"an integer of {timeout_ms.bit_length()} bits" if isinstance(timeout_ms, int)
                 and timeout_ms.bit_length() > 64 else repr(timeout_ms))
        raise EngineError("invalid_invocation", f"{function_id}: invocation.timeout_ms must be a positive integer "
                                                f"of at most {MAX_TIMEOUT_MS} (24 h), got {shown}")
    headers = raw.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in headers.items()):
        raise EngineError("invalid_invocation", f"{function_id}: invocation.headers must map strings to strings")
    auth = resolve_auth(raw.get("auth"), env, (rules or UrlRules()).allows_env)
    for name, value in headers.items():
        _check_field(function_id, "invocation.headers", name, value)
    if auth is not None and auth.kind != "hmac":  # an HMAC signature is hex; these send the secret as it is
        _check_field(function_id, "invocation.auth", *auth.header_for("", b""))
    _check_url_credentials(function_id, url, headers, auth)
    return HttpFunction(function_id, url, method.upper(), timeout_ms, tuple(headers.items()), auth, owner)


def _check_url_credentials(function_id: str, url: str, headers: Mapping[str, str], auth: ResolvedAuth | None) -> None:
    """``invalid_invocation`` for a URL with credentials (``user:pass@``) and an ``Authorization`` header too (from
    ``auth`` or ``headers``): the HTTP client sends a URL's credentials as that header and refuses both at each call
    (every call failed with http_request_failed). A URL it cannot parse is left to the URL rules."""
    try:
        target = URL(url)
    except ValueError:
        return
    if target.user is None and target.password is None:
        return
    sent = [name for name, _ in headers.items()]
    if auth is not None and auth.kind != "hmac":
        sent.append(auth.header_for("", b"")[0])
    if any(name.lower() == "authorization" for name in sent):
        raise EngineError("invalid_invocation", f"{function_id}: invocation.url holds credentials (user:password@), "
                                                "which are sent as the Authorization header, and invocation.auth or "
                                                "invocation.headers sets that header too: keep one of them")


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
    if name.lower() in _RESERVED:
        raise EngineError("invalid_invocation", f"{function_id}: {where} sets header {name}, which the engine sets "
                                                "itself: it frames, routes or encodes the request and its answer "
                                                f"({', '.join(RESERVED_HEADERS)})")
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


def _whose(owner: str | None) -> str:
    """Whose calls these are, for a message: a worker's, or the engine's own (queue jobs, triggers)."""
    return f"worker {owner}" if owner is not None else "the engine"


def _url(function: HttpFunction) -> str:
    """The endpoint's URL as errors and logs quote it: secrets masked, and clipped."""
    return clip_text(function.shown_url, _URL_CHARS)


def _visible(text: str) -> str:
    r"""``text`` with its control characters escaped as Python writes them.

    Example:
        >>> _visible("a\r\nb\x1b[31m")
        'a\\r\\nb\\x1b[31m'
    """
    return _CONTROL_CHARS.sub(lambda found: repr(found.group())[1:-1], text)


def _not_http(exc: BaseException) -> str | None:
    """What the HTTP client's parser refused in an answer, if that is why ``exc`` was raised: aiohttp words it as an
    HTTP status (``400, message='Bad status line …'``), which read as if the endpoint had answered 400."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, aiohttp.http_exceptions.HttpProcessingError):
            return f"the endpoint's answer is not valid HTTP: {_chain(ValueError(seen.message))}"
        seen = seen.__cause__ or seen.__context__
    return None


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
    r"""A status's phrase: the standard one, else the endpoint's own (escaped, clipped: it reaches callers and logs).

    Example:
        >>> _reason(404, "Whatever"), _reason(599, "\x1b[2JFAKE")
        ('Not Found', '\\x1b[2JFAKE')
    """
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return clip_text(_visible(fallback or ""), _ERROR_CODE_CHARS)


def _stopped(function_id: str, why: str) -> EngineError:
    """The ``invocation_stopped`` error of a call the module stopped (as the engine's own for a routed call)."""
    body = stopped(function_id, why)
    return EngineError(body["code"], body["message"])


class _Counted(EngineError):
    """A call refused at a bound: counted and logged as such already (``refused``)."""


class _Call:
    """One HTTP call in flight: its request runs in :attr:`task`, which :meth:`HttpFunctionsModule._stop_call`
    cancels with :attr:`stopped` as the error its caller gets."""

    __slots__ = ("caller", "function", "left", "owner", "sent", "stopped", "task")

    def __init__(self, function: HttpFunction, caller: str | None, owner: str | None) -> None:
        self.function = function
        #: the worker waiting for the answer (``None``: a void call, or an engine-internal caller)
        self.caller = caller
        #: the worker that made the call, answered or void, whose max_calls_per_caller share it holds (``None``: an
        #: engine-internal caller)
        self.owner = owner
        #: its worker disconnected: it holds a place in the share of calls left running instead
        self.left = False
        self.task: asyncio.Task[Any] | None = None
        #: the request went to the endpoint (past its wait for a connection)
        self.sent = False
        self.stopped: EngineError | None = None


class _Host:
    """The connections to one endpoint (scheme, host, port): at most ``limit`` in use; calls past it wait, in
    :attr:`queue` by the worker that made them."""

    __slots__ = ("queue", "slots", "users", "waiting")

    def __init__(self, limit: int) -> None:
        self.slots = asyncio.Semaphore(limit)
        #: the calls waiting for a slot, by the worker that made them (``None``: the engine's own), oldest first
        self.queue: dict[str | None, list[_Call]] = {}
        self.waiting = 0
        #: calls holding or waiting for a slot (the entry goes when none is left)
        self.users = 0

    def join(self, call: _Call) -> None:
        """``call`` waits for a slot."""
        self.queue.setdefault(call.owner, []).append(call)
        self.waiting += 1

    def leave(self, call: _Call) -> None:
        """``call`` waits no more (once; a call that gave way left already)."""
        mine = self.queue.get(call.owner)
        if mine is None or call not in mine:
            return
        mine.remove(call)
        self.waiting -= 1
        if not mine:
            del self.queue[call.owner]

    def give_way(self, owner: str | None) -> _Call | None:
        """The newest waiting call of the worker with the most waiting calls, taken out of the queue, when that
        worker has at least two more waiting than ``owner`` has (one more, and the two would take turns giving way);
        ``None`` when no worker has."""
        top = max(self.queue, key=lambda worker: len(self.queue[worker]))
        if len(self.queue[top]) < len(self.queue.get(owner, ())) + 2:
            return None
        for call in reversed(self.queue[top]):
            if call.stopped is None:  # one already stopped (its caller left) is on its way out anyway
                self.leave(call)
                return call
        return None


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

    def __init__(self, services: HttpCore, config: Mapping[str, Any] | None = None,
                 *, env: Mapping[str, str] | None = None) -> None:
        super().__init__(services, config)
        self.core = services
        self.settings = HttpFunctionsSettings.parse(self.config)
        self.rules = self.settings.security
        self._env: Mapping[str, str] = os.environ if env is None else env
        # by (function id, owner): when a worker overwrites another's registration of an id, the engine keeps the
        # first one to restore it when the second owner leaves (E5), so both endpoints must be kept, each with its own
        self._endpoints: dict[tuple[str, str | None], HttpFunction] = {}
        self._session: aiohttp.ClientSession | None = None
        # a response is a result sent to its caller in one frame: bounded as a worker's result is
        self.max_response_bytes = services.config.max_message_size
        self._calls: dict[_Call, None] = {}  # every call in flight (max_calls_in_flight), in start order
        self._by_caller: dict[str, set[_Call]] = {}  # the answered calls of each worker caller
        self._per_caller: dict[str, int] = {}  # the calls each worker has in flight (max_calls_per_caller)
        self._left_running = 0  # the calls workers that disconnected left running (one more such share)
        #: calls one worker has in flight at most, and those workers that disconnected left running together
        self.per_caller = (self.settings.max_calls_per_caller
                           or max(1, self.settings.max_calls_in_flight // CALLER_SHARES))
        self._hosts: dict[tuple[str, str, int], _Host] = {}
        #: connections to one endpoint at most: max_connections_per_host, within half of max_connections (at start)
        self.per_host = self.settings.max_connections_per_host
        self._stopping = False
        self._refused_log = LossLog(self._log_refused, SKIP_LOG_INTERVAL_S)
        self._latest_refusal = ""
        #: calls refused at a bound, and calls whose wait for a connection outlasted their timeout_ms
        self.refused = 0
        self.connection_waits_timed_out = 0
        self._void_log = LossLog(self._log_void_failed, SKIP_LOG_INTERVAL_S)
        self._latest_void_failure = ""
        #: workers' void calls that failed (their callers asked for no answer: logged, rate-limited)
        self.void_failed = 0

    async def start(self) -> None:
        """Open the HTTP client: every name it connects to is resolved and vetted by :class:`VettingResolver`."""
        # No DNS cache: each new connection is vetted under the current rules. trust_env=False: a proxy from
        # the environment would resolve the name itself, out of the rules' reach.
        # No total cap (aiohttp's default is 100 for every host together): an endpoint that never answers took all
        # of them and calls to healthy hosts timed out unsent. Each host has its own, kept by _Host before the
        # request (the connector's is the same number, a backstop).
        total = self.settings.max_connections or open_files_share(8, at_most=MAX_DEFAULT_CONNECTIONS)
        per_host = self.per_host = min(self.settings.max_connections_per_host, max(1, total // 2))
        connector = FreshConnector(resolver=VettingResolver(lambda: self.rules), use_dns_cache=False,
                                   limit=total, limit_per_host=per_host)
        # Bodies are decoded by _read_bounded (BodyDecoder): aiohttp's decoding took a cut-off gzip body for whole.
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False,
                                              response_class=BoundedResponse)
        self._stopping = False
        self.core.add_worker_listener(self._worker_event)
        self.services.serve_external_functions(self)

    async def stop(self) -> None:
        """Stop the calls in flight (their callers get ``invocation_stopped``, the engine is stopping), then close
        the HTTP client."""
        self.services.serve_external_functions(None)
        self._stopping = True
        calls = list(self._calls)
        for call in calls:
            self._stop_call(call, _stopped(call.function.function_id, ENGINE_STOPPING))
        tasks = [call.task for call in calls if call.task is not None]
        if tasks:
            # one line, not one traceback per call (60,000 calls logged 86 MB)
            log.info("HTTP functions: %d call(s) in flight stopped by the engine's stop", len(tasks))
            await asyncio.wait(tasks, timeout=closing.CLOSE_TIMEOUT_S)
        self._refused_log.close()
        self._void_log.close()
        if self._session is not None:
            connector = self._session.connector
            if isinstance(connector, FreshConnector):
                connector.flush_log()
            await self._session.close()
            self._session = None

    def stats(self) -> dict[str, int]:
        """Counters: HTTP calls in flight, of them waiting for a connection, the most one worker has in flight, those
        workers that disconnected left running, calls refused at a bound (or dropped past the share of those left
        running), calls whose wait for a connection outlasted their ``timeout_ms``, and workers' void calls that
        failed otherwise (an error from the endpoint, no connection, a timeout, ...).

        Example:
            >>> module.stats()  # doctest: +SKIP
            {'in_flight': 150, 'waiting_for_connection': 50, 'busiest_caller': 100, 'left_running': 0, 'refused': 0,
             'connection_waits_timed_out': 0, 'void_failed': 0}
        """
        return {"in_flight": len(self._calls), "waiting_for_connection": sum(h.waiting for h in self._hosts.values()),
                "busiest_caller": max(self._per_caller.values(), default=0), "left_running": self._left_running,
                "refused": self.refused, "connection_waits_timed_out": self.connection_waits_timed_out,
                "void_failed": self.void_failed}

    async def register_external(self, function_id: str, invocation_config: Any,
                                owner_worker_id: str | None) -> BuiltinFunction:
        """Check and remember an HTTP-invoked function; the returned built-in routes calls to :meth:`call`.

        Raises :class:`EngineError`: ``url_validation_failed`` (message as production's), ``secret_not_found`` /
        ``token_not_found`` / ``api_key_not_found`` for a missing environment variable, ``invalid_invocation`` or
        ``invalid_auth`` for a malformed object.
        """
        function = parse_invocation(function_id, invocation_config, self._env, owner_worker_id, self.rules)
        try:
            await self.rules.check(function.url)
            _client_url(self.rules, function.url)
        except UrlRejected as exc:
            raise _rejected(exc) from None
        self._endpoints[(function_id, owner_worker_id)] = function
        log.info("HTTP-invoked function %s -> %s %s", function_id, function.method, _url(function))

        async def handler(data: Any, ctx: InvocationContext) -> Any:
            try:
                # this registration's own endpoint, also once another owner's registration of the id came and went
                if not self._registered(function):
                    raise EngineError("function_not_found", f"Function {function_id} not found")
                return await self._run(function, data, ctx)
            except EngineError as exc:
                # A worker's void call: the engine drops its outcome, so a failure's only trace is here (before,
                # an endpoint's 500, a refused connection or a timeout left none). An engine-internal caller (a
                # queue, a trigger) has the error itself.
                if (ctx.invocation_id is None and ctx.caller_worker_id is not None and not isinstance(exc, _Counted)
                        and exc.code != "invocation_stopped"):  # (the engine stopped it, or its caller left)
                    self._count_void_failed(function, exc)
                raise

        return BuiltinFunction(function_id, handler, description=f"HTTP {function.method} {function.shown_url}")

    def unregister_external(self, function_id: str, owner_worker_id: str | None) -> None:
        """Forget ``owner_worker_id``'s HTTP-invoked registration of ``function_id`` (its worker left, it was
        unregistered or replaced); its calls still waiting for a connection fail with ``function_not_found``
        unsent (before, they went out once a connection came free, 50 of 150 after the unregister)."""
        function = self._endpoints.pop((function_id, owner_worker_id), None)
        if function is None:
            return
        for call in [call for call in self._calls if call.function is function and not call.sent]:
            self._stop_call(call, EngineError("function_not_found", f"Function {function_id} not found"))

    @property
    def functions(self) -> dict[str, HttpFunction]:
        """The endpoints kept, by function id (the latest registration of an id several owners registered)."""
        return {function_id: function for (function_id, _), function in self._endpoints.items()}

    async def call(self, function_id: str, data: Any, ctx: InvocationContext | None = None) -> Any:
        """Call the endpoint with ``data`` as JSON and return its JSON result (``None`` for an empty 2xx body)."""
        function = self.functions.get(function_id)
        if function is None:
            raise EngineError("function_not_found", f"Function {function_id} not found")
        return await self._run(function, data, ctx or InvocationContext())

    def _registered(self, function: HttpFunction) -> bool:
        return self._endpoints.get((function.function_id, function.owner_worker_id)) is function

    async def _run(self, function: HttpFunction, data: Any, ctx: InvocationContext) -> Any:
        """:meth:`_call` in a task of its own, counted under ``max_calls_in_flight``, that the engine's stop, the
        caller's disconnect (an answered call) or the function's unregister (a call not sent yet) can stop with an
        error of their own: cancelled from outside, the built-in's task ended as internal_error with a traceback."""
        if self._stopping:
            raise _stopped(function.function_id, ENGINE_STOPPING)
        if len(self._calls) >= self.settings.max_calls_in_flight:
            self._refuse(function, f"{len(self._calls)} HTTP calls are in flight engine-wide "
                                   f"(max_calls_in_flight {self.settings.max_calls_in_flight})")
        owner = ctx.caller_worker_id
        left = owner is not None and owner not in self.core.workers
        if left:
            # its worker left before this call started (its disconnect came first): it has only the share of calls
            # left running
            if self._left_running >= self.per_caller:
                self._refuse(function, f"its worker {owner} disconnected and {self._left_running} HTTP calls are "
                                       f"left running by workers that disconnected "
                                       f"(max_calls_per_caller {self.per_caller})")
            self._left_running += 1
        elif owner is not None:
            held = self._per_caller.get(owner, 0)
            if held >= self.per_caller:
                # before: one worker's void calls to endpoints that never answer filled max_calls_in_flight, and
                # every other worker's HTTP call was refused for their timeout_ms
                self._refuse(function, f"worker {owner} has {held} HTTP calls in flight "
                                       f"(max_calls_per_caller {self.per_caller})")
            self._per_caller[owner] = held + 1
        # An answered call from a worker ends with its caller (nobody is left to take the answer); a void call goes
        # on, as its caller asked: a worker that sends void calls and exits must not lose them (within the share of
        # calls left running, see _worker_event).
        call = _Call(function, owner if ctx.invocation_id is not None else None, owner)
        call.left = left
        task = asyncio.get_running_loop().create_task(self._call(function, data, call))
        call.task = task
        self._calls[call] = None
        if call.caller is not None:
            self._by_caller.setdefault(call.caller, set()).add(call)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if call.stopped is not None and task.cancelled() and (current is None or not current.cancelling()):
                raise call.stopped from None
            raise  # this task's own cancel: the task of the request went with it
        finally:
            del self._calls[call]
            self._give_back(call)
            if call.caller is not None:
                mine = self._by_caller.get(call.caller)
                if mine is not None:
                    mine.discard(call)
                    if not mine:
                        del self._by_caller[call.caller]

    def _give_back(self, call: _Call) -> None:
        if call.left:
            self._left_running -= 1
        elif call.owner is not None and call.owner in self._per_caller:  # (gone: its worker left, see _worker_event)
            held = self._per_caller[call.owner] - 1
            if held:
                self._per_caller[call.owner] = held
            else:
                del self._per_caller[call.owner]

    def _stop_call(self, call: _Call, error: EngineError) -> None:
        if call.stopped is None and call.task is not None and not call.task.done():
            call.stopped = error
            call.task.cancel()

    def _worker_event(self, event: str, worker_id: str) -> None:
        if event != "worker_disconnected":
            return
        for call in self._by_caller.pop(worker_id, ()):
            self._stop_call(call, _stopped(call.function.function_id, CALLER_LEFT))
        if not self._per_caller.pop(worker_id, 0):
            return
        # Its void calls go on, now in the share of calls left running: a worker reconnecting in a loop got a new
        # max_calls_per_caller each time and filled max_calls_in_flight. Past that share the ones not sent yet are
        # dropped, newest first; those sent are on the wire and run to their end (bounded by max_connections).
        left = [call for call in self._calls if call.owner == worker_id and call.stopped is None]
        for call in left:
            call.left = True
        self._left_running += len(left)
        for call in reversed(left):
            if self._left_running <= self.per_caller:
                break
            if not call.sent:
                why = (f"its worker {worker_id} disconnected and {self._left_running} HTTP calls are left running by "
                       f"workers that disconnected (max_calls_per_caller {self.per_caller})")
                self._count_refused(call.function, why)
                self._stop_call(call, _Counted(TOO_MANY_CALLS, f"HTTP function {call.function.function_id} "
                                                               f"dropped a void call: {why}"))
                call.left = False  # (its place is given back now, not when its task ends)
                self._left_running -= 1

    def _refuse(self, function: HttpFunction, why: str) -> None:
        self._count_refused(function, why)
        raise _Counted(TOO_MANY_CALLS, f"HTTP function {function.function_id} refused its call: {why}")

    def _count_refused(self, function: HttpFunction, why: str) -> None:
        self.refused += 1
        self._latest_refusal = f"{function.function_id}: {why}"
        self._refused_log.lost("refused", self._latest_refusal)

    def _count_void_failed(self, function: HttpFunction, error: EngineError) -> None:
        self.void_failed += 1
        self._latest_void_failure = (f"{function.function_id} ({error.code}): "
                                     f"{clip_text(_visible(error.message), _VOID_MESSAGE_CHARS)}")
        self._void_log.lost("void_failed", self._latest_void_failure)

    def _log_void_failed(self, counts: Mapping[str, int], _latest: str | None) -> None:
        log.warning("HTTP functions: %d void call(s) failed since the last warning (%d in all; their callers asked "
                    "for no answer), latest %s", counts["void_failed"], self.void_failed, self._latest_void_failure)

    def _log_refused(self, counts: Mapping[str, int], _latest: str | None) -> None:
        # void calls have nobody to tell: this is their only trace
        log.warning("HTTP functions: %d call(s) refused since the last warning (%d in all), latest %s",
                    counts["refused"], self.refused, self._latest_refusal)

    async def _connection(self, function: HttpFunction, target: URL, deadline: float,
                          call: _Call) -> tuple[str, str, int]:
        """Wait (until ``deadline``) for one of the ``max_connections_per_host`` connections to ``target``'s
        endpoint; returns the key to :meth:`_release`. A wait that outlasts the call's ``timeout_ms`` fails naming
        it (before, it read "timed out" as if the endpoint had been slow). Past ``max_waiting_per_host`` the worker
        with the most calls waiting there gives way: its newest waiting call is refused (never sent) and this one
        waits in its place; when no worker has more than this call's own, this one is refused at once. Before, one
        worker's calls to a slow endpoint filled its waiting places and every other worker's call to it was
        refused."""
        key = (target.scheme, target.host or "", target.port or 0)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(self.per_host)
        if host.slots.locked():
            limit = self.settings.max_waiting_per_host
            if host.waiting >= limit:
                where = f"a connection to {key[1]}:{key[2]} (max_waiting_per_host {limit})"
                victim = host.give_way(call.owner) if limit else None
                if victim is None:
                    self._refuse(function, f"{host.waiting} calls wait for {where}")
                else:
                    why = (f"{limit} calls waited for {where}, {len(host.queue.get(victim.owner, ())) + 1} of them "
                           f"from {_whose(victim.owner)}; its newest gave way to a call from {_whose(call.owner)}")
                    self._count_refused(victim.function, why)
                    self._stop_call(victim, _Counted(TOO_MANY_CALLS, f"HTTP function {victim.function.function_id} "
                                                                     f"refused its call, not sent: {why}"))
            host.users += 1
            host.join(call)
            try:
                async with asyncio.timeout_at(deadline):
                    await host.slots.acquire()
            except BaseException as exc:
                self._forget_host(key, host)
                if not isinstance(exc, TimeoutError):
                    raise
                self.connection_waits_timed_out += 1
                raise _failure("http_request_failed", f"request to {_url(function)} not sent: no connection to "
                                                      f"{key[1]}:{key[2]} came free within {function.timeout_ms} ms "
                                                      f"({self.per_host} in use, "
                                                      f"max_connections_per_host)") from None
            finally:
                host.leave(call)
        else:
            await host.slots.acquire()  # free: returns at once
            host.users += 1
        return key

    def _release(self, key: tuple[str, str, int]) -> None:
        host = self._hosts[key]
        host.slots.release()
        self._forget_host(key, host)

    def _forget_host(self, key: tuple[str, str, int], host: _Host) -> None:
        host.users -= 1
        if host.users == 0:
            del self._hosts[key]

    async def _call(self, function: HttpFunction, data: Any, call: _Call) -> Any:
        try:
            # Names are looked up and vetted by VettingResolver as the connection is made, not here: a
            # lookup here and another there is the DNS rebinding window.
            target = _client_url(self.rules, function.url)
        except UrlRejected as exc:
            raise _rejected(exc) from None
        body = dumps(data).encode()
        if self._session is None:
            raise EngineError("http_request_failed", "HttpFunctionsModule is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + function.timeout_ms / 1000
        key = await self._connection(function, target, deadline, call)
        try:
            if not self._registered(function):  # unregistered while it waited: never sent
                raise EngineError("function_not_found", f"Function {function.function_id} not found")
            call.sent = True
            headers = self._headers(function, body)  # stamped as it is sent, not before its wait
            return await self._send(function, target, body, headers, deadline - loop.time())
        finally:
            self._release(key)

    async def _send(self, function: HttpFunction, target: URL, body: bytes, headers: CIMultiDict[str],
                    timeout_s: float) -> Any:
        assert self._session is not None
        try:
            async with self._session.request(
                    function.method, target, data=body, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=max(timeout_s, 0.001))) as response:
                try:
                    raw = await self._read_bounded(function, response)
                except TimeoutError:
                    raise _failure("http_response_failed", f"the response of {_url(function)} did not arrive whole "
                                                           f"within {function.timeout_ms} ms") from None
                except aiohttp.ClientError as exc:
                    raise _failure("http_response_failed", f"reading the response of {_url(function)} failed: "
                                                           f"{_not_http(exc) or _chain(exc)}") from None
                return self._result(function, response.status, response.reason, raw)
        except InterimResponsesError as exc:
            raise _failure("http_response_failed", f"the response of {_url(function)} was not read: {exc}") from None
        except TimeoutError:
            raise _failure("http_request_failed",
                           f"request to {_url(function)} timed out after {function.timeout_ms} ms") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _Refused):
                raise _rejected(exc.os_error.rejected) from None
            raise _failure("http_request_failed", f"request to {_url(function)} failed: {_chain(exc)}") from None
        except (aiohttp.ClientError, ValueError) as exc:
            # ValueError: what the client raises for a request it refuses to send (a header it will not write)
            raise _failure("http_request_failed", f"request to {_url(function)} failed: "
                                                  f"{_not_http(exc) or _chain(exc)}") from None

    async def _read_bounded(self, function: HttpFunction, response: aiohttp.ClientResponse) -> bytes:
        """The whole body, or ``result_not_sent`` as soon as it is known to exceed the engine's
        ``max_message_size``, as our SDK answers a worker's result over it: the endpoint ran (a queue's job is done;
        before, ``invocation_failed``, and the job was sent again) (a 60 MB body raised the engine's peak RSS from
        67 to 869 MB, and results over it sent to a caller overflowed its send buffer and cost it its connection)."""
        limit = self.max_response_bytes

        def too_big() -> EngineError:
            if not 200 <= response.status < 300:
                # a failure whatever its body: never result_not_sent, which a queue counts as done (an endpoint's
                # 500 with a big body was counted done, its job never tried again)
                return EngineError("http_error", f"HTTP {response.status} {_reason(response.status, response.reason)}"
                                                 f" (its body, larger than {limit} bytes, not read)")
            return _failure(RESULT_NOT_SENT,
                            f"The result of '{function.function_id}' was not read: the response of {_url(function)} is "
                            f"larger than {limit} bytes, the engine's limit (max_message_size); return bulk data "
                            "through a channel (create_channel) and its ref instead")

        declared = response.content_length
        # several header lines read as one list (the first alone let "identity" then "gzip" pass gzip bytes as JSON)
        encoding = ", ".join(response.headers.getall("Content-Encoding", ())) or None
        if declared is not None and declared > limit and not encoding:
            raise too_big()
        try:
            decoder = BodyDecoder.for_encoding(encoding)
            raw = bytearray()
            # The bytes as sent are bounded too: empty gzip members decode to nothing, and an endpoint sending
            # them for ever held a core until the call's timeout. No legitimate encoding of at most ``limit``
            # bytes takes much more than that on the wire.
            wire, wire_limit = 0, wire_bound(limit)
            # Each piece (an HTTP chunk, or what one read of the socket brought) counts at least PIECE_BYTES
            # against that bound: it costs the parser and this loop the same whatever its size.
            pieces = charged = 0
            content = response.content
            while True:
                # (not iter_chunks(): aiohttp's empty body is one object shared by every response, whose readchunk
                # says "end" to its first reader only and "end of a chunk" to every later one, for ever)
                chunk, _ = await content.readchunk()
                if not chunk and content.at_eof():
                    break
                pieces += 1
                wire += len(chunk)
                charged += max(len(chunk), PIECE_BYTES)
                if charged > wire_limit and wire <= wire_limit:
                    raise BodyError(f"its body came in pieces too small to read: {pieces} pieces (HTTP chunks or "
                                    f"reads) brought {wire} bytes, each counting as {PIECE_BYTES} bytes at least "
                                    f"against its bound of {wire_limit}")
                raw += decoder.feed(chunk, limit - len(raw))
                if len(raw) > limit or wire > wire_limit:  # counted after decoding, so a compressed bomb stops too
                    raise too_big()
            # no bytes at all of a stream whose end only the connection's close marks: cut off, not empty
            chunked = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
            close_delimited = declared is None and not chunked
            raw += decoder.finish(empty_is_whole=not close_delimited or response.status in (204, 304))
        except BodyError as exc:
            raise _failure("http_response_failed",
                           f"the response of {_url(function)} was not read whole: {exc}") from None
        return bytes(raw)

    def _headers(self, function: HttpFunction, body: bytes) -> CIMultiDict[str]:
        timestamp = str(int(time.time()))
        headers: CIMultiDict[str] = CIMultiDict()
        headers["Content-Type"] = "application/json"
        headers["x-iii-Function-Path"] = function.function_id
        headers["x-iii-Invocation-ID"] = str(uuid.uuid4())
        headers["x-iii-Timestamp"] = timestamp
        headers["Accept-Encoding"] = ACCEPT_ENCODING
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
            except ValueError as exc:
                snippet = raw[:80].decode("utf-8", "replace")
                raise _failure("invalid_response", f"response of {_url(function)} is not JSON the engine takes "
                                                   f"({_chain(exc)}): {snippet!r}") from None
        try:
            parsed = loads(raw) if raw.strip() else None
        except ValueError:
            parsed = None
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict):
            code = error.get("code")
            message = error.get("message")
            # An endpoint's code and message go to the caller and into logs: clipped, as other errors passed on are,
            # a code only of a token's characters and control characters in a message escaped (before, CR LF in
            # either wrote a line of the endpoint's choosing into the engine's log)
            text = _visible(message) if isinstance(message, str) else "HTTP request failed"
            if isinstance(code, str) and code and not _FIELD_NAME.fullmatch(code):
                text = (f"{text} (the endpoint's error code {clip_text(code, _ERROR_CODE_CHARS)!r} is not a token: "
                        "letters, digits and !#$%&'*+-.^_`|~ only)")
                code = None
            raise EngineError(clip_text(code, _ERROR_CODE_CHARS) if isinstance(code, str) and code else "http_error",
                              clip_text(text, REPLY_REASON_CLIP))
        raise EngineError("http_error", f"HTTP {status} {_reason(status, reason)}".rstrip())
