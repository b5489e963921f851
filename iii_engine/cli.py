"""``iii-engine [--host H] [--port P] [--config FILE] [--stream-store URL] [--log-level L] [--log-format F]
[--allow-degraded] [--event-loop asyncio|uvloop]`` (``--version``, ``--help``; ``iii-engine
logs|traces|metrics|health`` read a running engine).

Prints ``iii engine listening on ws://host:port`` on stdout once it accepts workers (tests wait for that line)
and stops cleanly on SIGINT/SIGTERM/SIGHUP.

When it cannot start it prints one line ``iii-engine: <why>`` on stderr and exits with 2 for a usage error (a bad
flag; a bad configuration file, an unknown module class or a setting its module refuses included, with the closest
known name when there is one) or 1 for a start-up failure (a port taken, a store unreachable, a module not
implemented here); nothing it had started is left running. ``--allow-degraded`` starts without a configured module
that cannot start, a misconfigured one included (logged as not available).
Log records go to stderr, as text for people (``--log-format text``, the default) or one JSON object per line for
machines (``--log-format json``); logger names are module paths.
``--event-loop uvloop`` runs the engine on uvloop (the ``uvloop`` extra; without it the start stops with one line
naming the extra); the loop in use is logged at INFO (``event loop: uvloop.Loop``).
Log records of a failed start-up below WARNING are dropped (shown with ``--log-level DEBUG``), so the reason is not
buried under "listening" lines of listeners already closed again.

Example:
    >>> parse_args(["--port", "0"]).port
    0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from logging.handlers import MemoryHandler

from iii._cli import exit_interrupted, whole_number
from iii_streams.messages import OneLineParser, mask_passwords
from iii_streams.urls import check_scheme

from .allocator import tune_allocator
from .closing import START_NOTICE
from .config import DEFAULT_HOST, DEFAULT_PORT, MAX_PORT, ConfigError, EngineConfig, load_config
from .engine import Engine, port_taken
from .event_loop import DEFAULT_EVENT_LOOP, EVENT_LOOPS, EventLoopUnavailable
from .event_loop import run as run_on_loop
from .gc_policy import tune_gc
from .inspect_cli import COMMANDS as INSPECT_COMMANDS
from .inspect_cli import main as inspect_main
from .modules.base import EngineStartError, ModuleSpec, ModuleStartError
from .modules.catalogue import CATALOGUE, ModuleUnavailable, default_specs
from .settings import closest_key

PROG = "iii-engine"
READY_PREFIX = "iii engine listening on "
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Log records held back while the engine starts (past this many they are written out as they come).
STARTUP_LOG_RECORDS = 1000

# The inspection subcommands are dispatched before this parser runs (their flags are their own), so its --help
# names them here.
INSPECT_EPILOG = """\
commands that read a running engine (each has its own --help):
  logs      the latest log entries of its workers (--follow for new ones)
  traces    a trace as a tree with durations (--list: the latest root spans)
  metrics   the metrics its workers reported
  health    the observability module's health check (exit 1 unless healthy)"""

_log = logging.getLogger(__name__)


def _config_path(text: str) -> str:
    """``--config``'s file name: an empty one is refused (it started the engine on the default configuration, where
    a script's unset variable was meant to name a file)."""
    if not text:
        raise argparse.ArgumentTypeError("the file name is empty")
    return text


def _port(text: str) -> int:
    return whole_number(text, 0, MAX_PORT, f"must be an integer between 0 and {MAX_PORT}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (a usage error prints one line and exits with status 2)."""
    parser = OneLineParser(prog=PROG, description="Run the embedded iii engine.", epilog=INSPECT_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=None, help=f"interface to bind (default {DEFAULT_HOST}; "
                                                      "use 0.0.0.0 for all interfaces)")
    parser.add_argument("--port", type=_port, default=None, help=f"worker port (default {DEFAULT_PORT}; 0 = any)")
    parser.add_argument("--config", default=None, type=_config_path, help="production-format YAML configuration file")
    parser.add_argument("--stream-store", default=None, metavar="URL", type=_stream_url,
                        help="the stream module's own store: memory://, redis://…, sqlite+aiosqlite:///…, "
                             "postgresql+asyncpg://… (default: the configured adapter, in memory)")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                        help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    parser.add_argument("--log-format", default="text", choices=LOG_FORMATS,
                        help="text: one readable line per record (for people, the default); json: one JSON object "
                             "per line with time, level, logger, message (for log collectors)")
    parser.add_argument("--allow-degraded", action="store_true", default=None,
                        help="start even when a configured module cannot (it is logged as not available); "
                             "without it such a module stops the start-up")
    parser.add_argument("--event-loop", default=None, choices=EVENT_LOOPS,
                        help=f"the asyncio event loop to run on: {' or '.join(EVENT_LOOPS)} (default: the config "
                             f"file's event_loop, else {DEFAULT_EVENT_LOOP}; uvloop needs the uvloop extra)")
    return parser.parse_args(argv)


def _stream_url(url: str) -> str:
    """A ``--stream-store`` whose scheme no store serves is a usage error naming the flag (it was found only at the
    stream module's start, named as the config path ``modules[0].config.store_url`` the flag becomes)."""
    try:
        check_scheme(url)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(mask_passwords(str(exc))) from None
    return url


def with_stream_store(config: EngineConfig, url: str) -> EngineConfig:
    """``config`` with the stream module's ``store_url`` set to ``url`` (the module is added if missing).

    Example:
        >>> cfg = with_stream_store(EngineConfig(), "memory://")
        >>> [m.config for m in cfg.modules or [] if m.class_name == "modules::stream::StreamModule"]
        [{'store_url': 'memory://'}]
    """
    name = "modules::stream::StreamModule"
    specs = list(config.modules) if config.modules is not None else default_specs()
    if not any(spec.class_name == name for spec in specs):
        specs.append(ModuleSpec(name))
    specs = [ModuleSpec(s.class_name, {**s.config, "store_url": url}) if s.class_name == name else s for s in specs]
    return config.with_overrides(modules=specs)


async def run(config: EngineConfig, on_started: Callable[[], None] | None = None) -> None:
    """Run an engine until SIGINT/SIGTERM/SIGHUP; ``on_started`` is called once it accepts workers.

    Raises :class:`~iii_engine.modules.base.EngineStartError` when it cannot start (nothing is left running).
    """
    # an engine process owns its allocator: keep frames near the size limit from leaving memory behind
    tune_allocator()
    engine = Engine(config=config)
    loop = asyncio.get_running_loop()
    _log.info("event loop: %s.%s", type(loop).__module__, type(loop).__qualname__)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
        # Its default killed the engine on the spot (status 129: no stop, nothing flushed, workers cut) when its
        # terminal closed or someone sent it the usual "reload" signal; there is no reload, so it stops cleanly.
        # Ignored when the engine started (nohup), it stays ignored: the engine outlives its terminal, as asked.
        loop.add_signal_handler(hangup, _hung_up, stop)
    if not await _started_unless_stopped(engine, stop):
        return
    tune_gc()  # the process is the engine's: its start-up objects never become garbage (iii_engine.gc_policy)
    try:
        if on_started is not None:
            on_started()
        print(f"{READY_PREFIX}{engine.url}", flush=True)
        await stop.wait()
    finally:
        await engine.stop()


def _hung_up(stop: asyncio.Event) -> None:
    _log.warning("SIGHUP: stopping (this engine does not reload its configuration: start it again to apply a new "
                 "one)")
    stop.set()


async def _started_unless_stopped(engine: Engine, stop: asyncio.Event) -> bool:
    """Start ``engine``; False when ``stop`` was set first (the engine then stopped, its start ended by the stop).

    A signal during the start ends it rather than waiting for it: a module start waiting on a silent peer (a store
    that never answers its open) held a SIGTERM for as long as it waited, for good if it never ended."""
    starting = asyncio.ensure_future(engine.start())
    signalled = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this run cancelled: nothing may be left starting
        await _stop_during_start(engine, starting)
        raise
    finally:
        signalled.cancel()
    if not starting.done():
        await _stop_during_start(engine, starting)
        return False
    starting.result()  # EngineStartError when it could not start
    return True


async def _stop_during_start(engine: Engine, starting: asyncio.Future[None]) -> None:
    """Stop ``engine`` while ``starting`` runs: the stop ends the start (``Engine.stop`` gives the module start under
    way its bound, then cancels it), whose "stopped during its start" error is expected here."""
    await engine.stop()
    with contextlib.suppress(EngineStartError):
        await starting


def start_failure(exc: EngineStartError, config: EngineConfig | None = None) -> tuple[int, str]:
    """The exit status and the line for an engine that could not start.

    A module entry the configuration got wrong (an unknown class, a setting its module refuses) is a usage error
    like a bad file, status 2, with the closest name it may have meant (``--allow-degraded`` would only hide the
    typo); a module that failed to start at run time (store unreachable, port taken, not implemented here) is
    status 1, with the hint that the engine can start without it; when its port is taken and ``config`` names no
    port for it, with the hint that ``--port 0`` puts it on a free one.

    Example:
        >>> bad_key = ConfigError("unknown key 'prot' (allowed: host, port)", "modules[0].config")
        >>> failure = ModuleStartError("modules::api::RestApiModule", bad_key)
        >>> failure.__cause__ = bad_key  # as the engine raises it
        >>> print(*start_failure(failure))
        2 module modules::api::RestApiModule: modules[0].config: unknown key 'prot' (did you mean 'port'? allowed: \
host, port)
        >>> print(*start_failure(ModuleStartError("modules::stream::StreamModule", "Redis unreachable")))
        1 module modules::stream::StreamModule cannot start: Redis unreachable (to start without it: --allow-degraded)
    """
    if not isinstance(exc, ModuleStartError):
        return 1, str(exc)
    cause = exc.__cause__
    if isinstance(cause, ModuleUnavailable) and exc.module not in CATALOGUE:
        hint = "" if "did you mean" in exc.reason else f" (known: {', '.join(sorted(CATALOGUE))})"
        return 2, f"{exc.reason}{hint}"
    if isinstance(cause, ConfigError):
        return 2, f"module {exc.module}: {_with_closest_key(exc.reason)}"
    hint = "to start without it: --allow-degraded"
    if config is not None and config.port != 0 and port_taken(exc) and not _names_port(config, exc.module):
        hint += "; or --port 0: the engine and every module whose config names no port listen on free ports"
    return 1, f"{exc} ({hint})"


def _names_port(config: EngineConfig, module: str) -> bool:
    """Whether ``config`` gives ``module`` a port of its own (``--port 0`` moves only the others)."""
    specs = config.modules if config.modules is not None else default_specs()
    return any(spec.class_name == module and "port" in spec.config for spec in specs)


_UNKNOWN_KEY = re.compile(r"unknown key '(?P<key>[^']*)' \(allowed: (?P<allowed>[^)]*)\)")


def _with_closest_key(reason: str) -> str:
    """``reason`` with the allowed key closest to an unknown one named before the list of every allowed key."""
    found = _UNKNOWN_KEY.search(reason)
    if found is None:
        return reason
    near = closest_key(found["key"], found["allowed"].split(", "))
    if near is None:
        return reason
    at = found.start("allowed") - len("allowed: ")
    return f"{reason[:at]}did you mean {near!r}? {reason[at:]}"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (UTC, ISO 8601), ``level``, ``logger`` (the module path
    that logged it), ``message``, and ``exception`` when there is one.

    Example:
        >>> record = logging.LogRecord("iii_engine.engine", logging.INFO, __file__, 1, "up on %s", ("x",), None)
        >>> record.created = 0.0
        >>> JsonLogFormatter().format(record)
        '{"time": "1970-01-01T00:00:00.000Z", "level": "INFO", "logger": "iii_engine.engine", "message": "up on x"}'
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (a multi-line message or traceback stays inside one string)."""
        moment = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, str] = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _HeldLog(MemoryHandler):
    """Holds records back, except a notice that the start is waiting (:data:`~iii_engine.closing.START_NOTICE`):
    held, it showed only once the wait was over, and a start waiting on a silent store left the terminal silent."""

    def emit(self, record: logging.LogRecord) -> None:
        """Hold ``record``, or write it out now if it is such a notice."""
        if getattr(record, START_NOTICE, False) and self.target is not None:
            self.target.handle(record)
        else:
            super().emit(record)


class _StartupLog:
    """Holds log records back while the engine starts: written out once it runs, mostly dropped if it fails."""

    def __init__(self, level: str, log_format: str = "text") -> None:
        self.level = logging.getLevelName(level)
        self.output = logging.StreamHandler(sys.stderr)
        self.output.setFormatter(JsonLogFormatter() if log_format == "json" else logging.Formatter(TEXT_LOG_FORMAT))
        self.held = _HeldLog(STARTUP_LOG_RECORDS, flushLevel=logging.CRITICAL + 1, target=self.output)
        root, alembic = logging.getLogger(), logging.getLogger("alembic")
        self._before = (root.level, alembic.level)  # given back by failed(): main() may run in a process that goes on
        root.setLevel(self.level)
        root.addHandler(self.held)
        if self.level > logging.DEBUG:
            alembic.setLevel(logging.WARNING)  # plugin set-up chatter on every import

    def started(self) -> None:
        """Write out what was held and log directly from now on."""
        root = logging.getLogger()
        root.removeHandler(self.held)
        self.held.flush()
        root.addHandler(self.output)

    def failed(self) -> None:
        """Write out only the warnings and errors of the failed start-up (everything at DEBUG); the levels it set go
        back to what they were (a configuration refused in a process that runs on, a test's, left every engine
        logger at INFO)."""
        root = logging.getLogger()
        root.removeHandler(self.held)
        root.setLevel(self._before[0])
        logging.getLogger("alembic").setLevel(self._before[1])
        keep = logging.DEBUG if self.level <= logging.DEBUG else logging.WARNING
        for record in self.held.buffer:
            if record.levelno >= keep:
                self.output.handle(record)
        self.held.buffer.clear()


def one_line(text: str) -> str:
    r"""``text`` with its line breaks and other control characters escaped, so a failure stays the one line it is
    promised to be (a value from the environment may hold a newline).

    Example:
        >>> print(one_line("cannot listen on 127.0.0.1\nport: 1:49575"))
        cannot listen on 127.0.0.1\nport: 1:49575
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in INSPECT_COMMANDS:  # logs / traces / metrics / health against a running engine
        return inspect_main(argv)
    args = parse_args(argv)
    log = _StartupLog(args.log_level, args.log_format)  # before the file is read: its warnings are start-up records
    try:
        config = load_config(args.config) if args.config is not None else EngineConfig()
        # flags are checked as the file is: a bad one (``--host ""``) is a usage error, not a traceback
        config = config.with_overrides(host=args.host, port=args.port, allow_degraded=args.allow_degraded,
                                       event_loop=args.event_loop)
        if args.stream_store:
            config = with_stream_store(config, args.stream_store)
    except ConfigError as exc:
        # a key of a module entry or of ``channels:`` gets its closest allowed name, as a module's settings do
        log.failed()
        print(f"{PROG}: {one_line(mask_passwords(_with_closest_key(str(exc))))}", file=sys.stderr)
        return 2
    engine_run = run(config, on_started=log.started)
    try:
        run_on_loop(engine_run, config.event_loop)
    except EventLoopUnavailable as exc:
        log.failed()
        print(f"{PROG}: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except EngineStartError as exc:
        log.failed()
        status, line = start_failure(exc, config)
        print(f"{PROG}: {one_line(line)}", file=sys.stderr)
        return status
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        log.failed()
        return exit_interrupted(own_process=argv is None)
    finally:
        # one the interrupt (or a missing event loop) stopped before it started: no "coroutine 'run' was never
        # awaited" warning after the one line (a Ctrl-C as the loop was being made printed it); a no-op once it ran
        engine_run.close()
    return 0
