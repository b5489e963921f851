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

import argparse
import re
from typing import Final, NoReturn

__all__ = ["EXTRAS", "OneLineParser", "error_line", "mask_passwords"]

# the package a backend imports on demand -> the iii-toolkit extra that installs it
EXTRAS: Final[dict[str, str]] = {
    "sqlalchemy": "sql", "alembic": "sql", "aiosqlite": "sql", "asyncpg": "postgres", "redis": "redis",
    "aiohttp": "http",
}

# scheme://user:password@  (user may be empty, as in redis://:password@host)
_CREDENTIALS: Final = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^@\s]+)@")
_ERRNO: Final = re.compile(r"^\[Errno -?\d+\] ")


def mask_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL in it replaced by ``***``."""
    return _CREDENTIALS.sub(r"\g<head>:***@", text)


def _driver_error(exc: BaseException) -> BaseException:
    # SQLAlchemy wraps the driver's exception (``orig``) in a multi-line message with SQL and a help link;
    # the driver's own message is the useful part.
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        cause = orig.__cause__ or orig.__context__
        return cause if isinstance(cause, BaseException) and str(cause).strip() else orig
    return exc


def error_line(exc: BaseException) -> str:
    """One line describing ``exc``: its first message line (the type name when it has none), passwords masked;
    a missing optional package names the extra that installs it."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        root = exc.name.split(".")[0]
        extra = EXTRAS.get(root)
        hint = f" (pip install 'iii-toolkit[{extra}]')" if extra else ""
        return f"missing package {root!r}{hint}"
    exc = _driver_error(exc)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if isinstance(exc, OSError):
        text = _ERRNO.sub("", text)  # "[Errno 98] address in use" reads better without the number
    return mask_passwords(text)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line ``<prog>: <what was wrong> (see --help)``, exit 2.

    Example:
        >>> OneLineParser(prog="tool").parse_args(["--nope"])
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """

    def error(self, message: str) -> NoReturn:
        """Print one line naming the problem and exit with status 2."""
        program = self.prog.split()[0]  # a sub-command's prog is "tool sub"; the line starts with the tool
        self.exit(2, f"{program}: {mask_passwords(message)} (see {program} --help)\n")
