"""Open a stream store from a URL, picking the backend by scheme.

- ``memory://`` → :class:`~iii_streams.memory.MemoryStream`
- ``redis://``, ``rediss://``, ``unix://`` → :class:`~iii_streams.redis.RedisStream`
- ``sqlite+aiosqlite://…`` (or ``sqlite://``), ``postgresql+asyncpg://…`` (or ``postgresql://``) →
  :class:`~iii_streams.sql.SQLStream`

Backends are imported on demand, so ``memory://`` works without Redis or SQLAlchemy installed.

Example:
    >>> type(open_stream("memory://")).__name__
    'MemoryStream'
    >>> open_stream("ftp://x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unsupported stream URL scheme 'ftp' in 'ftp://x' (use memory://, redis://, ...)
"""

from __future__ import annotations

from typing import Any, Final

from .base import Backend
from .messages import mask_passwords, missing_extra

__all__ = ["SCHEMES", "check_scheme", "open_stream"]

SCHEMES: Final = ("memory", "redis", "rediss", "unix", "sqlite+aiosqlite", "postgresql+asyncpg")
_SQL_SCHEMES: Final = ("sqlite", "sqlite+aiosqlite", "postgresql", "postgresql+asyncpg", "postgres")


def scheme_of(url: str) -> str:
    """The lower-cased scheme of ``url`` (before ``://`` or ``:``).

    Example:
        >>> scheme_of("Redis://cache:6379/0"), scheme_of("postgresql+asyncpg://db/app"), scheme_of("memory:")
        ('redis', 'postgresql+asyncpg', 'memory')
        >>> scheme_of("localhost")
        Traceback (most recent call last):
        ...
        ValueError: not a URL (no scheme): 'localhost'
    """
    head, sep, _ = url.partition(":")
    if not sep or not head:
        raise ValueError(f"not a URL (no scheme): {mask_passwords(url)!r}")
    return head.lower()


def check_scheme(url: str) -> str:
    """The scheme of ``url`` if :func:`open_stream` knows it, else the ``ValueError`` it would raise; nothing opens.

    Example:
        >>> check_scheme("postgres://db/app")
        'postgres'
        >>> check_scheme("ftp://x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unsupported stream URL scheme 'ftp' in 'ftp://x' (use memory://, redis://, ...)
    """
    scheme = scheme_of(url)
    if scheme != "memory" and scheme not in ("redis", "rediss", "unix") and scheme not in _SQL_SCHEMES:
        supported = ", ".join(f"{s}://" for s in SCHEMES)
        raise ValueError(f"unsupported stream URL scheme {scheme!r} in {mask_passwords(url)!r} (use {supported})")
    return scheme


def open_stream(url: str, **options: Any) -> Backend:
    """The store for ``url``; ``options`` go to the backend's ``from_url``. Nothing connects until first use.

    Example:
        >>> open_stream("memory://", publish_events=False).publish_events
        False
    """
    scheme = check_scheme(url)
    if scheme == "memory":
        from .memory import MemoryStream

        return MemoryStream.from_url(url, **options)
    # a driver missing (not installed with its extra) is one error naming the extra to install
    if scheme in ("redis", "rediss", "unix"):
        with missing_extra(f"a {scheme}:// stream store"):
            from .redis import RedisStream

            return RedisStream.from_url(url, **options)
    with missing_extra(f"a {scheme}:// stream store"):  # the rest check_scheme passes: the SQL ones
        from .sql import SQLStream

        return SQLStream.from_url(url, **options)
