"""Shared conventions of the toolkit's command lines (``iii-engine``, ``iii-streams``, ``iii-channel``), and the
masking of secrets in URLs that every message and log line of the toolkit goes through.

Lives in the SDK because it is the one package all of the toolkit may import: the SDK's own connection messages
(:func:`iii.connection.shown_url`) and the engine's HTTP-invoked functions mask URLs with it too. Usage errors are
one line ``<prog>: <what was wrong> (see <prog> --help)`` with exit status 2, ``--version`` prints ``<prog>
<toolkit version>``, and a URL's password (or other secret) never appears in a message.

Example:
    >>> mask_passwords("cannot open postgresql://app:s3cret@db/app and redis://:pw@cache:6379/0")
    'cannot open postgresql://app:***@db/app and redis://:***@cache:6379/0'
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import Final, NoReturn
from urllib.parse import unquote

from ._version import __version__

__all__ = ["MAX_SECONDS", "MIN_SECONDS", "OneLineParser", "exit_interrupted", "joined_timeouts", "mask_passwords",
           "milliseconds", "seconds"]

# scheme://user:password@host: the password runs to the authority's LAST '@' (redis-py's urlparse splits there, so
# a raw '@' in a password is part of it), and may hold '/' or '?' (SQLAlchemy's reading); it never runs into a
# next URL. The user may be empty, as in redis://:password@host. The scheme is matched only from the start of its
# run of scheme characters: tried from every letter, a long run without :// took quadratic time (the URL of an
# HTTP-invoked function is a worker's to choose, up to a frame's size).
_CREDENTIALS: Final = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.\-])[A-Za-z0-9+.\-]*://[^:/?#\s]*):(?:(?!://)\S)+?@(?=[^@/?#\s]*(?:[/?#\s]|$))")
# http(s):// and ws(s):// (git+https:// too) with a user and no password: aiohttp, requests and websockets send it
# as Basic auth, and a token is often put there alone (https://ghp_…@github.com/…), so the whole user is masked. A
# database URL's plain user name (postgresql://app@db) is no secret and stays: readers need it, as they need the
# user beside a password (ws://bridge:***@remote), unless that user looks like a token (_TOKEN_USER).
_USER_ONLY: Final = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.\-])(?:[A-Za-z0-9+.\-]*\+)?(?i:https?|wss?)://)[^:/?#\s]+?:?@"
    r"(?=[^@/?#\s]*(?:[/?#\s]|$))")
# http(s)/ws(s) with a user beside a password (already masked), where the user is a token: git hosts take
# https://TOKEN:x-oauth-basic@ (the password a placeholder). The user runs to the password's ':' and may hold a raw
# '@' (clients split the authority at its last '@'); such a user is masked whole, as a user alone with an '@' in it
# is by _USER_ONLY: where it ends is anyone's guess, and the part before the '@' may be a token.
_TOKEN_USER: Final = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.\-])(?:[A-Za-z0-9+.\-]*\+)?(?i:https?|wss?)://)(?P<user>[^:/?#\s]+):\*\*\*@")
# A token, read percent-decoded (ghp%5F… is ghp_…): a vendor's prefix followed by the shape and length its tokens
# have, so that a user name that merely starts alike (ASIAPAC-ops, sk-team, ghr_backup) stays: AWS access key ids,
# GitHub, GitLab, Slack, OpenAI and Anthropic (sk-), Stripe, Google OAuth, Hugging Face, Atlassian API tokens, JWTs.
# Or 32 or more hex digits, or 32 or more letters, digits, '_' and '-' with a run of 20 or more letters and digits
# mixing both (random keys, 40-hex GitHub tokens): a UUID's parts and the words of a service's name
# (svc-payments-reconciliation-2024) are shorter. Every alternative is tried at the start only, and the search for
# the long run looks into each run once, so the time stays linear.
_LOOKS_LIKE_TOKEN: Final = re.compile(
    r"(?:AKIA|ASIA)[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|gl(?:pat|dt|ptt|rt)-[A-Za-z0-9_.\-]{20,}|xox[abposr]-[A-Za-z0-9\-]{10,}|sk-[A-Za-z0-9_\-]{20,}"
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|ya29\.[A-Za-z0-9_.\-]{20,}|hf_[A-Za-z0-9]{30,}|ATATT[A-Za-z0-9_\-=]{20,}"
    r"|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*|[0-9A-Fa-f]{32,}"
    r"|(?=[A-Za-z0-9_\-]*?(?<![A-Za-z0-9])(?=[A-Za-z]*[0-9])(?=[0-9]*[A-Za-z])[A-Za-z0-9]{20})[A-Za-z0-9_\-]{32,}")


def _token_user(found: re.Match[str]) -> str:
    user = found["user"]
    hidden = "@" in user or _LOOKS_LIKE_TOKEN.fullmatch(unquote(user)) is not None
    return f"{found['head']}***:***@" if hidden else found[0]


# key=value after '?', '&', ';' (a path's matrix parameters, ;jsessionid=) or '#' (a fragment: the OAuth implicit
# flow's #access_token=). Only the key is matched here: a value that is not masked is searched for keys too.
_QUERY_KEY: Final = re.compile(r"[?&;#](?P<key>[^=&;#?\s]*)=")
# A key is secret when its name, percent-decoded and with a trailing [] or [name] (array and nested forms) read as
# names of their own, any case,
# - ends in password, passwd, pwd, secret(s), token, signature, credential(s), authorization, hmac or session id
#   (sslpassword, client_secret, access_token, X-Amz-Security-Token, X-Amz-Signature, X-Amz-Credential,
#   jsessionid, PHPSESSID), or
# - is key, apikey / api_key / api-key (x- prefixed too), access_key, secret_key, private_key, sig (Azure SAS),
#   auth, jwt, bearer, pass, tokens, session, or code: an OAuth authorization code lives a few minutes but is
#   exchanged for tokens in that time, and its value tells a reader nothing (a ?code= that is a plain setting is
#   masked too: the cheaper mistake).
# - or ends in _key or -key (app_key, license_key, consumer_key, subscription-key, dd-api-key), or in accesskey,
#   secretkey, privatekey, apikey or appkey (secretAccessKey): a setting named so (sort_key) is masked too.
# Not, on purpose: names that only contain such a word (passfile, sslkey, user_password_hint, keyspace, max_tokens),
# whose values are paths or settings a reader needs to see.
_SECRET_KEY: Final = re.compile(
    r".*(?:password|passwd|pwd|secrets?|token|signature|credentials?|authorization|hmac|sess(?:ion[_\-]?)?id)"
    r"|(?:x[_\-])?api[_\-]?key|(?:access|secret|private)[_\-]?key|key|sig|auth|jwt|bearer|pass|tokens|session|code"
    r"|.*[_\-]key|.*(?:access|secret|private|api|app)key",
    re.IGNORECASE | re.DOTALL)
# Where a secret value ends: at the next '&' or blank. '#' and ';' do not end it (SQLAlchemy reads a query value
# up to '&', so in ?password=a#b;c all of a#b;c is the password). A quote ends it only where it closes a URL shown
# quoted (repr, shlex, JSON, Markdown): a run of up to three quotes followed by closing brackets, then perhaps one
# punctuation mark, then a blank, another quote or the end; a quote inside the value (token=ab'-cd) does not.
# Every part is bounded, so the search stays linear.
_VALUE_END: Final = re.compile(r"[&\s]|['\"`]{1,3}(?=[)\]}>]{0,3}[,.:;!?]?(?:[\s'\"`]|\Z))|\Z")


def mask_passwords(text: str) -> str:
    """``text`` with every URL password and secret in it replaced by ``***``, in time linear in its length:

    - the password of ``scheme://user:password@host``, and the user of ``http(s)://`` and ``ws(s)://`` URLs that
      have no password (``https://TOKEN@host``, sent as Basic auth) or whose user, percent-decoded, looks like a
      token (``https://ghp_…:x-oauth-basic@host``: a vendor's prefix with the shape and length of its tokens, a
      JWT, 32 or more hex digits, or 32 or more letters, digits, ``_`` and ``-`` with a run of 20 or more letters
      and digits mixing both) or holds a raw ``@``; other user names stay (``svc-payments``, a UUID, ``sk-team``);
    - the values of secret-looking keys after ``?``, ``&``, ``;`` or ``#`` (any case, percent-encoded or not,
      ``name[]`` as ``name``): ``password``, ``sslpassword``, ``passwd``, ``pwd``, any key ending in ``secret``,
      ``token``, ``signature``, ``credential``, ``authorization``, ``hmac`` or ``sessionid``, and ``key``,
      ``api_key`` (``apikey``, ``api-key``), ``access_key``, ``secret_key``, ``private_key``, ``sig``, ``auth``,
      ``jwt``, ``bearer``, ``pass``, ``tokens``, ``session`` and ``code`` (OAuth's authorization code). A value
      runs to the next ``&`` or blank, less the quotes and brackets that close a URL shown quoted.

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
        >>> mask_passwords("https://ghp_t0k@github.com/o/r.git postgresql://app@db/app")
        'https://***@github.com/o/r.git postgresql://app@db/app'
        >>> mask_passwords("https://ghp_" + "t0k" * 12 + ":x-oauth-basic@github.com/o/r.git ws://bridge:pw@remote")
        'https://***:***@github.com/o/r.git ws://bridge:***@remote'
        >>> mask_passwords("https://sk-team:pw@h https://123e4567-e89b-12d3-a456-426614174000:pw@login.example")
        'https://sk-team:***@h https://123e4567-e89b-12d3-a456-426614174000:***@login.example'
        >>> mask_passwords("got 'https://app.example/cb?state=7#access_token=t0k&token_type=bearer', retrying")
        "got 'https://app.example/cb?state=7#access_token=***&token_type=bearer', retrying"
        >>> mask_passwords("https://h/x?api%5Fkey=k3y&password[]=pw&token=ab'-cd")
        'https://h/x?api%5Fkey=***&password[]=***&token=***'
        >>> mask_passwords("https://api.example.com/v1?subscription-key=k&secretAccessKey=s&sort=name")
        'https://api.example.com/v1?subscription-key=***&secretAccessKey=***&sort=name'
    """
    text = _TOKEN_USER.sub(_token_user, _CREDENTIALS.sub(r"\g<head>:***@", text))
    text = _USER_ONLY.sub(r"\g<head>***@", text)
    parts: list[str] = []
    done = 0  # text before this is in parts; a key found inside a value already masked is skipped
    for found in _QUERY_KEY.finditer(text):
        if found.start() < done or not any(
                _SECRET_KEY.fullmatch(name) for name in unquote(found["key"]).replace("]", "").split("[") if name):
            continue
        end = _VALUE_END.search(text, found.end())
        parts += (text[done:found.end()], "***")
        done = end.start() if end is not None else len(text)
    return "".join(parts) + text[done:] if parts else text


def exit_interrupted(own_process: bool) -> int:
    """The end of a command interrupted by Ctrl-C, after its one line: status 130, or, in a process that is the
    command's own (its console script, ``python -m``), the end by SIGINT itself, as Python ends on an uncaught
    KeyboardInterrupt. A shell running the command in a loop stops its loop for a death by SIGINT, and goes on after
    an exit status of 130; its ``$?`` is 130 either way. Standard output and error are flushed first.

    Example:
        >>> exit_interrupted(own_process=False)
        130
    """
    if own_process:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be said on it
                pass
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return 130  # where SIGINT did not end the process


MIN_SECONDS: Final = 0.001
"""The shortest time a command's ``--…timeout SECONDS`` option accepts: below a millisecond nothing answers in time,
and ``1e-320`` was printed as "9.99989e-321 s"."""
MAX_SECONDS: Final = 24 * 3600.0
"""The longest time a command's ``--…timeout SECONDS`` option accepts."""


def _refused(rule: str, text: str) -> argparse.ArgumentTypeError:
    """The usage error for ``text`` refused by ``rule``, the value quoted as given (cut to 40 characters).

    Example:
        >>> _refused("must be at most 2 seconds", "3")
        ArgumentTypeError("must be at most 2 seconds, got '3'")
    """
    from .protocol.codec import clip  # only for an error: the command lines' start stays light

    return argparse.ArgumentTypeError(f"{rule}, got {clip(text, 40)}")


def seconds(text: str) -> float:
    """An argparse ``type=`` for a time limit in seconds: a number from :data:`MIN_SECONDS` to :data:`MAX_SECONDS`
    (``nan``, ``inf`` and what is no number get the first message below; the value is quoted as given).

    Example:
        >>> seconds("2.5")
        2.5
        >>> seconds("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a number of seconds from 0.001 up, got '0'
        >>> seconds("1e6")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be at most 86400 seconds, got '1e6'
    """
    # Only ASCII decimal notation: float() also takes '5_0', other scripts' digits and surrounding blanks, which
    # no one means as a time limit and which the joiner of '-1e5' (joined_timeouts) reads the same way.
    value = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if value == math.inf and text.lstrip("+").lower() not in ("inf", "infinity"):
        value = MAX_SECONDS * 2  # '1e309' is a finite number written too large: the "at most" message fits it
    if math.isfinite(value) and MIN_SECONDS <= value <= MAX_SECONDS:
        return value
    if not (math.isfinite(value) and value >= MIN_SECONDS):
        raise _refused(f"must be a number of seconds from {MIN_SECONDS:g} up", text)
    raise _refused(f"must be at most {MAX_SECONDS:g} seconds", text)


def milliseconds(text: str) -> int:
    """An argparse ``type=`` for a time limit in whole milliseconds: 1 to :data:`MAX_SECONDS` in milliseconds,
    written in ASCII digits (``int`` took ``-5``, which failed only once connected, and ``5_0``).

    Example:
        >>> milliseconds("1500")
        1500
        >>> milliseconds("-5")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a whole number of milliseconds from 1 to 86400000, got '-5'
    """
    most = int(MAX_SECONDS * 1000)
    return whole_number(text, 1, most, f"must be a whole number of milliseconds from 1 to {most}")


def whole_number(text: str, low: int, high: int, rule: str) -> int:
    """``text`` as an integer from ``low`` (0 or more) to ``high`` written in ASCII digits (``+`` allowed), else the
    usage error ``rule``: ``int`` also takes ``5_000``, blanks around it and other scripts' digits (``٤٧٢٠٥``), which
    no other number the commands read takes.

    Example:
        >>> whole_number("8080", 0, 65535, "must be a port")
        8080
        >>> whole_number("1_0", 0, 65535, "must be a port")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a port, got '1_0'
    """
    # at most as many digits as the bound has (leading zeros aside): int() of a long text is never tried
    digits = text.lstrip("+").lstrip("0") or "0"
    if _DIGITS.fullmatch(text) and len(digits) <= len(str(high)) and low <= int(digits) <= high:
        return int(digits)
    raise _refused(rule, text)


def joined_timeouts(argv: Sequence[str] | None) -> list[str]:
    """``argv`` (``None``: ``sys.argv[1:]``) with ``--…timeout -inf`` (an option ending in ``timeout`` followed by a
    value that starts with ``-`` and reads as a number) as ``--…timeout=-inf``: argparse took ``-inf`` or ``-1e5``
    for an option and said "expected one argument", where ``-1`` got the error every bad value gets (:func:`seconds`).

    Example:
        >>> joined_timeouts(["health", "--timeout", "-inf", "--json"])
        ['health', '--timeout=-inf', '--json']
        >>> joined_timeouts(["send", "-", "--stall-timeout", "-1e5", "--to", "f"])
        ['send', '-', '--stall-timeout=-1e5', '--to', 'f']
    """
    joined: list[str] = []
    args = list(sys.argv[1:] if argv is None else argv)
    for index, arg in enumerate(args):
        if arg == "--":  # what follows is no option: argparse takes it as it is
            return joined + args[index:]
        if joined and _TIMEOUT_OPTION.fullmatch(joined[-1]) and arg.startswith("-"):
            if _DECIMAL.fullmatch(arg):
                joined[-1] = f"{joined[-1]}={arg}"
                continue
        joined.append(arg)
    return joined


_TIMEOUT_OPTION = re.compile(r"--[a-z-]*timeout")
# A number as people write one on a command line: sign, ASCII digits, point, exponent; inf and nan for the errors.
# Each digit can be taken one way only: with '[0-9]+\.?[0-9]*' a long run of digits followed by what fails was split
# every way before failing (40,000 digits and an 'x': 22 s). re.ASCII: U+0131 (dotless i) would match 'i' otherwise.
_DIGITS: Final = re.compile(r"\+?[0-9]+", re.ASCII)
_DECIMAL: Final = re.compile(r"[+-]?(?:inf(?:inity)?|nan|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?)",
                             re.IGNORECASE | re.ASCII)


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
