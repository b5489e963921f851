"""Settings of the REST API module and the CORS headers they imply (modules.md §7.3, §7.7).

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

Example:
    >>> s = ApiSettings.parse({"port": 0, "cors": {"allowed_origins": ["https://app.example"]}})
    >>> s.port, s.default_timeout_ms, s.cors.allowed_origins
    (0, 30000, ('https://app.example',))
    >>> ApiSettings.parse({"prot": 1})
    Traceback (most recent call last):
    ...
    iii_engine.modules.http_settings.ApiSettingsError: REST API settings: unknown key 'prot' (allowed: \
body_timeout, concurrency_request_limit, cors, default_timeout, header_timeout, host, max_body_bytes, \
max_buffered_bytes, port)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORT = 3111
DEFAULT_HOST = "127.0.0.1"
DEFAULT_TIMEOUT_MS = 30_000
DEFAULT_CONCURRENCY = 1024
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_MS = 30_000
DEFAULT_HEADER_TIMEOUT_MS = 30_000
DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024 * 1024

_KEYS = frozenset({"port", "host", "default_timeout", "cors", "concurrency_request_limit", "max_body_bytes",
                   "body_timeout", "header_timeout", "max_buffered_bytes"})
_CORS_KEYS = frozenset({"allowed_origins", "allowed_methods"})


class ApiSettingsError(ValueError):
    """A REST API setting is unknown or has the wrong type; the message names it."""


@dataclass(frozen=True)
class CorsSettings:
    """``None`` for a list means "any" (production's permissive layer)."""

    allowed_origins: tuple[str, ...] | None = None
    allowed_methods: tuple[str, ...] | None = None

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


def _str_list(raw: Any, key: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ApiSettingsError(f"REST API settings: cors.{key} must be a list of strings, got {raw!r}")
    return tuple(raw)


def _int(raw: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = raw.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ApiSettingsError(f"REST API settings: {key} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class ApiSettings:
    """Parsed REST API module settings."""

    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
    default_timeout_ms: int = DEFAULT_TIMEOUT_MS
    cors: CorsSettings = field(default_factory=CorsSettings)
    concurrency_request_limit: int = DEFAULT_CONCURRENCY
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_ms: int = DEFAULT_BODY_TIMEOUT_MS
    header_timeout_ms: int = DEFAULT_HEADER_TIMEOUT_MS
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> ApiSettings:
        """Validate a settings object from the engine configuration."""
        raw = raw or {}
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise ApiSettingsError(
                f"REST API settings: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_KEYS))})")
        host = raw.get("host", DEFAULT_HOST)
        if not isinstance(host, str) or not host:
            raise ApiSettingsError(f"REST API settings: host must be a non-empty string, got {host!r}")
        cors_raw = raw.get("cors")
        cors = CorsSettings()
        if cors_raw is not None:
            if not isinstance(cors_raw, Mapping):
                raise ApiSettingsError(f"REST API settings: cors must be an object, got {cors_raw!r}")
            unknown = sorted(set(cors_raw) - _CORS_KEYS)
            if unknown:
                raise ApiSettingsError(f"REST API settings: unknown key 'cors.{unknown[0]}'")
            methods = _str_list(cors_raw.get("allowed_methods"), "allowed_methods")
            cors = CorsSettings(_str_list(cors_raw.get("allowed_origins"), "allowed_origins"),
                                tuple(m.upper() for m in methods) if methods is not None else None)
        max_body = _int(raw, "max_body_bytes", DEFAULT_MAX_BODY_BYTES, 1)
        # The default budget grows with a larger body limit, so raising only max_body_bytes stays valid.
        buffered = _int(raw, "max_buffered_bytes", max(DEFAULT_MAX_BUFFERED_BYTES, max_body), 1)
        if buffered < max_body:
            raise ApiSettingsError(f"REST API settings: max_buffered_bytes ({buffered}) must be at least "
                                   f"max_body_bytes ({max_body}), or no body of the allowed size could be held")
        return cls(
            port=_int(raw, "port", DEFAULT_PORT, 0),
            host=host,
            default_timeout_ms=_int(raw, "default_timeout", DEFAULT_TIMEOUT_MS, 1),
            cors=cors,
            concurrency_request_limit=_int(raw, "concurrency_request_limit", DEFAULT_CONCURRENCY, 1),
            max_body_bytes=max_body,
            body_timeout_ms=_int(raw, "body_timeout", DEFAULT_BODY_TIMEOUT_MS, 1),
            header_timeout_ms=_int(raw, "header_timeout", DEFAULT_HEADER_TIMEOUT_MS, 1),
            max_buffered_bytes=buffered,
        )
