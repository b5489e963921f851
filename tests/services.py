"""Reaching the real services the integration tests need, with one rule: skip locally, FAIL under CI.

With ``CI`` set to a true value (``true``, ``1``, ``yes``) a Redis or PostgreSQL that cannot be reached fails the
test instead of skipping it, so a broken CI machine never passes by skipping everything.

URLs come from ``III_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and ``III_TEST_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432/test``, a server-level URL: tests create their own databases).

Example:
    def test_x() -> None:
        url = require_redis()   # skipped (or failed under CI) when Redis does not answer
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

__all__ = [
    "POSTGRES_URL",
    "REDIS_URL",
    "in_ci",
    "reference_python",
    "require_postgres",
    "require_redis",
    "unavailable",
]

REDIS_URL = os.environ.get("III_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("III_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


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
