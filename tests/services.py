"""Reaching the real services the integration tests need, with one rule: skip locally, FAIL under CI.

With ``CI`` set to a true value (``true``, ``1``, ``yes``) a Redis or PostgreSQL that cannot be reached fails the
test instead of skipping it, so a broken CI machine never passes by skipping everything.

URLs come from ``III_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and ``III_TEST_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432/test``, a server-level URL: tests create their own databases).

The engine under test: by default each test starts ours in-process. ``III_TEST_ENGINE_URL`` (``ws://host:port``)
points the integration and interop tests at an engine someone else started instead, with ``III_TEST_REST_URL``
(``http://host:port`` of its REST API module) and ``III_TEST_STREAMS_URL`` (``ws://host:port`` of its stream
socket); :data:`EXTERNAL_ENGINE` holds them (``None`` when unset).

Example:
    def test_x() -> None:
        url = require_redis()   # skipped (or failed under CI) when Redis does not answer
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

__all__ = [
    "EXTERNAL_ENGINE",
    "POSTGRES_URL",
    "REDIS_URL",
    "ExternalEngine",
    "external_engine_from",
    "in_ci",
    "logged_port",
    "reference_python",
    "require_postgres",
    "require_redis",
    "skip_on_external_engine",
    "unavailable",
]

REDIS_URL = os.environ.get("III_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("III_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class ExternalEngine:
    """An engine someone else started: its worker URL and, when given, its REST API and stream-socket URLs."""

    url: str
    rest_url: str | None = None
    streams_url: str | None = None


def _checked_url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{name} must be a {' or '.join(s + '://' for s in schemes)}host:port URL, got {value!r}")
    return value.rstrip("/")


def external_engine_from(env: Mapping[str, str]) -> ExternalEngine | None:
    """The :class:`ExternalEngine` the ``III_TEST_*`` variables in ``env`` name, or ``None`` when
    ``III_TEST_ENGINE_URL`` is unset; ``ValueError`` naming the variable when a URL cannot work.

    Example:
        >>> external_engine_from({"III_TEST_ENGINE_URL": "ws://10.0.0.5:49134", "III_TEST_REST_URL": "http://h:3111/"})
        ExternalEngine(url='ws://10.0.0.5:49134', rest_url='http://h:3111', streams_url=None)
        >>> external_engine_from({}) is None
        True
        >>> external_engine_from({"III_TEST_ENGINE_URL": "localhost:49134"})
        Traceback (most recent call last):
        ...
        ValueError: III_TEST_ENGINE_URL must be a ws:// or wss://host:port URL, got 'localhost:49134'
    """
    url = env.get("III_TEST_ENGINE_URL", "").strip()
    if not url:
        return None
    rest = env.get("III_TEST_REST_URL", "").strip()
    streams = env.get("III_TEST_STREAMS_URL", "").strip()
    return ExternalEngine(
        _checked_url("III_TEST_ENGINE_URL", url, ("ws", "wss")),
        _checked_url("III_TEST_REST_URL", rest, ("http", "https")) if rest else None,
        _checked_url("III_TEST_STREAMS_URL", streams, ("ws", "wss")) if streams else None)


EXTERNAL_ENGINE = external_engine_from(os.environ)


# what an engine process logs once a listener of it is bound (its stream socket's line is the websockets server's)
_LISTENING = {
    "REST API": re.compile(r"REST API listening on https?://\S+:(\d+)"),
    "stream socket": re.compile(r"iii_engine\.modules\.stream\.socket\.websockets: server listening on \S+:(\d+)"),
}


def logged_port(log: str, listener: str) -> int:
    """The port an engine process given port 0 for ``listener`` (``"REST API"`` or ``"stream socket"``) says in
    ``log`` (its stderr, read once it is ready) that it bound.

    Port 0 and this, not a port picked by binding 0 and closing: under two test processes the other one may take
    that port before the engine binds it. ``ValueError`` when ``log`` has no such line.

    Example:
        >>> logged_port("INFO iii_engine.modules.http.api: REST API listening on http://127.0.0.1:35707", "REST API")
        35707
        >>> logged_port("", "stream socket")
        Traceback (most recent call last):
        ...
        ValueError: no stream socket listening line in the engine's log ('')
    """
    if listener not in _LISTENING:
        raise ValueError(f"listener must be one of {sorted(_LISTENING)}, got {listener!r}")
    found = _LISTENING[listener].search(log)
    if found is None:
        raise ValueError(f"no {listener} listening line in the engine's log ({log[-2000:]!r})")
    return int(found.group(1))


def skip_on_external_engine(why: str) -> None:
    """Skip the test when it runs against an external engine (``III_TEST_ENGINE_URL``), saying why; for tests
    that find out at run time (a parameter, a code path) that they need our engine."""
    if EXTERNAL_ENGINE is not None:
        pytest.skip(f"needs our engine ({why}); III_TEST_ENGINE_URL is set")


def reference_python() -> str:
    """The interpreter of the separate reference-SDK environment (``scripts/setup.sh --with-reference`` makes
    ``.ref-venv``; ``III_REF_PYTHON`` overrides). Skipped locally, failed under CI, when it is missing."""
    default = Path(__file__).resolve().parents[1] / ".ref-venv" / "bin" / "python"
    path = os.environ.get("III_REF_PYTHON") or str(default)
    if not Path(path).exists():
        unavailable(f"reference SDK environment missing at {path}; run scripts/setup.sh --with-reference")
    return path


def in_ci() -> bool:
    """Whether ``CI`` is set to a true value."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def unavailable(what: str) -> NoReturn:
    """Skip the test, or fail it under CI, because ``what`` is missing."""
    if in_ci():
        pytest.fail(f"{what} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(what)


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def require_redis() -> str:
    """``REDIS_URL`` if Redis answers PING; otherwise skip (fail under CI)."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure means "not usable"; the message says which
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


def require_postgres() -> str:
    """``POSTGRES_URL`` if a TCP connection to PostgreSQL succeeds; otherwise skip (fail under CI)."""
    if not _reachable(POSTGRES_URL, 5432):
        unavailable(f"PostgreSQL not reachable at {POSTGRES_URL}")
    return POSTGRES_URL
