"""``iii-engine logs | traces | metrics | health``: a worker's telemetry, read from a running engine.

These subcommands connect to an engine as a short-lived worker (our SDK, telemetry off so they leave no trace of
their own) and call the observability module's ``engine::*`` functions; they work against any engine that has
``modules::observability::OtelModule`` (ours or production)::

    iii-engine logs [--url URL] [--trace-id T] [--span-id S] [--level L] [--limit N] [--follow] [--json]
    iii-engine traces [TRACE_ID] [--list] [--name TEXT] [--service TEXT] [--include-internal] [--limit N] [--json]
    iii-engine metrics [--name METRIC] [--json]
    iii-engine health [--json]

``logs`` prints the latest entries oldest first; ``--level`` is a minimum (``warn`` shows warn and error);
``--follow`` then prints new entries as they arrive, through a ``log`` trigger (no polling), until Ctrl-C.
``traces`` prints one trace as an indented tree with durations (the latest trace when no id is given);
``traces --list`` prints the latest root spans. ``health`` exits with 1 unless the engine reports healthy.

Problems are one line on stderr and exit status 1: an engine that cannot be reached, an engine without the
observability module, an engine that keeps no spans, an answer of a shape the command does not read, an address that
does not connect and answer within ``--timeout`` seconds (default 5, from 0.001 to 86400): one deadline for the
connection, the handshake, the engine naming the worker and every call (``logs --follow`` then runs until Ctrl-C).
The close at the end waits at most :data:`CLOSE_WAIT_S` for the engine's answer. A URL's password or token is never
printed. A usage error exits with 2.

Example:
    >>> severity_min("warn")
    13
    >>> print(format_tree({"roots": [{"name": "a", "start_time_unix_nano": 0, "end_time_unix_nano": 2_500_000,
    ...     "status": "ok", "service_name": "svc", "children": [{"name": "b", "start_time_unix_nano": 0,
    ...     "end_time_unix_nano": 1_000_000, "status": "error", "service_name": "svc", "children": []}]}]}))
    a  2.50 ms  svc
      b  1.00 ms  svc  ERROR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import queue
import reprlib
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

from iii import InitOptions, ReconnectionConfig
from iii._cli import MAX_SECONDS, MIN_SECONDS, joined_timeouts, seconds, whole_number
from iii.connection import check_url, shown_url
from iii.errors import InvocationError
from iii.iii import III
from iii.telemetry_types import OtelConfig
from iii_streams.messages import OneLineParser

__all__ = ["COMMANDS", "format_log", "format_tree", "main", "severity_min"]

COMMANDS = ("logs", "traces", "metrics", "health")
OTEL_MODULE = "modules::observability::OtelModule"
DEFAULT_URL = "ws://127.0.0.1:49134"
# Minimum severity numbers of the OpenTelemetry levels (what engine::logs::list filters on).
LEVELS = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17}
# New log entries held while the terminal is slow; past this many they are dropped and the count is printed.
FOLLOW_BUFFER = 10_000
# Connection attempts before "cannot reach the engine" (about a second with the delays below).
CONNECT_RETRIES = 4
# The longest pause between a follower's attempts to reconnect (it tries for as long as it runs).
FOLLOW_MAX_DELAY_MS = 2000
# Keys of the entries a follower printed last, so those an engine lists again after a reconnect are not printed twice.
FOLLOW_SEEN = 20_000
# Entries a follower reads back after a reconnect (at least --limit): what was logged while it was away.
FOLLOW_CATCH_UP = 1000
#: Seconds ``--timeout`` gives the whole command: connection, handshake, the engine naming the worker and every
#: call, one deadline. Why: against an address that accepted TCP and never answered, a command waited for the SDK's
#: 30 s connect bound (two 10 s handshakes) and failed after 31 s.
DEFAULT_TIMEOUT_S = 5.0
#: Seconds the engine gets to answer the WebSocket close at the end. A read-only session loses nothing when its
#: socket is dropped instead; the SDK's 2 s made a command against a server that stopped answering end 2 s late.
CLOSE_WAIT_S = 0.25


class InspectError(Exception):
    """A problem reported as one line ``iii-engine <command>: <message>`` with exit status 1."""


def severity_min(level: str) -> int:
    """The minimum severity number of a level name (``trace``, ``debug``, ``info``, ``warn``, ``error``).

    Example:
        >>> severity_min("ERROR")
        17
    """
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(LEVELS)}, got {level!r}") from None


def _positive(text: str) -> int:
    return whole_number(text, 1, 2**63 - 1, "must be a positive integer")  # (at most an int64: the wire's integers)


def _engine_url(text: str) -> str:
    """``--url`` (or ``$III_URL``, its default) checked as the usage error it is: a bad one exited with 1, as an
    engine that cannot be reached does, where every other usage error exits with 2."""
    try:
        check_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` (starting with the subcommand); a usage error prints one line and exits with 2.

    Example:
        >>> args = parse_args(["logs", "--level", "warn", "--limit", "5"])
        >>> args.command, args.level, args.limit, args.timeout
        ('logs', 13, 5, 5.0)
    """
    parser = OneLineParser(prog="iii-engine", description="Read a running engine's telemetry.")
    commands = parser.add_subparsers(dest="command", required=True)
    url_help = f"the engine's worker URL (default $III_URL or {DEFAULT_URL})"

    def command(name: str, description: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, description=description, help=description)
        sub.add_argument("--url", type=_engine_url, default=os.environ.get("III_URL") or DEFAULT_URL, help=url_help)
        sub.add_argument("--json", action="store_true", help="print the engine's answer as JSON")
        sub.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                         help="one deadline for the connection, the handshake and the calls "
                              f"(default {DEFAULT_TIMEOUT_S:g}, from {MIN_SECONDS:g} to {MAX_SECONDS:g})")
        return sub

    logs = command("logs", "Stored log entries, oldest first.")
    logs.add_argument("--trace-id", help="only entries of this trace")
    logs.add_argument("--span-id", help="only entries of this span")
    logs.add_argument("--level", type=severity_min, help="minimum level: trace, debug, info, warn, error")
    logs.add_argument("--limit", type=_positive, default=100, help="the latest N entries (default 100)")
    logs.add_argument("--follow", "-f", action="store_true", help="then print new entries until Ctrl-C")
    traces = command("traces", "One trace as a tree (the latest one without TRACE_ID), or --list.")
    traces.add_argument("trace_id", nargs="?", help="the trace to show")
    traces.add_argument("--trace-id", dest="trace_id_option", help="the same as TRACE_ID")
    traces.add_argument("--list", action="store_true", help="list the latest root spans instead")
    traces.add_argument("--name", help="root spans whose name contains this text")
    traces.add_argument("--service", help="root spans of services whose name contains this text")
    traces.add_argument("--include-internal", action="store_true", help="also engine::* calls")
    traces.add_argument("--limit", type=_positive, default=20, help="how many root spans --list shows (default 20)")
    metrics = command("metrics", "Engine counters and the metrics workers reported.")
    metrics.add_argument("--name", help="only SDK metrics of this name")
    command("health", "The observability module's health (exit 1 unless healthy).")
    return parser.parse_args(joined_timeouts(argv))


# ------------------------------------------------------------------------------------------------- formatting


class UnreadableAnswer(ValueError):
    """A part of an engine's answer that is not of the shape a formatter reads (a hostile or broken server); the
    message names the part and shows it, shortened."""


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = 4


def _unreadable(where: str, value: Any) -> UnreadableAnswer:
    return UnreadableAnswer(f"{where} = {_SHORT.repr(value)}" if where else _SHORT.repr(value))


def _obj(value: Any, where: str = "", optional: bool = True) -> dict[str, Any]:
    """``value`` if it is a JSON object (``{}`` for a missing optional one), else :class:`UnreadableAnswer`."""
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise _unreadable(where, value)
    return value


def _objs(value: Any, where: str) -> list[dict[str, Any]]:
    """``value`` if it is a list of JSON objects (``[]`` when missing), else :class:`UnreadableAnswer`."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _unreadable(where, value)
    return value


def _int(value: Any) -> int:
    """An integer field read leniently (0 for what is none): a sort key or a filter, never a reason to fail."""
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def _time(ns: Any) -> str:
    try:
        return datetime.fromtimestamp(int(ns) / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


def format_log(entry: dict[str, Any]) -> str:
    """One log entry as one line: time, level, service, message, attributes, trace/span ids.

    Example:
        >>> format_log({"timestamp_unix_nano": 0, "severity_text": "WARN", "service_name": "svc", "body": "hi",
        ...             "attributes": {"k": 1}, "trace_id": "ab" * 16, "span_id": None})
        '1970-01-01T00:00:00.000Z WARN  svc  hi  {"k": 1}  trace=abababababababababababababababab'
    """
    level = str(entry.get("severity_text") or "-")
    text = (f"{_time(entry.get('timestamp_unix_nano'))} {level:<5} {entry.get('service_name') or '-'}  "
            f"{entry.get('body', '')}")
    if entry.get("attributes"):
        text += "  " + json.dumps(entry["attributes"], sort_keys=True, default=str)
    if entry.get("trace_id"):
        text += f"  trace={entry['trace_id']}"
    if entry.get("span_id"):
        text += f"  span={entry['span_id']}"
    return text


def _duration_ms(span: dict[str, Any]) -> float:
    try:
        return (int(span["end_time_unix_nano"]) - int(span["start_time_unix_nano"])) / 1e6
    except (KeyError, TypeError, ValueError, OverflowError):
        return 0.0


def format_tree(tree: dict[str, Any]) -> str:
    """The ``engine::traces::tree`` answer as an indented tree: name, duration, service, ``ERROR`` if failed;
    children in start order. :class:`UnreadableAnswer` names a part that is not of that shape.

    Example:
        >>> format_tree({"roots": [{"name": "a", "children": "x"}]})
        Traceback (most recent call last):
        ...
        iii_engine.inspect_cli.UnreadableAnswer: roots[0].children = 'x'
    """
    lines: list[str] = []

    def walk(span: dict[str, Any], depth: int, where: str) -> None:
        line = f"{'  ' * depth}{span.get('name', '?')}  {_duration_ms(span):.2f} ms  {span.get('service_name', '-')}"
        if span.get("status") == "error":
            line += "  ERROR" + (f": {span['status_description']}" if span.get("status_description") else "")
        lines.append(line)
        children = _objs(span.get("children"), f"{where}.children")
        # depth bound: a hostile trace could nest without end
        if depth < 256:
            for index, child in sorted(enumerate(children), key=lambda item: _int(item[1].get("start_time_unix_nano"))):
                walk(child, depth + 1, f"{where}.children[{index}]")

    for index, root in enumerate(_objs(_obj(tree, optional=False).get("roots"), "roots")):
        walk(root, 0, f"roots[{index}]")
    return "\n".join(lines)


def _format_span_row(span: dict[str, Any]) -> str:
    status = "ERROR" if span.get("status") == "error" else "ok"
    return (f"{span.get('trace_id', '-')}  {_time(span.get('start_time_unix_nano'))}  "
            f"{_duration_ms(span):>9.2f} ms  {status:<5}  {span.get('service_name', '-')}  {span.get('name', '?')}")


def _format_metrics(answer: dict[str, Any]) -> str:
    engine = _obj(answer.get("engine_metrics"), "engine_metrics")
    calls = _obj(engine.get("invocations"), "engine_metrics.invocations")
    perf = _obj(engine.get("performance"), "engine_metrics.performance")
    by_function = _obj(calls.get("by_function"), "engine_metrics.invocations.by_function")
    lines = [f"invocations: total {calls.get('total', 0)}  success {calls.get('success', 0)}  "
             f"error {calls.get('error', 0)}  deferred {calls.get('deferred', 0)}"]
    for function_id, count in sorted(by_function.items()):
        lines.append(f"  {function_id}: {count}")
    if perf:
        lines.append("durations: " + "  ".join(f"{key.removesuffix('_duration_ms')} {value:.2f} ms"
                                               for key, value in perf.items() if isinstance(value, int | float)))
    sdk = _objs(answer.get("sdk_metrics"), "sdk_metrics")
    lines.append(f"sdk metrics: {len(sdk)}")
    latest: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    for index, metric in enumerate(sdk):  # the store keeps every report; show the newest per name and service
        latest[(str(metric.get("name")), str(metric.get("service_name")))] = index, metric
    for (name, service), (index, metric) in sorted(latest.items()):
        points = _objs(metric.get("data_points"), f"sdk_metrics[{index}].data_points")
        values = [point.get("value", point.get("sum")) for point in points]
        shown = ", ".join(str(v) for v in values if v is not None) or "-"
        lines.append(f"  {name} ({metric.get('metric_type', '?')}, {service}): {shown}")
    return "\n".join(lines)


def _format_health(answer: dict[str, Any]) -> str:
    if not isinstance(answer.get("status", "?"), str):
        raise _unreadable("status", answer["status"])
    lines = [f"status: {answer.get('status', '?')}  (version {answer.get('version', '?')})"]
    for name, component in sorted(_obj(answer.get("components"), "components").items()):
        component = _obj(component, f"components.{name}", optional=False)
        details = component.get("details")
        shown = "  ".join(f"{k}={v}" for k, v in details.items()) if isinstance(details, dict) else ""
        lines.append(f"  {name}: {component.get('status', '?')}  {shown}".rstrip())
    return "\n".join(lines)


@contextmanager
def _reading(function_id: str) -> Iterator[None]:
    """An answer of ``function_id`` that is not of the shape read within becomes one :class:`InspectError` line."""
    try:
        yield
    except UnreadableAnswer as exc:
        raise InspectError(f"the engine's answer to {function_id} is not what this command reads: {exc}") from None


# ------------------------------------------------------------------------------------------------- engine calls


class _Engine:
    """A short-lived worker connection under one deadline (``--timeout``) that turns engine errors into
    :class:`InspectError` lines; the URL in them is masked (:func:`~iii.connection.shown_url`)."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_S, for_good: bool = False) -> None:
        """``for_good``: reconnect for as long as the command runs (``logs --follow``); the first connection is
        still bounded by ``timeout``."""
        self.url = shown_url(url)  # for messages: never a password or token
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        # (for good: a follower gave up on an engine away for more than about 1.5 s, then printed nothing for ever)
        reconnect = (ReconnectionConfig(initial_delay_ms=100, max_delay_ms=FOLLOW_MAX_DELAY_MS, jitter_factor=0.0,
                                        max_retries=-1) if for_good else
                     ReconnectionConfig(initial_delay_ms=100, max_delay_ms=400, jitter_factor=0.0,
                                        max_retries=CONNECT_RETRIES))
        options = InitOptions(
            worker_name=f"iii-engine-inspect-{os.getpid()}", enable_metrics_reporting=False,
            invocation_timeout_ms=max(1, round(timeout * 1000)), otel=OtelConfig(enabled=False),
            reconnection_config=reconnect)
        try:
            self.client: III = III(url, options)
        except ValueError as exc:
            raise InspectError(f"bad --url: {exc}") from None
        try:
            # register_worker's wait, with what is left of --timeout for its 30 s bound (none left: a wait of 0,
            # which fails unless connected). It also waits for the engine to name the worker, within the same bound.
            self.client.wait_until_connected(max(0.0, self._left()))
        except ConnectionError as exc:
            self.close()
            if self._left() > 0:  # refused, or not an engine: the SDK gave up, and its line (URL masked) says why
                raise InspectError(str(exc)) from None
            raise InspectError(self._not_connected()) from None
        except BaseException:
            self.close()
            raise

    def _left(self) -> float:
        return self.deadline - time.monotonic()

    def renew(self) -> None:
        """A new ``--timeout`` for the calls from now on (a follower's read after a reconnect)."""
        self.deadline = time.monotonic() + self.timeout

    @property
    def connected(self) -> bool:
        """Whether the connection is up and the engine named this worker (its registrations sent again)."""
        return self.client.get_connection_state() == "connected" and self.client.worker_id is not None

    def _within(self) -> str:
        return f"within {self.timeout:g} s (--timeout)"

    def _not_connected(self) -> str:
        """Why no connection was up at the deadline, from what the SDK's connection recorded."""
        lost, error = self.client.last_connection_loss, self.client.last_connection_error
        if lost is not None:
            return (f"{self.url}: the WebSocket handshake completed, but no connection stayed up {self._within()}; "
                    f"the last one was lost: {lost} (is it an iii engine's worker port?)")
        text = f"{self.url}: the connection and WebSocket handshake did not complete {self._within()}"
        if error:
            text += f"; last attempt: {error}"
        return text

    def _no_answer(self, function_id: str) -> str:
        text = f"{self.url}: {function_id} got no answer {self._within()}"
        lost = self.client.last_connection_loss
        if lost is not None:
            text += f"; the connection was lost and made again meanwhile (the last loss: {lost})"
        elif self.client.worker_id is None:
            text += ("; the server completed the WebSocket handshake but never named this worker (no "
                     "workerregistered): is it an iii engine's worker port?")
        return text

    def call(self, function_id: str, payload: dict[str, Any]) -> Any:
        left = self._left()
        if left <= 0:
            raise InspectError(self._no_answer(function_id))
        try:
            return self.client.trigger({"function_id": function_id, "payload": payload,
                                        "timeout_ms": max(1, math.ceil(left * 1000))})
        except InvocationError as exc:
            if exc.code == "function_not_found":
                raise InspectError(f"the engine at {self.url} has no observability module: add {OTEL_MODULE} "
                                   "to its config next to the modules you use (a modules: list replaces the "
                                   "defaults)") from None
            if exc.code == "memory_exporter_not_enabled":
                raise InspectError(f"the engine at {self.url} keeps no spans: set enabled: true and exporter: "
                                   f"memory (or both) in its {OTEL_MODULE} config") from None
            raise InspectError(f"{function_id} failed: {exc.code}: {exc.message}") from None
        except TimeoutError:
            raise InspectError(self._no_answer(function_id)) from None
        except ConnectionError as exc:
            raise InspectError(f"{function_id} failed: {exc}") from None

    def close(self) -> None:
        self.client.shutdown(close_timeout=CLOSE_WAIT_S)


def _print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str), file=out, flush=True)


def _show(function_id: str, answer: Any, fmt: Callable[[dict[str, Any]], str], as_json: bool, out: TextIO) -> None:
    with _reading(function_id):
        answer = _obj(answer, optional=False)
        text = None if as_json else fmt(answer)
    if text is None:
        _print_json(answer, out)
    else:
        print(text, file=out, flush=True)


def _log_key(entry: dict[str, Any]) -> str:
    # as JSON: any field may hold a list or an object, which a tuple key could not hash
    return json.dumps([entry.get("timestamp_unix_nano"), entry.get("span_id"), entry.get("severity_number"),
                       entry.get("body")], sort_keys=True, default=str)


def _matches(entry: dict[str, Any], args: argparse.Namespace) -> bool:
    return ((args.trace_id is None or entry.get("trace_id") == args.trace_id)
            and (args.span_id is None or entry.get("span_id") == args.span_id)
            and (args.level is None or _int(entry.get("severity_number")) >= args.level))


class _Printed:
    """Digests of the keys (:func:`_log_key`) of the last :data:`FOLLOW_SEEN` entries printed, oldest forgotten
    first: 16 bytes each, not the key (it holds the entry's body: 400 entries of 256 KB grew a follower by 105 MB)."""

    def __init__(self) -> None:
        self._keys: dict[bytes, None] = {}

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def __contains__(self, key: str) -> bool:
        return self._digest(key) in self._keys

    def add(self, key: str) -> None:
        self._keys[self._digest(key)] = None
        if len(self._keys) > FOLLOW_SEEN:
            del self._keys[next(iter(self._keys))]


def _read_logs(engine: _Engine, args: argparse.Namespace,
               limit: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``engine::logs::list`` with the command's filters (``limit``: other than ``--limit``): the answer and its
    entries, oldest first."""
    payload: dict[str, Any] = {"limit": args.limit if limit is None else limit}
    for key, value in (("trace_id", args.trace_id), ("span_id", args.span_id), ("severity_min", args.level)):
        if value is not None:
            payload[key] = value
    answer = engine.call("engine::logs::list", payload)
    with _reading("engine::logs::list"):
        answer = _obj(answer, optional=False)
        return answer, list(reversed(_objs(answer.get("logs"), "logs")))  # newest first on the wire


def _logs(engine: _Engine, args: argparse.Namespace, out: TextIO, stop: threading.Event) -> int:
    arrived: queue.Queue[dict[str, Any]] = queue.Queue(FOLLOW_BUFFER)
    dropped = 0
    if args.follow:
        # The trigger goes in before the history is read, so nothing logged in between is missed; entries seen
        # in both are printed once.
        def on_log(entry: Any) -> None:
            nonlocal dropped
            if isinstance(entry, dict):
                try:
                    arrived.put_nowait(entry)
                except queue.Full:
                    dropped += 1

        function_id = f"iii-engine-inspect::log::{uuid.uuid4().hex}"
        engine.client.register_function(function_id, on_log)
        engine.client.register_trigger({"type": "log", "function_id": function_id, "config": {"level": "all"}})
    answer, history = _read_logs(engine, args)
    if args.json and not args.follow:
        _print_json(answer, out)
        return 0
    printed = _Printed()

    def show(entries: list[dict[str, Any]]) -> int:
        """Print those of ``entries`` not printed yet; how many were printed before."""
        before = 0
        for entry in entries:
            key = _log_key(entry)
            if key in printed:
                before += 1
            else:
                printed.add(key)
                print(json.dumps(entry, default=str) if args.json else format_log(entry), file=out, flush=True)
        return before

    show(history)
    up = True
    while args.follow and not stop.is_set():
        if up != engine.connected:
            up = not up
            if not up:
                print(f"iii-engine logs: the connection to {engine.url} was lost; reconnecting", file=sys.stderr,
                      flush=True)
                continue
            # Back (the log trigger registered again with the replay): what the engine logged meanwhile, as far as
            # it still lists it (an engine that restarted lists only what it logged since).
            print(f"iii-engine logs: connected to {engine.url} again", file=sys.stderr, flush=True)
            engine.renew()
            limit = max(args.limit, FOLLOW_CATCH_UP)
            try:
                entries = _read_logs(engine, args, limit)[1]
                if not show(entries) and len(entries) >= limit:
                    # (an engine that restarted lists nothing older; one that ran on may list more than was read)
                    print(f"iii-engine logs: the catch-up read the last {limit} entries and none had been printed "
                          "before: older ones logged while disconnected may be missing", file=sys.stderr, flush=True)
            except InspectError as exc:
                print(f"iii-engine logs: entries logged while disconnected not read: {exc}", file=sys.stderr,
                      flush=True)
        try:
            entry = arrived.get(timeout=0.2)
        except queue.Empty:
            continue
        if dropped:
            print(f"... {dropped} entries dropped (output too slow)", file=out, flush=True)
            dropped = 0
        if _matches(entry, args):
            show([entry])
    return 0


def _traces(engine: _Engine, args: argparse.Namespace, out: TextIO) -> int:
    trace_id = args.trace_id or args.trace_id_option
    if args.list or trace_id is None:
        payload: dict[str, Any] = {"limit": args.limit if args.list else 1, "sort_order": "desc",
                                   "include_internal": args.include_internal}
        if args.name:
            payload["name"] = args.name
        if args.service:
            payload["service_name"] = args.service
        listed = engine.call("engine::traces::list", payload)
        with _reading("engine::traces::list"):
            listed = _obj(listed, optional=False)
            spans = _objs(listed.get("spans"), "spans")
            if spans and not args.list and not isinstance(spans[0].get("trace_id"), str):
                raise _unreadable("spans[0].trace_id", spans[0].get("trace_id"))
        if args.list:
            if args.json:
                _print_json(listed, out)
            for span in [] if args.json else reversed(spans):
                print(_format_span_row(span), file=out)
            return 0
        if not spans:
            print("no traces stored yet", file=out)
            return 0
        trace_id = str(spans[0]["trace_id"])
    tree = engine.call("engine::traces::tree", {"trace_id": trace_id})
    with _reading("engine::traces::tree"):
        tree = _obj(tree, optional=False)
        shown = None if args.json or not tree.get("roots") else format_tree(tree)
    if args.json:
        _print_json(tree, out)
    elif shown is None:
        raise InspectError(f"no spans stored for trace {trace_id}")
    else:
        print(f"trace {trace_id}", file=out)
        print(shown, file=out)
    return 0


def _run(args: argparse.Namespace, out: TextIO, stop: threading.Event) -> int:
    engine = _Engine(args.url, args.timeout, for_good=args.command == "logs" and args.follow)
    try:
        if args.command == "logs":
            return _logs(engine, args, out, stop)
        if args.command == "traces":
            return _traces(engine, args, out)
        if args.command == "metrics":
            answer = engine.call("engine::metrics::list", {"metric_name": args.name} if args.name else {})
            _show("engine::metrics::list", answer, _format_metrics, args.json, out)
            return 0
        answer = engine.call("engine::health::check", {})
        _show("engine::health::check", answer, _format_health, args.json, out)
        return 0 if answer.get("status") == "healthy" else 1
    finally:
        engine.close()


def main(argv: Sequence[str], out: TextIO | None = None) -> int:
    """Run one subcommand (``argv[0]`` is one of :data:`COMMANDS`); returns the exit status."""
    args = parse_args(argv)
    stop = threading.Event()
    sdk_log = logging.getLogger("iii")
    sdk_level = sdk_log.level
    # The SDK logs every failed connection attempt; the one line below says it all.
    sdk_log.setLevel(logging.CRITICAL)
    restore: list[tuple[int, Callable[..., Any] | int | None]] = []
    if args.command == "logs" and args.follow and threading.current_thread() is threading.main_thread():
        # SIGTERM ends --follow as Ctrl-C does: cleanly, with the worker connection closed
        restore = [(sig, signal.signal(sig, lambda *_: stop.set())) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        return _run(args, out or sys.stdout, stop)
    except InspectError as exc:
        print(f"iii-engine {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        sdk_log.setLevel(sdk_level)
        for sig, handler in restore:
            signal.signal(sig, handler)
