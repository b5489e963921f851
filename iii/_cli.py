"""Shared conventions of the toolkit's command lines (``iii-engine``, ``iii-streams``, ``iii-channel``).

Lives in the SDK only because it is the one package all three commands may import; the SDK itself has no
command line. Usage errors are one line ``<prog>: <what was wrong> (see <prog> --help)`` with exit status 2,
``--version`` prints ``<prog> <toolkit version>``, and a URL's password (or other secret) never appears in a message.

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
# next URL. The user may be empty, as in redis://:password@host. The scheme is matched only from the start of its
# run of scheme characters: tried from every letter, a long run without :// took quadratic time (the URL of an
# HTTP-invoked function is a worker's to choose, up to a frame's size).
_CREDENTIALS: Final = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.\-])[A-Za-z0-9+.\-]*://[^:/?#\s]*):(?:(?!://)\S)+?@(?=[^@/?#\s]*(?:[/?#\s]|$))")
# ?password=... and the like: redis-py and asyncpg take a password from the query too, and an HTTP endpoint's URL
# often carries its API key, token or request signature there. A key is secret when its whole name (any case)
# - ends in password, passwd, pwd, secret, token or signature (sslpassword, client_secret, access_token,
#   X-Amz-Security-Token, X-Amz-Signature, X-Goog-Signature), or in credential (X-Amz-Credential), or
# - is key, apikey / api_key / api-key (x- prefixed too), access_key, secret_key, private_key, sig (Azure SAS),
#   auth or jwt.
# Not, on purpose: names that only contain such a word (passfile, sslkey, user_password_hint, keyspace), whose
# values are paths or settings a reader needs to see. The value runs to the next '&' or blank, less the quote that
# closes a URL shown quoted (repr, shlex, JSON): one not followed by a letter, digit or %.
_SECRET_QUERY_KEY: Final = (r"[\w.\-]*(?:password|passwd|pwd|secret|token|signature|credential)"
                            r"|(?:x[_\-])?api[_\-]?key|(?:access|secret|private)[_\-]?key|key|sig|auth|jwt")
_QUERY_SECRET: Final = re.compile(
    rf"(?P<head>[?&;](?:{_SECRET_QUERY_KEY})=)\S*?(?=[&\s]|$|['\"](?![\w%]))", re.IGNORECASE)


def mask_passwords(text: str) -> str:
    """``text`` with every URL password and secret in it replaced by ``***``: the ``scheme://user:password@`` one
    and the values of secret-looking query keys (any case): ``password``, ``sslpassword``, ``passwd``, ``pwd``,
    any key ending in ``secret``, ``token``, ``signature`` or ``credential``, and ``key``, ``api_key`` (``apikey``,
    ``api-key``), ``access_key``, ``secret_key``, ``private_key``, ``sig``, ``auth``, ``jwt``.

    Example:
        >>> mask_passwords("redis://:hunter2@cache/0")
        'redis://:***@cache/0'
        >>> mask_passwords("redis://app:hun@ter2@cache/0 postgresql://db/app?sslmode=require&Password=hunter2")
        'redis://app:***@cache/0 postgresql://db/app?sslmode=require&Password=***'
        >>> mask_passwords("https://hooks.example.com/o?api_key=s3cret&tenant=acme&Access_Token=t0k")
        'https://hooks.example.com/o?api_key=***&tenant=acme&Access_Token=***'
        >>> mask_passwords("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=9f&x-id=GetObject")
        'https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&x-id=GetObject'
        >>> mask_passwords("postgresql://db/app?sslkey=/etc/app/client.key&passfile=/home/app/.pgpass")
        'postgresql://db/app?sslkey=/etc/app/client.key&passfile=/home/app/.pgpass'
    """
    return _QUERY_SECRET.sub(r"\g<head>***", _CREDENTIALS.sub(r"\g<head>:***@", text))


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
