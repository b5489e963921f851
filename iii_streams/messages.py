"""One-line, password-free error messages for the command lines (``iii-streams``, ``iii-engine``).

A command that fails should say why in one line a person can read, and must never echo a database password
back (URLs carry them: ``postgresql://app:secret@db/app``).

Example:
    >>> mask_passwords("cannot open postgresql://app:s3cret@db/app and redis://:pw@cache:6379/0")
    'cannot open postgresql://app:***@db/app and redis://:***@cache:6379/0'
    >>> error_line(ModuleNotFoundError("No module named 'asyncpg'", name="asyncpg"))
    "missing package 'asyncpg' (pip install 'iii-toolkit[postgres]')"
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from iii._cli import OneLineParser, mask_passwords

__all__ = ["EXTRAS", "OneLineParser", "error_line", "mask_passwords", "missing_extra", "needs_package"]

# the package a backend imports on demand -> the iii-toolkit extra that installs it
EXTRAS: Final[dict[str, str]] = {
    "sqlalchemy": "sql", "alembic": "sql", "aiosqlite": "sql", "asyncpg": "postgres", "redis": "redis",
    "aiohttp": "http", "multidict": "http", "yarl": "http", "opentelemetry": "otel", "pytest": "testing",
    "pytest_asyncio": "testing", "uvloop": "uvloop",
}

_ERRNO: Final = re.compile(r"^\[Errno -?\d+\] ")


def _driver_error(exc: BaseException) -> BaseException:
    # SQLAlchemy wraps the driver's exception (``orig``) in a multi-line message with SQL and a help link;
    # the driver's own message is the useful part.
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        cause = orig.__cause__ or orig.__context__
        return cause if isinstance(cause, BaseException) and str(cause).strip() else orig
    return exc


def _missing_package(exc: ModuleNotFoundError) -> tuple[str, str | None]:
    root = (exc.name or "").split(".")[0]
    return root, EXTRAS.get(root)


def needs_package(part: str, package: str) -> str:
    """The one-line message for ``part`` used without ``package``, naming the extra that installs it.

    Example:
        >>> needs_package("RedisStream", "redis")
        "RedisStream needs the package 'redis': pip install 'iii-toolkit[redis]'"
    """
    return f"{part} needs the package {package!r}: pip install 'iii-toolkit[{EXTRAS[package]}]'"


@contextmanager
def missing_extra(part: str) -> Iterator[None]:
    """Reword a missing optional package inside the block for a library caller: which ``part`` needs it and the
    extra to install. Still a ``ModuleNotFoundError`` with the same ``name`` (the original is its cause); any
    other missing module, such as a bug in our own imports, passes unchanged.

    Example:
        >>> with missing_extra("RedisStream"):
        ...     raise ModuleNotFoundError("No module named 'redis'", name="redis")
        Traceback (most recent call last):
        ...
        ModuleNotFoundError: RedisStream needs the package 'redis': pip install 'iii-toolkit[redis]'
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        root, extra = _missing_package(exc)
        if extra is None:
            raise
        raise ModuleNotFoundError(needs_package(part, root), name=exc.name) from exc


def error_line(exc: BaseException) -> str:
    """One line describing ``exc``: its first message line (the type name when it has none), passwords masked;
    a missing optional package names the extra that installs it.

    Example:
        >>> error_line(RuntimeError("cannot reach postgresql://app:s3cret@db/app\\n[SQL: SELECT 1]"))
        'cannot reach postgresql://app:***@db/app'
        >>> error_line(ConnectionRefusedError(111, "Connection refused")), error_line(TimeoutError())
        ('Connection refused', 'TimeoutError')
    """
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        root, extra = _missing_package(exc)
        hint = f" (pip install 'iii-toolkit[{extra}]')" if extra else ""
        return f"missing package {root!r}{hint}"
    exc = _driver_error(exc)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if isinstance(exc, OSError):
        text = _ERRNO.sub("", text)  # "[Errno 98] address in use" reads better without the number
    return mask_passwords(text)
