"""Settings of the REST API module and the CORS headers they imply (docs/guides/engine.md#modules,
docs/protocol.md#built-in-functions).

Production keys: ``port`` (3111), ``host``, ``default_timeout`` (ms, 30 000), ``cors {allowed_origins,
allowed_methods}`` (absent → permissive) and ``concurrency_request_limit`` (1024). Unknown keys are rejected, as
production does. ``host`` defaults to ``127.0.0.1`` (production binds ``0.0.0.0``): an embedded engine should not
be reachable from the network unless asked to.

Our own keys (production does not know them, so a configuration using them is for this engine only), all about
clients that send too much or too slowly:

- ``max_body_bytes`` (64 MiB): a larger request body is refused with 413 before the handler runs.
- ``body_timeout`` (ms, 30 000): the whole body must arrive within this after the headers, else 408.
- ``header_timeout`` (ms, 30 000): a connection must complete its request headers within this after it opened
  (or after its previous response), else it is closed. This also closes idle keep-alive connections.
- ``max_buffered_bytes`` (256 MiB, at least ``max_body_bytes``): request bodies held in memory across all
  requests; a body that would go over it is refused with 503 at once rather than waited for.
- ``slot_timeout`` (ms, 10 000): how long a request (body already received) may wait for one of the
  ``concurrency_request_limit`` slots; then it is answered 503 with ``Retry-After: 1`` and the handler never runs.
- ``send_timeout`` (ms, 30 000): how long a client may leave a streamed response unread (the connection's send
  buffer full) before the connection is cut; a client that stops reading would otherwise hold its request slot,
  and its handler, for as long as the stream runs.
- ``max_connections`` (half the process's open-file limit, ``RLIMIT_NOFILE``; 10 000 where there is none): open
  client connections; one more is answered 503 and closed at once. Without a bound, idle connections used up the
  process's file descriptors and workers could no longer connect.

Example:
    >>> s = ApiSettings.parse({"port": 0, "cors": {"allowed_origins": ["https://app.example"]}})
    >>> s.port, s.default_timeout_ms, s.cors.allowed_origins
    (0, 30000, ('https://app.example',))
    >>> ApiSettings.parse({"cors": {"allowed_origins": ["https://app.example/"]}})
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: cors.allowed_origins: 'https://app.example/' is not an origin as browsers \
send it: scheme://host[:port] with nothing after it (or '*')
    >>> ApiSettings.parse({"prot": 1})
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: unknown key 'prot' (allowed: body_timeout, concurrency_request_limit, cors, \
default_timeout, header_timeout, host, max_body_bytes, max_buffered_bytes, max_connections, port, send_timeout, \
slot_timeout)
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import ValidationInfo, field_validator

from ...fd_limits import NO_LIMIT_DEFAULT, open_files_share
from ...settings import Field, Names, NonEmpty, Port, Settings

__all__ = ["ApiSettings", "CorsSettings", "default_max_connections"]

DEFAULT_PORT = 3111
DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024 * 1024
# max_connections where the process has no open-file limit to take half of
UNLIMITED_MAX_CONNECTIONS = NO_LIMIT_DEFAULT
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Z]+")  # an RFC 9110 token (upper-cased)
# What a browser sends as Origin: scheme://host[:port], nothing after it (or "null"); a listed origin that is not
# of this form (a trailing slash, a path, a space) can never equal one, so CORS would fail without a word.
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[\x21-\x2e\x30-\x7e]+")


class CorsSettings(Settings):
    """``cors``: ``None`` for a list means "any" (production's permissive layer); methods are kept upper-case."""

    label: ClassVar[str] = "REST API settings: cors"

    allowed_origins: Names | None = None
    allowed_methods: Names | None = None

    @field_validator("allowed_methods")
    @classmethod
    def _upper(cls, methods: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if methods is None:
            return None
        upper = tuple(method.upper() for method in methods)
        for method in upper:
            if not _METHOD.fullmatch(method):
                raise ValueError(f"{method!r} is not an HTTP method name (a token such as GET)")
        return upper

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for origin in origins or ():
            if origin not in ("*", "null") and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin as browsers send it: scheme://host[:port] with "
                                 f"nothing after it (or '*')")
        return origins

    def headers(self, origin: str | None, preflight: bool, request_headers: str | None) -> dict[str, str]:
        """CORS response headers for a request from ``origin`` (none when the origin is absent or refused).

        Example:
            >>> CorsSettings().headers("https://a.example", False, None)
            {'Access-Control-Allow-Origin': '*', 'Access-Control-Expose-Headers': '*'}
            >>> CorsSettings(allowed_origins=("https://b.example",)).headers("https://a.example", False, None)
            {}
        """
        if origin is None:
            return {}
        out: dict[str, str] = {}
        if self.allowed_origins is None or "*" in self.allowed_origins:
            out["Access-Control-Allow-Origin"] = "*"
        elif origin in self.allowed_origins:
            out["Access-Control-Allow-Origin"] = origin
            out["Vary"] = "Origin"
        else:
            return {}
        if preflight:
            methods = self.allowed_methods
            out["Access-Control-Allow-Methods"] = "*" if methods is None or "*" in methods else ", ".join(methods)
            out["Access-Control-Allow-Headers"] = request_headers or "*"
            out["Access-Control-Max-Age"] = "600"
        else:
            out["Access-Control-Expose-Headers"] = "*"
        return out

    def allows_method(self, method: str) -> bool:
        """Whether a preflight asking for ``method`` may succeed."""
        return self.allowed_methods is None or "*" in self.allowed_methods or method.upper() in self.allowed_methods


class ApiSettings(Settings):
    """Parsed REST API module settings (times in milliseconds, sizes in bytes)."""

    label: ClassVar[str] = "REST API settings"

    port: Port = DEFAULT_PORT
    host: NonEmpty = DEFAULT_HOST
    default_timeout_ms: int = Field(30_000, ge=1, alias="default_timeout")
    cors: CorsSettings = Field(default_factory=CorsSettings)
    concurrency_request_limit: int = Field(1024, ge=1)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1)
    body_timeout_ms: int = Field(30_000, ge=1, alias="body_timeout")
    header_timeout_ms: int = Field(30_000, ge=1, alias="header_timeout")
    slot_timeout_ms: int = Field(10_000, ge=1, alias="slot_timeout")
    send_timeout_ms: int = Field(30_000, ge=1, alias="send_timeout")
    # None: the default budget, which grows with a larger body limit so raising only max_body_bytes stays valid
    max_buffered_bytes_setting: int | None = Field(None, ge=1, alias="max_buffered_bytes")
    # None: derived from the process's open-file limit when read (default_max_connections)
    max_connections_setting: int | None = Field(None, ge=1, alias="max_connections")

    @field_validator("max_buffered_bytes_setting")
    @classmethod
    def _holds_one_body(cls, buffered: int | None, info: ValidationInfo) -> int | None:
        body = info.data.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        if buffered is not None and buffered < body:
            raise ValueError(f"must be at least max_body_bytes ({body}), or no body of the allowed size could be "
                             f"held; got {buffered}")
        return buffered

    @property
    def max_buffered_bytes(self) -> int:
        """Bytes of request bodies held in memory across all requests."""
        if self.max_buffered_bytes_setting is not None:
            return self.max_buffered_bytes_setting
        return max(DEFAULT_MAX_BUFFERED_BYTES, self.max_body_bytes)

    @property
    def max_connections(self) -> int:
        """Open client connections at most; one more is refused (503)."""
        if self.max_connections_setting is not None:
            return self.max_connections_setting
        return default_max_connections()


def default_max_connections() -> int:
    """Half the process's soft open-file limit: REST clients alone cannot use up the descriptors that workers,
    stream clients and adapters need (the engine's other listeners and files get the other half).

    Example:
        >>> import resource
        >>> soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        >>> default_max_connections() == (soft // 2 if soft != resource.RLIM_INFINITY else UNLIMITED_MAX_CONNECTIONS)
        True
    """
    return open_files_share(2)
