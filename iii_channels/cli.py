"""``iii-channel``: push a file or stdin through the engine to a worker function, or be that worker.

Usage::

    iii-channel serve --function files::receive --out DIR|FILE|-   # a worker that stores what it receives
                      [--overwrite]                              # replace an existing file (default: refuse)
                      [--replace]                                # take the function over from the worker serving it
                      [--idle-timeout SECONDS]                   # fail a sender silent this long (default: 300)
    iii-channel send FILE|- --to files::receive                    # sends, prints the receipt as JSON
                     [--allow-unverified]                        # accept an answer without "verified": true
                     [--stall-timeout SECONDS]                   # fail an upload that stops moving (default: 60)

The sender creates a channel, calls the function with ``{"reader": <ref>, "name": …, "size": …}`` and streams
the bytes (with an integrity trailer); the serving worker writes them with ``receive_file`` (temporary name,
renamed when verified) or to its stdout, and returns ``{"path", "bytes", "sha256", "verified"}``. ``send``
exits 0 only when that answer confirms the transfer (``"verified": true`` and, if named, the bytes sent), unless
``--allow-unverified``; an answer that cannot confirm it fails the send as soon as it arrives. A failed send aborts
its upload and closes the channel's read end if nobody took it, so the engine frees the channel and what it
buffered at once. After the answer, an upload that waits while none of its bytes move for ``--stall-timeout``
seconds (default 60) fails the send (``… answered without reading the channel: {answer} (… went out, then none
for 60 s)``): a function that answered while nobody takes the upload ends it then, not at the channel's attach
deadline, and one that reads slowly goes on as long as its bytes move. A transfer whose sender sends nothing for
``--idle-timeout`` seconds fails (its sender hears why): with ``--out -`` one transfer at a time has stdout, and a
stalled one must not keep the others waiting for good. With ``--out -``, a transfer that fails once some of its bytes
are on stdout stops ``serve`` (one line naming the transfer and the bytes written, status 1; a transfer waiting for
stdout is failed): the next one's bytes would follow them with nothing between (``| tar x``, ``> all.bin``). One that
fails before writing anything there is survived. An existing file is kept unless ``--overwrite``, in a directory
and in a file ``--out`` alike (the sender fails at once, ``serve`` goes on), and one transfer at a time writes a
file: another sent to a file being written (a file ``--out``; a name in a directory with ``--overwrite``) is refused
at once, so two senders never both hear "verified" for one path that holds only the last one's bytes.

Progress bars go to stderr only: ``--progress auto`` (default) draws one when stderr is a terminal, ``always``
also prints plain progress lines when it is not, ``never`` is silent. Stdout carries only data (``serve --out
-``) or the final JSON receipt (``send``). Nothing waits for stderr's reader: one that does not read (``2>&1 |
less`` paused) holds up neither a transfer nor a signal's stop. What stderr says is printed with its unprintable
characters escaped (``\\x1b``, ``\\u202e``): it quotes what peers chose (file names, abort reasons, answers). A
first connection refused is said at once where progress would be (``iii-channel: waiting up to 10 s for the
engine at URL (why)``); ``serve`` says ``serving FUNCTION again`` once its
function is back on an engine that was away. ``serve`` of a function another worker serves refuses to start
(``iii-channel: error: function F is served by worker ID (NAME); stop it, or pass --replace to take it over``, status
1): the engine keeps one worker per function id, the last to register it, so a second ``serve`` would take every
transfer from the first without a word. With ``--replace`` it takes the function over and says from which worker.
While it serves, it checks every 2 s that the engine still has the function with it, and stops with one line
(status 1) once another worker has taken it.
Exit status: 0 on success (and for ``serve`` stopped by SIGTERM or SIGINT between transfers; 1 when the signal
interrupted one: one line naming it, with ``--out -`` the bytes it left on stdout, into files that its partial file
was removed), 130 for ``send`` interrupted by SIGINT (one
line ``iii-channel: send: interrupted``; run as a command, the process then ends by SIGINT, so a shell loop running it
stops), 143 for ``send`` stopped by SIGTERM (handled as SIGINT is: the upload aborted,
so a reader hears ``ChannelAbortedError`` on our engine, and the client shut down; one line ``iii-channel: send:
terminated``; a second SIGTERM ends it at once), 1 on a failed transfer (an unconfirmed one included) or an engine that
cannot be reached within ``--connect-timeout`` (one line ``iii-channel: error: cannot reach the engine at URL …``; an
address that accepts the WebSocket upgrade and never names the connection, as an engine's stream socket does, is
``… accepted the WebSocket upgrade but is not an iii engine …``, within the same bound or 5 s after the upgrade,
whichever is later: ``--connect-timeout`` bounds reaching the engine, and a loaded engine may name a connection
late), 2 on
bad usage (a closed stream too: ``send -`` with stdin closed, ``send`` or ``serve --out -`` with stdout closed).
Paths are checked before connecting: ``send`` of a directory or a missing file and ``serve --out`` into a missing
directory fail at once. A ``send`` whose receipt cannot be written to stdout exits 1 with one line saying the transfer
succeeded, with the function's answer.

Example:
    >>> build_parser().parse_args(["send", "-", "--to", "x", "--engine", "ws://h:1"]).engine
    'ws://h:1'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import logging
import os
import re
import shlex
import signal
import stat
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from iii._cli import OneLineParser, exit_interrupted, joined_timeouts, mask_passwords, milliseconds, seconds
from iii.channels import ChannelReader, ChannelWriter
from iii.connection import check_url
from iii.iii import III, UNNAMED_WARN_S
from iii.iii_types import WorkerInfo

from ._unblocked import EXIT_WAIT_S, drain_all, write_text
from .errors import ChannelError
from .files import (
    _abort_writer,
    check_receive_target,
    checked_file_name,
    receive_file,
    reclaim_stale_parts,
    send_file,
)
from .pipes import from_fd, to_fd
from .progress import Progress, ProgressBar, human_bytes, printable
from .source import ChannelSource, _release_writer

DEFAULT_ENGINE = "ws://localhost:49134"
DEFAULT_CONNECT_TIMEOUT_S = 10.0
# How long a failed upload waits for the function's own error, which says more than "reader gone".
_ERROR_GRACE_S = 5.0
# After the function answered: how long the upload may wait on the socket with no byte moving before send gives up
# (--stall-timeout). The relay takes what it buffers at once, so a reader that never attached shows as a write
# waiting while nothing moves. A reader that reads moves bytes, but in bursts: the relay reads its writer again only
# once its buffers drained well below full, about 9 MB of the reader's progress on our engine (gaps of 2.3 s at
# 4 MB/s). 60 s lets a reader of ~150 kB/s go on (a send cut off is lost work; only --allow-unverified sends, of
# functions that answer first and read on their own, meet this rule) and still ends a wrong --to five times
# sooner than the channel's attach deadline (300 s on ours).
DEFAULT_STALL_TIMEOUT_S = 60.0
# How often, at most, send looks whether the upload's bytes moved while it waits for the upload after the answer.
_STALL_POLL_S = 0.5
# A --stall-timeout of 1e-300 is accepted (any wait then counts as a stall): the polling still pauses.
_STALL_POLL_MIN_S = 0.01
# A failed send's clean-up: how long the abort, then the release of a read end nobody took, may take each.
_GIVE_UP_S = 3.0
# How long a failed send's abort may take before its Close frame counts as stuck behind bytes nobody reads.
_ABORT_SEEN_S = 0.5
# How much of a function's answer an error line quotes.
_SHOWN_CHARS = 200
# serve --once: how long the final round trip may take that makes sure the transfer's result reached the engine.
_RESULT_FLUSH_S = 5.0
# serve: how often it checks that the engine still has its function with it (another worker registering the same id
# takes it over: the engine keeps the last, and tells nobody), and the bound of one check's call.
_OWNER_CHECK_S = 2.0
_CHECK_TIMEOUT_MS = 5000
DEFAULT_IDLE_TIMEOUT_S = 300.0
# An engine names a connection (workerregistered) as soon as it upgrades it, but a loaded one (or one behind a slow
# proxy) may take seconds. --connect-timeout bounds reaching the engine; an upgraded connection gets at least the
# time after which the SDK itself warns that a connection was never named (iii.iii.UNNAMED_WARN_S, 5 s) before it
# counts as "not an engine" (with 1 s, an engine naming it 1.5 s after the upgrade failed every send made with
# --connect-timeout 0.5).
_NAMING_S = UNNAMED_WARN_S
# The SDK's warning about a connection never named: the CLI says it itself, as its one error line.
_UNNAMED_WARNING = "has not named this connection"
# The most characters of one line of stderr: what peers chose (an answer, an abort reason) is quoted there, and a
# longer line is cut in the middle before its characters are escaped (printable).
_SAID_CHARS = 4096
# What str.split() splits at (str.isspace): _fail makes a message one line.
_BLANKS = re.compile(r"\s+")


class _Refused(Exception):
    """A path or other precondition that fails before any connection: exit status 1."""


class _StdoutSpoiled(Exception):
    """``serve --out -``: a transfer refused because a failed one left bytes on stdout (serve is stopping)."""


class _QuietUntilConnected(logging.Filter):
    """Hides the SDK's per-attempt connection messages while the CLI waits for the first connection: a failure
    then is reported by the CLI itself, in one line. Later reconnection warnings of ``serve`` still show.

    ``waiting``: the line said once, when the first attempt fails, so a person does not stare at a silent command
    for the whole ``--connect-timeout`` (``None``: say nothing, as progress is not shown either).

    Example:
        >>> quiet = _QuietUntilConnected("iii-channel: waiting up to 10 s for the engine at ws://h:1")
        >>> failed = logging.LogRecord("iii.connection", logging.WARNING, __file__, 1, "Connection to %s failed: %s",
        ...                            ("ws://h:1", "refused"), None)
        >>> import io
        >>> said = io.StringIO()
        >>> with contextlib.redirect_stderr(said):
        ...     hidden = quiet.filter(failed), quiet.filter(failed)
        >>> hidden, said.getvalue()
        ((False, False), 'iii-channel: waiting up to 10 s for the engine at ws://h:1 (refused)\\n')
    """

    def __init__(self, waiting: str | None = None) -> None:
        super().__init__()
        self._waiting = waiting

    def filter(self, record: logging.LogRecord) -> bool:
        # a retried attempt's warning only: the final failure (an ERROR, "not retrying") is the CLI's to report,
        # and "waiting" said as it gives up misled
        if self._waiting is not None and record.levelno == logging.WARNING:
            why = record.args[-1] if isinstance(record.args, tuple) and record.args else None
            _say(f"{self._waiting}{f' ({why})' if why is not None else ''}")
            self._waiting = None
        return False


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``iii-channel``.

    Example:
        >>> args = build_parser().parse_args(["serve", "--function", "files::receive", "--out", "inbox/",
        ...                                   "--idle-timeout", "30"])
        >>> args.command, args.function, args.out, args.idle_timeout
        ('serve', 'files::receive', 'inbox/', 30.0)
    """
    common = OneLineParser(add_help=False)
    # SUPPRESS keeps a subcommand's missing --engine from overwriting one given before the subcommand.
    common.add_argument("--engine", default=argparse.SUPPRESS,
                        help=f"engine worker URL (default: $III_URL or {DEFAULT_ENGINE})")
    common.add_argument("--progress", choices=("auto", "always", "never"), default=argparse.SUPPRESS,
                        help="progress bar on stderr: auto (only on a terminal), always, never")
    common.add_argument("--no-progress", dest="progress", action="store_const", const="never",
                        default=argparse.SUPPRESS, help="same as --progress never")
    common.add_argument("--connect-timeout", type=seconds, default=argparse.SUPPRESS, metavar="SECONDS",
                        help=f"give up when the engine cannot be reached this long (default "
                             f"{DEFAULT_CONNECT_TIMEOUT_S:g})")
    # usage errors: one line and exit status 2, like every command of the toolkit; --version comes with it
    parser = OneLineParser(prog="iii-channel", description=__doc__.split("\n\n")[0], parents=[common])
    # Not required here: argparse reports a missing subcommand before an unknown argument, so ``iii-channel
    # --bogus`` said "arguments are required: command" without naming --bogus; parse_args checks it afterwards.
    sub = parser.add_subparsers(dest="command", metavar="{send,serve}")
    send = sub.add_parser("send", help="send FILE (or - for stdin) to a function", parents=[common])
    send.add_argument("file", help="file to send, or - for stdin")
    send.add_argument("--to", required=True, help="function id that receives {reader, name, size}")
    send.add_argument("--name", help="name to announce (default: the file's basename, or 'stdin')")
    send.add_argument("--timeout-ms", type=milliseconds, default=24 * 3600 * 1000, metavar="MS",
                      help="call timeout in milliseconds, 1 to 86400000 (default: 1 day)")
    send.add_argument("--allow-unverified", action="store_true",
                      help='exit 0 also when the answer does not confirm the transfer with "verified": true '
                           "(a function of your own that answers something else)")
    send.add_argument("--stall-timeout", type=seconds, default=DEFAULT_STALL_TIMEOUT_S, metavar="SECONDS",
                      help="once the function answered, fail when the upload waits and no byte of it moves this "
                           "long: nobody reads it (default "
                           f"{DEFAULT_STALL_TIMEOUT_S:g}; more for a function that reads very slowly)")
    serve = sub.add_parser("serve", help="register a function that stores what it receives", parents=[common])
    serve.add_argument("--function", required=True, help="function id to register")
    serve.add_argument("--out", required=True, help="directory to store files in, a file path, or - for stdout")
    serve.add_argument("--once", action="store_true", help="exit after the first transfer")
    serve.add_argument("--overwrite", action="store_true",
                       help="replace an existing file (in a directory --out, or the file --out); default: refuse")
    serve.add_argument("--idle-timeout", type=seconds, default=DEFAULT_IDLE_TIMEOUT_S, metavar="SECONDS",
                       help="fail a transfer whose sender sends nothing this long; with --out - the next sender "
                            f"waits at most this long behind a stalled one (default {DEFAULT_IDLE_TIMEOUT_S:g})")
    serve.add_argument("--replace", action="store_true",
                       help="take the function over from the worker that serves it (which then gets no more "
                            "transfers); default: refuse to start, naming that worker")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``argv`` parsed by ``parser`` (:func:`build_parser`), a usage error (one line, exit status 2) naming an
    unknown argument first, then a missing subcommand.

    Example:
        >>> parse_args(build_parser(), ["send", "-", "--to", "x"]).command
        'send'
    """
    # an unknown argument is named here, before the subcommand is checked
    args = parser.parse_args(joined_timeouts(argv))
    if args.command is None:
        parser.error("the following arguments are required: a command (send or serve)")
    return args


def _connect_timeout(args: argparse.Namespace) -> float:
    return float(getattr(args, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_S))


def _check_source(name: str, args: argparse.Namespace) -> int | None:
    """The size of the file ``send`` is about to send (``None`` for stdin or a pipe); ``_Refused`` if it cannot.

    A directory is refused with the command that sends it as one tar archive with the options of ``args``.
    """
    if name == "-":
        return None
    try:
        info = os.stat(name)
    except OSError as exc:
        raise _Refused(f"cannot read {name}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        said = f"{name} is a directory; send takes one file (or - for stdin); "
        command = _archive_hint(name, args)
        # The line goes through _fail and _say, which fold blanks and escape what is unprintable: a command they
        # would change (a newline or undecodable byte in a name, two spaces) or cut (too long) would not work.
        if (_BLANKS.sub(" ", command) != command or not command.isprintable()
                or len(f"iii-channel: error: {said}{command}") > _SAID_CHARS):
            raise _Refused(f"{said}archive it with tar and send the archive (its name cannot be shown as a command)")
        raise _Refused(f"{said}to send a directory: {command}")
    if not os.access(name, os.R_OK):
        raise _Refused(f"cannot read {name}: permission denied")
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _check_out(out: str) -> Path | None:
    """The directory ``serve`` writes in (``None`` for stdout); ``_Refused`` naming what is wrong otherwise."""
    if out == "-":
        return None
    try:
        return check_receive_target(out)[1]
    except (OSError, ValueError) as exc:
        raise _Refused(f"--out {out}: {exc}") from None


def _not_unnamed(record: logging.LogRecord) -> bool:
    """Whether a record of the SDK's client is other than its warning that a connection was never named (which
    :func:`_connect` turns into the CLI's one error line)."""
    return _UNNAMED_WARNING not in str(record.msg)


async def _connect(client: III, args: argparse.Namespace) -> None:
    """Wait for the first connection, named by the engine; ``ConnectionError`` "cannot reach the engine at …" after
    the timeout, or "… is not an iii engine" when a WebSocket server accepted the upgrade and did not name it within
    the timeout nor within :data:`_NAMING_S` of the upgrade (whichever ends later)."""
    sdk_log, client_log = logging.getLogger("iii.connection"), logging.getLogger("iii.iii")
    # Said where progress would be drawn (a terminal, or --progress always): a script's stderr keeps its one line.
    url = mask_passwords(_engine(args))
    timeout = _connect_timeout(args)
    waiting = f"iii-channel: waiting up to {timeout:g} s for the engine at {url}" if _progress(args) else None
    quiet = _QuietUntilConnected(waiting)
    sdk_log.addFilter(quiet)
    client_log.addFilter(_not_unnamed)
    deadline = time.monotonic() + timeout
    try:
        await client.wait_until_connected_async(timeout)
        # Another WebSocket server (the engine's stream socket, 3112 by default) accepts the upgrade and never names
        # the connection: every call then waited its own timeout (30 s for the channel's creation) and failed as
        # "timed out", the SDK's warning before it without the command's prefix.
        upgraded = time.monotonic()
        named_by = max(deadline, upgraded + _NAMING_S)
        # the line states the wait that was allowed: the whole --connect-timeout, or the floor after the upgrade
        allowed = f"{timeout:g} s" if named_by == deadline else f"{_NAMING_S:g} s of the upgrade"
        while client.worker_id is None:
            left = named_by - time.monotonic()
            if left <= 0:
                raise ConnectionError(
                    f"{url} accepted the WebSocket upgrade but is not an iii engine: it did not name the connection "
                    f"(no workerregistered) within {allowed}. Is it the engine's worker port? Its stream socket "
                    "(3112 by default) accepts the upgrade too")
            # (returns once named, once the connection is lost, or after at most 2 s; raises if none comes back)
            await client.wait_until_connected_async(left)
    except BaseException:
        # Its reconnection attempts go on until it is shut down: stop them while their messages are still hidden,
        # or one that fails just after the filter goes adds a second line to the CLI's one-line error.
        await client.shutdown_async()
        raise
    finally:
        sdk_log.removeFilter(quiet)
        client_log.removeFilter(_not_unnamed)


def _progress(args: argparse.Namespace) -> Progress:
    mode = getattr(args, "progress", "auto")
    if mode == "never":
        return None
    if mode == "always":
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # None (started with 2>&-), or closed since: no terminal to draw on
        return False


def _engine(args: argparse.Namespace) -> str:
    return str(getattr(args, "engine", None) or os.environ.get("III_URL") or DEFAULT_ENGINE)


def _safe_name(name: object) -> str:
    """The basename of a sender-supplied name, never a path out of the output directory (labels only)."""
    base = Path(str(name or "")).name
    return base if base not in ("", ".", "..") else "received"


def _directory_target(directory: Path, name: object, overwrite: bool) -> Path:
    """Where a file announced as ``name`` goes in ``directory``: the checks of ``receive_file``'s directory mode.

    An unsafe name is refused (``ValueError``), not cleaned, and an existing file is kept (``FileExistsError``)
    unless ``overwrite``; both before a byte is received, so a refused sender fails at once.

    Example:
        >>> _directory_target(Path("/tmp/in"), "a.txt", True)
        PosixPath('/tmp/in/a.txt')
    """
    target = directory / checked_file_name("received" if name is None else str(name))
    if not overwrite and os.path.lexists(target):
        raise FileExistsError(_exists(target))
    return target


def _exists(target: Path) -> str:
    # the sender reads this too, and cannot pass serve's flag: say whose file it is and where the flag goes
    return f"{target} already exists on the receiver (serve --overwrite replaces files)"


def _why(exc: BaseException | None) -> str:
    """The readable part of an error (an ``InvocationError``'s ``message``, not its dict-shaped ``str``); an
    ``invocation_stopped`` says what it means for a transfer, and why it stopped when the engine did not say (an
    engine that names the cause, "Invocation of X stopped: <cause>", is not contradicted).

    Example:
        >>> from iii.errors import InvocationError
        >>> print(_why(InvocationError("invocation_stopped", "Invocation stopped")))
        Invocation stopped (the receiver disconnected or stopped before it answered: nothing is known to be stored)
        >>> print(_why(InvocationError("invocation_stopped", "Invocation of f::in stopped: the engine is stopping")))
        Invocation of f::in stopped: the engine is stopping (nothing is known to be stored)
    """
    text = str(getattr(exc, "message", None) or exc)
    if not text:  # a cancellation (serve's shutdown cancels a transfer under way) says nothing of itself
        text = "interrupted" if isinstance(exc, asyncio.CancelledError) else type(exc).__name__
    if getattr(exc, "code", None) == "invocation_stopped":
        cause = " stopped: " in text
        text += (" (nothing is known to be stored)" if cause else
                 " (the receiver disconnected or stopped before it answered: nothing is known to be stored)")
    return text


def _say(line: str) -> None:
    r"""Print ``line`` on stderr, flushed, its unprintable characters escaped (:func:`~iii_channels.progress.printable`:
    lines quote what peers chose, file names and errors, and a terminal must not run their escape sequences), cut
    in the middle past :data:`_SAID_CHARS` characters (a peer's answer of megabytes was one line of megabytes); a
    stderr that cannot be written (``/dev/full``, a pipe whose reader left) drops it: what stderr says is a courtesy,
    and a failed write there stopped a serve or failed a transfer. It never waits for stderr's reader
    (:func:`~iii_channels._unblocked.write_text`): one that did not read froze ``send`` and ``serve``, SIGTERM
    included.

    Example:
        >>> import io
        >>> said, gone = io.StringIO(), io.StringIO()
        >>> gone.close()
        >>> with contextlib.redirect_stderr(gone):
        ...     _say("serving f on ws://…")
        >>> with contextlib.redirect_stderr(said):
        ...     _say("the writer aborted: \x1b]0;title\x07")
        >>> gone.closed, said.getvalue()
        (True, 'the writer aborted: \\x1b]0;title\\x07\n')
    """
    if sys.stderr is None:  # print(file=None) would write it to stdout
        return
    with contextlib.suppress(OSError, ValueError):
        # never waiting for stderr's reader: one that does not read (`2>&1 | less` paused) froze the event loop
        write_text(sys.stderr, printable(line, _SAID_CHARS) + "\n")


class _PrintableLog(logging.Formatter):
    r"""The format of the SDK's log lines that reach stderr (Python's last-resort handler: the CLI configures no
    logging), with their unprintable characters escaped and long lines cut as :func:`_say` does its own: "Error in
    handler F: …" quotes the handler's error, and that quotes a sender's abort reason. A traceback keeps its lines.

    Example:
        >>> record = logging.LogRecord("iii.handler_runner", logging.ERROR, __file__, 1, "Error in handler %s: %s",
        ...                            ("f", "aborted: \x1b[2J"), None)
        >>> _PrintableLog().format(record)
        'Error in handler f: aborted: \\x1b[2J'
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record), _SAID_CHARS)

    def formatException(self, ei: Any) -> str:
        return "\n".join(printable(line, _SAID_CHARS) for line in super().formatException(ei).split("\n"))

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(printable(line, _SAID_CHARS) for line in super().formatStack(stack_info).split("\n"))


_PRINTABLE_LOG = _PrintableLog()


_last_resort_lock = threading.Lock()
_last_resort_users = 0  # the main() calls under way (threads of a program that embeds the command)
_last_resort_before: logging.Formatter | None = None


class _UnblockedEmit:
    """The last-resort handler's ``emit`` while :func:`main` runs: its line handed to stderr's writer thread
    (:func:`~iii_channels._unblocked.write_text`), never waiting for stderr's reader. Why: the SDK logs "Error in
    handler F: …" on its client's loop thread; with a stderr nobody read, a refused transfer was never answered (its
    sender waited for good) and ``serve`` never ended on SIGTERM."""

    def __init__(self, handler: logging.Handler) -> None:
        self.handler = handler

    def __call__(self, record: logging.LogRecord) -> None:
        if sys.stderr is None:
            return
        try:
            write_text(sys.stderr, self.handler.format(record) + "\n")
        except (OSError, ValueError):  # a stderr that cannot be written: a courtesy lost, as _say's
            pass
        except Exception:
            self.handler.handleError(record)


@contextlib.contextmanager
def _printable_last_resort() -> Iterator[None]:
    """Python's last-resort handler (where the SDK's log lines go: the CLI configures no logging) formats with
    :class:`_PrintableLog` while a :func:`main` call runs, and as before once the last one ends; meanwhile it writes
    through :class:`_UnblockedEmit`.

    Why not for good: ``main()`` also runs inside other programs (tests, a tool that embeds the command), whose own
    last-resort lines after it were escaped and flattened to one line each. The console script loses nothing: the
    SDK's client is shut down before ``main`` returns. A formatter set by someone else meanwhile is left as it is.

    Example:
        >>> assert logging.lastResort is not None
        >>> before = logging.lastResort.formatter
        >>> with _printable_last_resort():
        ...     isinstance(logging.lastResort.formatter, _PrintableLog)
        True
        >>> logging.lastResort.formatter is before, "emit" in vars(logging.lastResort)
        (True, False)
    """
    global _last_resort_users, _last_resort_before
    handler = logging.lastResort
    if handler is None:  # a program that silenced it: nothing to format
        yield
        return
    with _last_resort_lock:
        if _last_resort_users == 0:
            _last_resort_before = handler.formatter
            handler.setFormatter(_PRINTABLE_LOG)
            vars(handler)["emit"] = _UnblockedEmit(handler)  # the instance's, over its class's
        _last_resort_users += 1
    try:
        yield
    finally:
        with _last_resort_lock:
            _last_resort_users -= 1
            if _last_resort_users == 0:
                if handler.formatter is _PRINTABLE_LOG:
                    handler.setFormatter(_last_resort_before)
                if isinstance(vars(handler).get("emit"), _UnblockedEmit):
                    del vars(handler)["emit"]


def _stderr_to_null() -> None:
    """Give a process started with stderr closed (``2>&-``; Python's ``sys.stderr`` is then ``None``) ``/dev/null``
    as its stderr, descriptor 2 included. Why: ``sys.stderr.isatty()`` raised on ``None`` (``send`` exited 1 without
    a word, ``serve`` without serving), ``print(file=None)`` writes to stdout (into the data of ``serve --out -``),
    and a file opened later would be given descriptor 2, so whatever writes there (a fatal error, a library's
    message) would land in it. The command then runs as with ``--progress never``: a closed stderr loses no data."""
    with contextlib.suppress(OSError):
        try:
            os.fstat(2)
        except OSError:  # closed: /dev/null takes descriptor 2, inheritable as a standard stream is
            null = os.open(os.devnull, os.O_WRONLY)
            if null != 2:
                os.dup2(null, 2)
                os.close(null)
            os.set_inheritable(2, True)
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)


def _fail(message: str, status: int = 1) -> int:
    # One line, whatever the message: a multi-line exception text must not break scripts reading stderr. (One
    # substitution, not split() and join(): a peer's message of megabytes was a string a word.)
    _say(f"iii-channel: error: {_BLANKS.sub(' ', message).strip()}")
    return status


class _WatchedWriter(ChannelWriter):
    """A channel writer that says since when its write under way waits for the socket, and whether bytes moved.

    Once the called function has answered, an upload that waits while none of its bytes move means nobody takes
    them: the relay buffers some, then stops reading, and without a reader the upload would wait for the attach
    deadline.

    Example:
        >>> writer = _WatchedWriter("ws://localhost:49134", {"channel_id": "c", "access_key": "k",
        ...                                                  "direction": "write"})
        >>> writer.waiting_since(), writer.moved()
        (None, (0, 0))
    """

    _waiting_since: float | None = None

    def waiting_since(self) -> float | None:
        """When (``time.monotonic()``) the write or text message under way started; ``None``: none is."""
        return self._waiting_since

    def moved(self) -> tuple[int, int]:
        """A mark that changes whenever bytes of this upload move: those written (counted per write) and those the
        socket's transport still holds (which shrink as the peer takes them, in the middle of a long write)."""
        return self.bytes_written, self.buffered_bytes

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        with self._waiting():
            await super().write(data)

    async def send_message_async(self, msg: str) -> None:
        with self._waiting():
            await super().send_message_async(msg)

    closing: bool = False  # the close began: once its Close frame is out, no abort can undo the stream's end
    ended: bool = False  # the close returned: the whole stream is in the engine's hands

    async def close_async(self) -> None:
        # Not watched: once every byte is written, the close waits behind what the engine and both sockets buffer for
        # the reader (tens of MiB), while none of this writer's bytes move; a reader slower than that per stall time
        # was failed as "answered without reading". A reader that never attached shows as a write waiting before it
        # (the relay stops reading once its queue is full); a close that still waits on one ends at the channel's
        # attach deadline.
        self.closing = True
        await super().close_async()
        self.ended = True

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        self._waiting_since = time.monotonic()
        try:
            yield
        finally:
            self._waiting_since = None


def _shown(answer: object) -> str:
    """A function's answer as compact JSON, cut to a length that fits an error line.

    Example:
        >>> _shown({"ignored": True}), len(_shown({"x": "y" * 1000}))
        ('{"ignored": true}', 201)
    """
    text = json.dumps(answer, default=repr, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _unconfirmed(answer: object, sent: int | None) -> str | None:
    """Why ``answer`` does not confirm that the ``sent`` bytes arrived intact, or ``None`` when it does:
    ``"verified": true`` (the receiver checked the integrity trailer) and, if it names them, the same byte count.
    With ``sent`` ``None`` (the upload still under way) only what the answer alone decides is judged.

    Example:
        >>> _unconfirmed({"bytes": 3, "verified": True}, 3) is None
        True
        >>> _unconfirmed({"ignored": True}, None)
        'did not confirm the transfer (its answer has no "verified": true)'
        >>> _unconfirmed({"bytes": 2, "verified": True}, None) is None
        True
    """
    if not isinstance(answer, dict) or "verified" not in answer:
        return 'did not confirm the transfer (its answer has no "verified": true)'
    if answer["verified"] is not True:
        return f'did not verify the transfer ("verified": {_shown(answer["verified"])})'
    stored = answer.get("bytes")
    if sent is not None and isinstance(stored, int) and not isinstance(stored, bool) and stored != sent:
        return f"verified {stored} bytes, but {sent} were sent"
    return None


async def _ended(transfer: asyncio.Future[int], writer: _WatchedWriter, stall_s: float) -> bool:
    """Wait for ``transfer`` while its bytes move: ``True`` once it is done, ``False`` when one of its socket
    operations has waited ``stall_s`` seconds with no byte moving meanwhile (:meth:`_WatchedWriter.moved`). A slow
    source (stdin) is no stall, nothing waits on the socket; nor is a slow reader, whose progress moves bytes even
    while one long write waits.

    Example:
        >>> async def demo() -> bool:
        ...     done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        ...     done.set_result(0)
        ...     return await _ended(done, _WatchedWriter("ws://h:1", {"channel_id": "c", "access_key": "k",
        ...                                                             "direction": "write"}), 1.0)
        >>> asyncio.run(demo())
        True
    """
    poll = max(_STALL_POLL_MIN_S, min(_STALL_POLL_S, stall_s / 10))
    mark, moved_at = writer.moved(), time.monotonic()
    while True:
        done, _ = await asyncio.wait({transfer}, timeout=poll)
        if done:
            return True
        now, seen = time.monotonic(), writer.moved()
        if seen != mark:
            mark, moved_at = seen, now
        since = writer.waiting_since()
        if since is not None and now - max(since, moved_at) >= stall_s:
            return False


async def _give_up(writer: _WatchedWriter, reader: ChannelReader, reason: str, delivered: bool) -> None:
    """End a failed send's channel in the engine now. An upload still going (``delivered`` false) is aborted: the
    relay drops what it buffered, and a reader attached, or one the function attaches later, gets
    :class:`~iii.channels.ChannelAbortedError` with ``reason`` (a read end claimed here would tell that late reader
    only "channel not found"). But an abort whose Close frame still waits after ``_ABORT_SEEN_S`` sits behind bytes
    the relay stopped reading because nobody reads them: the relay cannot see it, so the read end is claimed and
    closed, which frees the channel; so is it when the writer's close had begun (its Close frame may be out: the
    stream then ended normally, and its bytes would wait for a reader). An upload the relay already holds whole
    (``delivered``: a small file) can no longer be aborted: the read end is claimed and closed if nobody took it,
    so the function of a send reported failed never reads it later, and the engine frees it now (not at the 300 s
    attach deadline). Bounded; errors are swallowed (the failure being reported is the one to tell)."""

    async def bounded(step: Awaitable[None]) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_GIVE_UP_S):
                await step

    if delivered:
        await bounded(_release_writer(reader))
        return
    abort = asyncio.ensure_future(bounded(writer.abort(reason)))
    try:
        if not (await asyncio.wait({abort}, timeout=_ABORT_SEEN_S))[0] or writer.closing:
            # stuck behind bytes nobody reads, or too late: a close already under way may have ended the stream
            # normally, which an abort cannot undo (the bytes would wait for a reader until the attach deadline)
            await bounded(_release_writer(reader))
        await abort
    finally:
        abort.cancel()


class _Termination:
    """What ``send``'s SIGTERM handler and the transfer tell each other: whether the signal came, and whether the
    outcome was already decided (its line printed; the clean-up under way is bounded and left to finish)."""

    def __init__(self) -> None:
        self.signalled = False
        self.decided = False


async def _send(args: argparse.Namespace) -> int:
    """``send``, with SIGTERM handled as Ctrl-C is: the transfer is cancelled and cleaned up (upload aborted, client
    shut down), then one line ``iii-channel: send: terminated`` and exit status 143 (128 + SIGTERM)."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    term = _Termination()

    def terminate() -> None:
        term.signalled = True
        # Once: a second SIGTERM meets the default action again and ends the process at once.
        loop.remove_signal_handler(signal.SIGTERM)
        if main is not None and not term.decided:
            main.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off the main thread
        loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await _transfer(args, term)
    except asyncio.CancelledError:
        if not term.signalled or main is None:
            raise
        main.uncancel()
        _say("iii-channel: send: terminated")
        return 128 + signal.SIGTERM
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


async def _send_special(writer: ChannelWriter, name: str, progress: Progress, label: str) -> int:
    """Send a file that is not a regular one (``<(command)``, a FIFO, a device) as stdin is sent: opened without
    waiting for a writer and read once the loop says it is readable, never in a thread, which cannot be cancelled
    and which ``asyncio.run`` waits for at exit (a send stopped by SIGTERM stayed until the producer ended, and one
    of a FIFO nobody writes to, for good)."""
    try:
        # O_NONBLOCK: a FIFO's open returns at once instead of waiting for its writer
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        await _abort_writer(writer, f"cannot open {name}: {exc!r}")
        raise
    try:
        return await from_fd(writer, fd, progress=progress, label=label)
    finally:
        os.close(fd)


def _archive_hint(directory: str, args: argparse.Namespace) -> str:
    """The shell command that sends ``directory`` as one tar stream (``serve --out - | tar x`` unpacks it) with
    the options of ``args`` (a parsed ``send``) that differ from their defaults; every value shell-quoted, and
    given as ``--option=value`` and after ``--`` so that one starting with ``-`` is no option.

    Example:
        >>> _archive_hint("/srv/in/", build_parser().parse_args(["send", "x", "--to", "f::g", "--engine", "ws://h"]))
        'tar c -C /srv -- in | iii-channel send - --to=f::g --name=in.tar --engine=ws://h'
    """
    parent, base = os.path.split(os.path.abspath(directory))
    name = args.name or f"{base or 'root'}.tar"
    options = [f"--to={shlex.quote(args.to)}", f"--name={shlex.quote(name)}"]
    # Every other option of send applies to stdin as well, and is named as its dest (--no-progress: --progress);
    # one left at its default is left out.
    defaults = vars(parse_args(build_parser(), ["send", "-", "--to", args.to]))
    for dest, value in vars(args).items():
        if dest in ("command", "file", "to", "name") or value == defaults.get(dest):
            continue
        option = f"--{dest.replace('_', '-')}"
        options.append(option if value is True else f"{option}={shlex.quote(str(value))}")
    return f"tar c -C {shlex.quote(parent)} -- {shlex.quote(base or '.')} | iii-channel send - {' '.join(options)}"


async def _transfer(args: argparse.Namespace, term: _Termination) -> int:
    size = _check_source(args.file, args)
    url = _engine(args)
    client = III(url)
    tasks: list[asyncio.Future[Any]] = []
    ends: tuple[_WatchedWriter, ChannelReader] | None = None
    why: str | None = None  # the failure, the abort's reason
    succeeded = False
    transfer: asyncio.Future[int] | None = None
    try:
        await _connect(client, args)
        channel = await client.create_channel_async()
        writer = _WatchedWriter(url, channel.writer_ref)
        ends = writer, ChannelReader(url, channel.reader_ref)
        progress = _progress(args)
        if args.file == "-":
            name = args.name or "stdin"
            upload = from_fd(writer, sys.stdin.fileno(), progress=progress, label=name)
        elif size is None:  # a pipe (<(command)), FIFO or device: read as stdin is, see _special_file
            name = args.name or Path(args.file).name
            upload = _send_special(writer, args.file, progress, name)
        else:
            path = Path(args.file)
            name = args.name or path.name
            upload = send_file(writer, path, progress=progress)
        payload = {"reader": channel.reader_ref, "name": name, "size": size}
        transfer = asyncio.ensure_future(upload)
        call = asyncio.ensure_future(
            client.trigger_async({"function_id": args.to, "payload": payload, "timeout_ms": args.timeout_ms}))
        tasks += [transfer, call]
        await asyncio.wait({transfer, call}, return_when=asyncio.FIRST_COMPLETED)
        if not call.done() and transfer.exception() is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.wait({call}), _ERROR_GRACE_S)
            if not call.done() or call.exception() is None:
                why = f"sending {args.file} failed: {_why(transfer.exception())}"
                return _fail(why)
        await asyncio.wait({call})
        if call.exception() is not None:
            # The function failed (or does not exist): nobody reads the rest; the finally stops the upload.
            why = f"{args.to} failed: {_why(call.exception())}"
            return _fail(why)
        answer = call.result()
        problem = None if args.allow_unverified else _unconfirmed(answer, None)
        if problem is not None and not transfer.done():
            # The answer alone fails the send: waiting for the upload would only keep the engine holding it.
            why = f"{args.to} {problem}"
            return _fail(f"{why}: {_shown(answer)} (--allow-unverified accepts such an answer)")
        if not await _ended(transfer, writer, args.stall_timeout):
            # Answered, and the bytes go nowhere: the reader never attached (or stopped reading for good).
            why = f"{args.to} answered without reading the channel"
            total = "" if size is None else f" of {human_bytes(size)}"
            return _fail(f"{why}: {_shown(answer)} ({human_bytes(writer.bytes_written)}{total} went out, then "
                         f"none for {args.stall_timeout:g} s)")
        if transfer.exception() is not None:
            why = f"sending {args.file} failed after {args.to} answered"
            return _fail(f"{why} {_shown(answer)}: {_why(transfer.exception())}")
        sent = transfer.result()
        problem = None if args.allow_unverified else _unconfirmed(answer, sent)
        if problem is not None:
            why = f"{args.to} {problem}"
            return _fail(f"{why}: {_shown(answer)} (--allow-unverified accepts such an answer)")
        succeeded = True
        try:
            print(json.dumps({"sent": sent, "result": answer}), flush=True)
        except OSError as exc:  # `> /dev/full`, a full disk, a closed pipe: the transfer is done all the same
            _drop_stdout()
            return _fail(f"the transfer succeeded ({sent} bytes sent, {args.to} answered {_shown(answer)}), but its "
                         f"receipt could not be written to stdout ({exc.strerror or exc})")
        return 0
    finally:
        term.decided = why is not None or succeeded
        if ends is not None and not succeeded:
            # The close returned (the upload's task may still be ending): the stream is whole in the relay, an abort
            # now does nothing and the bytes would wait for a reader (CI: the channel held past the send's end).
            delivered = ends[0].ended or (transfer is not None and transfer.done() and not transfer.cancelled()
                                          and transfer.exception() is None)
            await _give_up(*ends, why or f"iii-channel send {'terminated' if term.signalled else 'stopped'}",
                           delivered)
        # Cancelled and awaited before the shutdown: a call the shutdown fails, left unread, is printed as
        # "Task exception was never retrieved" with a traceback when the loop ends (Ctrl-C mid-transfer).
        for task in tasks:
            task.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await client.shutdown_async()


# serve --out -: what the sender hears, and serve says as it stops, once whatever read serve's stdout has ended.
_STDOUT_GONE = "serve's stdout was closed (whatever read it ended): nothing more can be stored, and serve stops"


class _Stdout:
    """``serve --out -``'s stdout: the lock that gives it to one transfer at a time, and, once a transfer failed
    after some of its bytes were written there, the line that says so (``spoiled``): nothing may follow them."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.spoiled: str | None = None


_STDOUTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Stdout] = weakref.WeakKeyDictionary()


def _stdout() -> _Stdout:
    """The running loop's stdout state (an ``asyncio.Lock`` belongs to one loop; tests run several)."""
    return _STDOUTS.setdefault(asyncio.get_running_loop(), _Stdout())


def _spoiled(name: object, written: int, exc: BaseException, stopped_by: str | None = None) -> str:
    """What serve says as it stops once a transfer failed after ``written`` of its bytes reached stdout (at most
    that many when writing to stdout failed or was interrupted, the last chunk perhaps in part; exactly that many
    when the channel failed, every chunk read before written whole). A cancelled transfer was interrupted: by
    ``stopped_by`` (a signal's name) when serve was stopped by one.

    Example:
        >>> _spoiled("a.tar", 8_900_000, OSError("disk full")).split("; ")[0]
        "the transfer of 'a.tar' failed after up to 8900000 of its bytes were written to stdout (disk full)"
        >>> print(_spoiled("a.tar", 30_000_000, asyncio.CancelledError(), "SIGTERM"))
        the transfer of 'a.tar' was interrupted by SIGTERM after up to 30000000 of its bytes were written to stdout: \
what is there is incomplete
    """
    if isinstance(exc, asyncio.CancelledError):
        by = f" by {stopped_by}" if stopped_by else ""
        return (f"the transfer of {_safe_name(name)!r} was interrupted{by} after up to {written} of its bytes were "
                "written to stdout: what is there is incomplete")
    count = f"up to {written}" if isinstance(exc, OSError) and not isinstance(exc, ChannelError) else str(written)
    return (f"the transfer of {_safe_name(name)!r} failed after {count} of its bytes were written to stdout "
            f"({_why(exc)}); serve stops, so that no later transfer follows them there")


def _interrupted(stopped_by: str, names: list[str], to_stdout: bool) -> str:
    """What serve says as it stops, once a signal interrupted transfers that left nothing behind (``names``): none
    of their bytes reached stdout, or, into files, their partial files were removed.

    Example:
        >>> print(_interrupted("SIGTERM", ["a.bin"], to_stdout=False))
        SIGTERM interrupted the transfer of 'a.bin': nothing of it was kept (its partial file was removed), and its \
sender was told it failed
    """
    what = (f"the transfer of {names[0]!r}" if len(names) == 1 else
            f"{len(names)} transfers ({', '.join(repr(name) for name in names)})")
    kept = ("none of its bytes reached stdout" if to_stdout else "its partial file was removed") if len(names) == 1 \
        else ("none of their bytes reached stdout" if to_stdout else "their partial files were removed")
    told = "its sender was told it failed" if len(names) == 1 else "their senders were told they failed"
    return f"{stopped_by} interrupted {what}: nothing of {'it' if len(names) == 1 else 'them'} was kept ({kept}), " \
        f"and {told}"


async def _store(reader: ChannelReader, data: dict[str, Any], out: str, progress: Progress,
                 overwrite: bool = False, idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
                 stopped_by: Callable[[], str | None] = lambda: None) -> dict[str, Any]:
    """Write one incoming stream to ``out`` (directory, file or ``-``) and describe what was stored; a sender
    silent for ``idle_timeout`` seconds fails it with :class:`~iii_channels.errors.ChannelIdleError`.
    ``stopped_by``: the signal that stopped serve, if any (what a cancelled transfer says it was interrupted by)."""
    size = data.get("size") if isinstance(data.get("size"), int) else None
    if out == "-":
        # One transfer at a time: two senders served at once would interleave their chunks on stdout. The next
        # one waits on backpressure meanwhile, its reader attached first: unattached, its channel would expire at
        # the engine's attach deadline (300 s on ours) behind a longer transfer.
        stdout = _stdout()
        try:
            await reader._ensure_connected()
            await stdout.lock.acquire()
        except BaseException:
            await asyncio.shield(_release_writer(reader))
            raise
        try:
            if stdout.spoiled is not None:
                # A failed transfer's bytes end stdout: this one's would follow them as if they belonged together.
                await asyncio.shield(_release_writer(reader))
                raise _StdoutSpoiled(stdout.spoiled)
            bar: Progress = ProgressBar(label=_safe_name(data.get("name")), stream=sys.stderr) if progress else None
            # `iii-channel send` always ends with a trailer: without one the sender died (an engine that cannot
            # signal aborts ends the stream normally), and what reached stdout is short.
            # The idle bound frees stdout from a stalled sender: one that wrote nothing there leaves it to the next
            # sender; what one wrote stays there, so serve stops (below), and the error names the byte count.
            source = ChannelSource(reader, progress=bar, total=size, require_trailer=True, text_limit=0,
                                   idle_timeout=idle_timeout)
            try:
                count = await to_fd(source, sys.stdout.fileno())
            except BrokenPipeError:
                raise BrokenPipeError(_STDOUT_GONE) from None
            except BaseException as exc:
                # A cancellation too (SIGTERM, SIGINT: serve's shutdown cancels the transfers under way): the
                # bytes it left on stdout are as incomplete as a failed transfer's.
                if source.bytes_read:
                    # Its bytes are on stdout with nothing to tell them from the next transfer's (`| tar x`,
                    # `> all.bin`): serve stops (see _serve), and a transfer waiting for stdout is failed.
                    stdout.spoiled = _spoiled(data.get("name"), source.bytes_read, exc, stopped_by())
                raise
        finally:
            stdout.lock.release()
        return {"path": "-", "bytes": count, "sha256": source.sha256, "verified": source.verified}
    target = Path(out)
    # An existing file is kept unless --overwrite, into a directory and into a file --out alike: checked before
    # reading (a refused sender fails at once), and again as the file is placed, atomically (two senders of one
    # name at once: one fails).
    into_directory = await asyncio.to_thread(target.is_dir)
    exclusive = not overwrite
    # One transfer at a time per file where placing atomically cannot tell them apart: into a file --out (all
    # senders share that one name) and with --overwrite (the last to finish would silently replace the others,
    # each of them told "verified"). The next one is refused at once, before a byte is read.
    claim: _Claim | None = None
    try:
        if not into_directory:
            claim = _claim(target)
        else:
            target = await asyncio.to_thread(_directory_target, target, data.get("name"), overwrite)
            claim = _claim(target) if overwrite else None
        if not into_directory and not overwrite and await asyncio.to_thread(os.path.lexists, target):
            raise FileExistsError(_exists(target))
    except BaseException:
        if claim is not None:
            claim.release()
        # Refused before reading: release the sender now instead of leaving it blocked on backpressure.
        await asyncio.shield(_release_writer(reader))
        raise
    try:
        receipt = await receive_file(reader, target, progress=progress, require_trailer=True,
                                     idle_timeout=idle_timeout, exclusive=exclusive)
    except FileExistsError:
        if not exclusive:
            raise
        raise FileExistsError(_exists(target)) from None
    finally:
        if claim is not None:
            claim.release()
    return {"path": str(receipt.path), "bytes": receipt.size, "sha256": receipt.sha256,
            "verified": receipt.verified}


class _TargetBusy(Exception):
    """A transfer refused because another one is writing the same file on this serve now."""


class _Claim:
    """A file a transfer of this serve is writing now (:func:`_claim`); ``release`` once it is done."""

    def __init__(self, held: set[str], key: str) -> None:
        self._held, self._key = held, key

    def release(self) -> None:
        self._held.discard(self._key)


# The files the transfers of each loop are writing now (the handler runs on the client's loop; tests run several).
_RECEIVING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[str]] = weakref.WeakKeyDictionary()


def _claim(target: Path) -> _Claim:
    """Hold ``target`` for one transfer; :class:`_TargetBusy` naming it while another transfer holds it.

    Example:
        >>> async def twice() -> str:
        ...     first = _claim(Path("/tmp/in/a.bin"))
        ...     try:
        ...         _claim(Path("/tmp/in/a.bin"))
        ...     except _TargetBusy as busy:
        ...         return str(busy)
        ...     finally:
        ...         first.release()
        ...     return "not refused"
        >>> print(asyncio.run(twice()))
        /tmp/in/a.bin is being written by another transfer on the receiver now (one transfer at a time per file)
    """
    held = _RECEIVING.setdefault(asyncio.get_running_loop(), set())
    key = os.path.abspath(target)
    if key in held:
        raise _TargetBusy(f"{target} is being written by another transfer on the receiver now (one transfer at a "
                          "time per file)")
    held.add(key)
    return _Claim(held, key)


def _holder(workers: list[WorkerInfo], function_id: str, me: str | None) -> WorkerInfo | None:
    """The connected worker other than ``me`` that serves ``function_id`` (the engine keeps one per id: the last to
    register it).

    Example:
        >>> from iii import WorkerInfo
        >>> other = WorkerInfo(id="w1", name="host:41", status="connected", connected_at_ms=0, function_count=1,
        ...                    functions=["files::receive"], active_invocations=0)
        >>> _holder([other], "files::receive", me="w2").id, _holder([other], "files::receive", me="w1")
        ('w1', None)
    """
    return next((worker for worker in workers
                 if function_id in worker.functions and worker.id != me and worker.status != "disconnected"), None)


def _worker(worker: WorkerInfo) -> str:
    return f"{worker.id} ({worker.name})" if worker.name else worker.id


def _served_by(function_id: str, worker: WorkerInfo) -> str:
    return f"function {function_id} is served by worker {_worker(worker)}"


async def _workers(client: III, only: str | None = None) -> list[WorkerInfo]:
    """The engine's workers (``only``: that one, where the engine can filter), bounded by :data:`_CHECK_TIMEOUT_MS`."""
    result = await client.trigger_async({"function_id": "engine::workers::list",
                                         "payload": {} if only is None else {"worker_id": only},
                                         "timeout_ms": _CHECK_TIMEOUT_MS})
    return [WorkerInfo(**worker) for worker in result.get("workers", [])]


async def _other_holder(client: III, function_id: str) -> tuple[WorkerInfo | None, bool]:
    """``(the other worker serving function_id now, whether the engine could say)``: a failed check is one line on
    stderr (a courtesy: its failure must not stop a serve)."""
    try:
        return _holder(await _workers(client), function_id, client.worker_id), True
    except Exception as exc:  # an error, a timeout, an answer of another shape
        _say(f"iii-channel: could not check whether another worker serves {function_id} ({_why(exc)}); going on")
        return None, False


async def _watch_ownership(client: III, function_id: str) -> str:
    """Return, with the line to stop on, once another worker has taken ``function_id`` over (two serves started
    together, one given ``--replace``, or one coming back after the engine was away: the engine keeps the last to
    register, and tells nobody)."""
    while True:
        await asyncio.sleep(_OWNER_CHECK_S)
        me = client.worker_id
        if me is None or client.get_connection_state() != "connected":
            continue  # reconnecting: the registration is sent again once connected
        try:
            mine = [worker for worker in await _workers(client, me) if worker.id == me]
            if not mine or function_id in mine[0].functions:
                continue  # still ours (or this connection is not listed yet)
            taker = _holder(await _workers(client), function_id, client.worker_id)
        except Exception:
            continue  # checked again next time; a serve goes on while the engine cannot answer
        if taker is not None:
            return f"{_served_by(function_id, taker)} now: it took the function over from this serve"


async def _serve(args: argparse.Namespace) -> int:
    url = _engine(args)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    failures: list[str] = []
    stdout_gone: list[str] = []
    interrupted: list[str] = []  # the transfers a signal cut short (their names)
    signalled: list[str] = []  # the signal that stopped serve
    progress = _progress(args)

    def stopped(sig: signal.Signals) -> None:
        if not signalled:
            signalled.append(sig.name)
        stop.set()

    # Signals first: SIGTERM must end serve promptly in every phase, the wait for the engine included.
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopped, sig)
    directory = _check_out(args.out)
    if directory is not None:
        removed = await asyncio.to_thread(_reclaim_report, directory)
        if removed:
            _say(f"iii-channel: {removed}")
    client = III(url)

    async def handler(data: dict[str, Any]) -> dict[str, Any]:
        # Runs on the client's own event loop (another thread): touch `stop` only through call_soon_threadsafe.
        reader = data.get("reader")
        if isinstance(reader, dict):
            reader = ChannelReader(url, reader)
        if not isinstance(reader, ChannelReader):
            raise ValueError(f"{args.function} expects {{'reader': <channel ref>, ...}}, got keys {sorted(data)}")
        try:
            return await _store(reader, data, args.out, progress, args.overwrite, args.idle_timeout,
                                lambda: signalled[0] if signalled else None)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and signalled:
                interrupted.append(_safe_name(data.get("name")))  # by serve's shutdown, after the signal
            else:
                failures.append(_why(exc))
            spoiled = _stdout().spoiled if args.out == "-" else None
            if spoiled is not None or (isinstance(exc, BrokenPipeError) and args.out == "-"):
                # every later transfer would fail the same way, or follow a failed one's bytes: stop, and say why
                stdout_gone.append(spoiled or str(exc))
                loop.call_soon_threadsafe(stop.set)
            raise
        finally:
            if args.once:
                loop.call_soon_threadsafe(stop.set)

    async def start() -> bool:
        await _connect(client, args)
        holder, listed = await _other_holder(client, args.function)
        if holder is not None and not args.replace:
            raise _Refused(f"{_served_by(args.function, holder)}; stop it, or pass --replace to take it over")
        client.register_function(args.function, handler)
        # A round trip on the control socket: the engine handles frames in order, so once this answers the
        # registration is live and a sender started now will find the function.
        me = client.worker_id
        if me is None or not listed:  # which worker is this one is unknown, or the engine cannot list its workers
            return args.function in {f.function_id for f in await client.list_functions_async()}
        try:
            workers = await _workers(client)
        except Exception:  # cannot say which worker holds it: ask only whether the engine has it
            return args.function in {f.function_id for f in await client.list_functions_async()}
        winner = _holder(workers, args.function, me)
        if winner is not None:  # another serve registered it since the check above: the engine keeps the last
            raise _Refused(f"{_served_by(args.function, winner)} (it registered just after this serve)")
        if holder is not None:
            _say(f"iii-channel: took {args.function} over from worker {_worker(holder)}")
        return any(args.function in worker.functions for worker in workers if worker.id == me)

    starting = asyncio.ensure_future(start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            return 0  # stopped by a signal before the engine answered
        if not starting.result():
            return _fail(f"the engine did not accept function {args.function}")
        _say(f"serving {args.function} on {url}")
        # The SDK says "Connection to … failed" while the engine is away; say when the function is served again.
        # Registered only now, so only the connections after this first one count (it runs on a handler thread).
        client.on_registrations_ready(
            lambda: _say(f"serving {args.function} again"))
        watching = asyncio.ensure_future(_watch_ownership(client, args.function))
        try:
            await asyncio.wait({stopping, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
        if watching.done() and not watching.cancelled() and watching.exception() is None:
            return _fail(watching.result())
        if args.once and client.get_connection_state() == "connected":
            # Same trick after the last transfer: the handler's result frame was queued before this call.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.list_functions_async(), _RESULT_FLUSH_S)
    finally:
        for task in (starting, stopping):
            task.cancel()
        await asyncio.gather(starting, stopping, return_exceptions=True)
        await client.shutdown_async()
    if stdout_gone:
        return _fail(stdout_gone[0])
    if interrupted:
        # Stopped on purpose, but not idle: a transfer was lost, which a stop between transfers does not do.
        return _fail(_interrupted(signalled[0], interrupted, args.out == "-"))
    return _fail(f"the transfer failed: {failures[-1]}") if args.once and failures else 0


def _reclaim_report(directory: Path) -> str:
    removed = reclaim_stale_parts(directory)
    if not removed:
        return ""
    size = sum(removed.values())
    return f"removed {len(removed)} stale partial file(s) ({size} bytes) in {directory}"


def _drop_stdout() -> None:
    """Point stdout at ``/dev/null`` once writing to it failed: what stays in its buffer would be flushed again as
    the interpreter ends, which fails again and adds a second message (and status 120) to the one line."""
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, sys.stdout.fileno())
        finally:
            os.close(null)


def _closed(stream: Any) -> bool:
    """Whether a standard stream cannot be used: closed when the process started (Python's ``None``) or since.

    Example:
        >>> _closed(None), _closed(sys.__stderr__)
        (True, False)
    """
    if stream is None:
        return True
    try:
        os.fstat(stream.fileno())
    except io.UnsupportedOperation:  # no descriptor of its own (an in-memory stream): usable as it is
        return False
    except (OSError, ValueError):  # a descriptor closed since, or a file object closed
        return True
    return False


def _freeze_imports() -> None:
    """Move what the imports made (modules, classes, functions: alive until the process ends) out of the garbage
    collector's sight. The interpreter's end collects several times over every object; over these that took
    0.1 s of CPU, 0.5-0.7 s on a loaded machine, most of the time ``serve`` took to exit on SIGTERM (its own stop
    takes ~10 ms), and 0.008 s once frozen."""
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``iii-channel`` console script; returns the exit status. Paths are checked before
    connecting, so a missing file fails at once (one line on stderr, status 1).

    Example:
        >>> main(["send", "/nonexistent/x.bin", "--to", "files::receive", "--engine", "ws://127.0.0.1:49134"])
        1
    """
    if argv is None:  # the process is this command's (its console script): see _freeze_imports
        _freeze_imports()
    if _closed(sys.stderr):
        _stderr_to_null()
    try:
        with _printable_last_resort():
            return _command(argv)
    finally:
        # the last lines appear when stderr is read; a stderr nobody reads holds the exit up no more than this
        drain_all(EXIT_WAIT_S)


def _command(argv: list[str] | None) -> int:
    """:func:`main` once its process is set up: the arguments checked, then the command run; its exit status."""
    parser = build_parser()
    args = parse_args(parser, argv)
    option, function_id = ("--to", args.to) if args.command == "send" else ("--function", args.function)
    if not function_id.strip():
        got = "an empty one" if not function_id else f"only whitespace, {function_id!r}"
        parser.error(f"{option}: a function id is required (got {got})")  # exits with status 2
    try:
        check_url(_engine(args))
    except (TypeError, ValueError) as exc:
        parser.error(f"--engine: {exc}")  # exits with status 2
    # A closed stream (`<&-`, `>&-`) is None in Python: send crashed on it with a traceback, serve started and then
    # failed every transfer. Said before connecting, as a usage error (status 2).
    if args.command == "send" and args.file == "-" and _closed(sys.stdin):
        parser.error("send -: stdin is closed, there is nothing to send (give a file, or redirect stdin)")
    if args.command == "send" and _closed(sys.stdout):
        # print() to a closed stdout does nothing: the send exited 0 with its receipt lost without a word
        parser.error("send: stdout is closed, the receipt cannot be written there (redirect it to /dev/null to "
                     "drop it)")
    if args.command == "serve" and args.out == "-" and _closed(sys.stdout):
        parser.error("serve --out -: stdout is closed, received bytes cannot be written there (give a directory "
                     "or a file, or redirect stdout)")
    runner = _send if args.command == "send" else _serve
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        # serve ends on SIGINT itself (exit 0); an interrupted send says so, in one line like every failure.
        _say(f"iii-channel: {args.command}: interrupted")
        drain_all(EXIT_WAIT_S)  # the process may end by SIGINT next, with no exit hooks: its line goes out first
        return exit_interrupted(own_process=argv is None)
    except _Refused as exc:
        return _fail(str(exc))
    except (OSError, ConnectionError) as exc:
        return _fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
