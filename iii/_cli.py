"""Shared conventions of the toolkit's command lines (``iii-engine``, ``iii-streams``, ``iii-channel``).

Lives in the SDK only because it is the one package all three commands may import; the SDK itself has no
command line. Usage errors are one line ``<prog>: <what was wrong> (see <prog> --help)`` with exit status 2,
``--version`` prints ``<prog> <toolkit version>``, and a URL's password never appears in a message.

Example:
    >>> mask_passwords("cannot open postgresql://app:s3cret@db/app and redis://:pw@cache:6379/0")
    'cannot open postgresql://app:***@db/app and redis://:***@cache:6379/0'
"""

from __future__ import annotations

import argparse
import re
from typing import Final, NoReturn

from ._version import __version__

__all__ = ["OneLineParser", "mask_passwords"]

# scheme://user:password@host: the password runs to the authority's LAST '@' (redis-py's urlparse splits there, so
# a raw '@' in a password is part of it), and may hold '/' or '?' (SQLAlchemy's reading); it never runs into a
# next URL. The user may be empty, as in redis://:password@host.
_CREDENTIALS: Final = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#\s]*):(?:(?!://)\S)+?@(?=[^@/?#\s]*(?:[/?#\s]|$))")
# ?password=... and the like: redis-py and asyncpg take a password from the query too. The value runs to the next
# '&' or blank, less the quote that closes a URL shown quoted (repr, shlex): one not followed by a letter, digit or %.
_QUERY_PASSWORD: Final = re.compile(
    r"(?P<head>[?&;](?:password|sslpassword|passwd|pwd)=)\S*?(?=[&\s]|$|['\"](?![\w%]))", re.IGNORECASE)


def mask_passwords(text: str) -> str:
    """``text`` with every URL password in it replaced by ``***``: the ``scheme://user:password@`` one and the
    values of the query keys ``password``, ``sslpassword``, ``passwd`` and ``pwd`` (any case).

    Example:
        >>> mask_passwords("redis://:hunter2@cache/0")
        'redis://:***@cache/0'
        >>> mask_passwords("redis://app:hun@ter2@cache/0 postgresql://db/app?sslmode=require&Password=hunter2")
        'redis://app:***@cache/0 postgresql://db/app?sslmode=require&Password=***'
    """
    return _QUERY_PASSWORD.sub(r"\g<head>***", _CREDENTIALS.sub(r"\g<head>:***@", text))


class OneLineParser(argparse.ArgumentParser):
    """An argument parser with ``--version`` whose usage errors are one line naming the problem, exit status 2.

    Sub-command parsers created from it are ``OneLineParser`` too (argparse uses the parent's class).

    Example:
        >>> OneLineParser(prog="tool").parse_args(["--nope"])
        Traceback (most recent call last):
        ...
        SystemExit: 2
        >>> OneLineParser(prog="tool").parse_args(["--version"])
        Traceback (most recent call last):
        ...
        SystemExit: 0
    """

    def __init__(self, *args: object, version: bool = True, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if version and self.add_help:  # a parents=[...] helper parser (add_help=False) gets no second --version
            self.add_argument("--version", action="version", version=f"{self.prog.split()[0]} {__version__}",
                              help="print the version and exit")

    def error(self, message: str) -> NoReturn:
        """Print one line naming the problem and exit with status 2."""
        program = self.prog.split()[0]  # a sub-command's prog is "tool sub"; the line starts with the tool
        self.exit(2, f"{program}: {mask_passwords(message)} (see {program} --help)\n")
