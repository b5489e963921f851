"""Structured logger that emits OpenTelemetry log records correlated with the active span.

When telemetry is initialised (:func:`iii.telemetry.init_otel`), each call emits a log record carrying the
active span's trace and span ids (or the ones given to the constructor), so the engine can show logs next to
traces. Otherwise it falls back to the stdlib logger ``iii.logger``.

Example:
    >>> logger = Logger(service_name="billing")
    >>> logger.info("order processed", {"order_id": "ord_1", "amount": 49.99})
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import time
import uuid
from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING, Any, Final

from .protocol.codec import MAX_JSON_DEPTH, clip, escape_surrogates
from .warn_once import WarnOnce

if TYPE_CHECKING:
    from . import telemetry
else:  # `from . import` waits for the package's __init__ (tests/unit/test_concurrent_first_imports.py)
    telemetry = import_module(".telemetry", __package__)

__all__ = ["Logger", "is_initialized"]

log = logging.getLogger("iii.logger")
_said = WarnOnce(log)

# (severity text, OpenTelemetry SeverityNumber) per level.
_SEVERITY: Final[dict[str, tuple[str, int]]] = {
    "debug": ("DEBUG", 5),
    "info": ("INFO", 9),
    "warn": ("WARN", 13),
    "error": ("ERROR", 17),
}
_STDLIB_LEVEL: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def _hex_id(value: Any, digits: int, name: str) -> int | None:
    """``value`` (a trace id of at most 32 hex digits, a span id of 16; a UUID's text, a :class:`uuid.UUID` and an
    ``int``, OpenTelemetry's own form, too) as an int, or ``None`` when it is no such id (said once per process): an
    id past its digits made the engine refuse the whole frame of records it was in (one bad ``Logger`` lost 99 of 100
    records of a batch, with nothing said), and one that was no hex at all sent the record to stdlib ``logging``.
    Never raises.

    Example:
        >>> _hex_id("000000000000000000000000000000ff", 32, "trace_id"), _hex_id("ab" * 20, 32, "trace_id")
        (255, None)
        >>> _hex_id("00000000-0000-0000-0000-0000000000ff", 32, "trace_id"), _hex_id(255, 16, "span_id")
        (255, 255)
    """
    if value is None or (isinstance(value, str) and not value):
        return None
    number: int | None = None
    if isinstance(value, uuid.UUID) and digits == 32:
        number = value.int
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.replace("-", "") if _UUID_TEXT.fullmatch(value) else value
        if _HEX.fullmatch(text) and len(text) <= digits:
            number = int(text, 16)
    if number is not None and 0 <= number < 1 << (4 * digits):
        return number or None
    try:
        shown = clip(value, 80)
    except Exception:  # (clip names what it cannot show by its type; this is for anything else)
        shown = f"<{type(value).__name__}>"
    _said(f"iii.logger.{name}", "Logger: %s %s is not %d hex digits; records are sent without it (the active "
          "span's id is used, if any)", name, shown, digits)
    return None


_HEX: Final = re.compile(r"[0-9a-fA-F]+")
_UUID_TEXT: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_initialized() -> bool:
    """Whether OpenTelemetry is set up, i.e. whether logs are exported rather than sent to ``logging``."""
    return telemetry.is_initialized()


@cache
def _log_record_takes_context() -> bool:
    # opentelemetry-api 1.35 replaced trace_id/span_id/trace_flags on LogRecord with a context argument.
    from opentelemetry._logs import LogRecord

    return "context" in inspect.signature(LogRecord.__init__).parameters


# Levels of OTLP-JSON around a record's attribute value, counting its own AnyValue object: the request object,
# resourceLogs, a ResourceLogs, scopeLogs, a ScopeLogs, logRecords, the LogRecord, attributes, the KeyValue, the
# AnyValue (iii/telemetry_exporters.py serialize_logs).
_ENVELOPE_LEVELS: Final = 10
# Levels one nested container of ``data`` adds: a dict is AnyValue > kvlistValue > values > KeyValue > AnyValue (4),
# a list AnyValue > arrayValue > values > AnyValue (3); the larger one bounds both.
_LEVELS_PER_DATA_LEVEL: Final = 4
# The deepest nesting kept: past it the value is text, so any record's JSON stays within the wire's MAX_JSON_DEPTH
# (128). It was 32, and records of 30 to 32 levels were dropped by the exporter whole, with their export batch.
_MAX_DEPTH: Final = (MAX_JSON_DEPTH - _ENVELOPE_LEVELS) // _LEVELS_PER_DATA_LEVEL
_INT64: Final = (-(2**63), 2**63 - 1)


def _attribute_value(value: Any, depth: int = 0, ancestors: frozenset[int] = frozenset()) -> Any:
    """``value`` as an OpenTelemetry attribute value: nested JSON-like data is kept (a set as a sorted list where
    its members compare), bytes stay bytes (OTLP's ``bytesValue``), anything else is its ``str()`` (a datetime,
    UUID, Decimal, Enum: its text, not JSON).

    What JSON or OTLP cannot carry is turned into text here, because the record would otherwise be lost whole (with
    the rest of its export batch): a non-finite float (not JSON), an integer beyond int64 (refused by the engine),
    a container that holds itself, nesting past ``_MAX_DEPTH`` levels (29: the most whose OTLP-JSON, 4 levels each
    inside 10 of the record's envelope, fits the wire's 128), or a lone surrogate in a string (:func:`_text`).

    Example:
        >>> _attribute_value({"ratio": float("nan"), "big": 2**64, "ok": [1, "a"]})
        {'ratio': 'NaN', 'big': '18446744073709551616', 'ok': [1, 'a']}
        >>> import datetime, decimal
        >>> _attribute_value({"at": datetime.date(2026, 12, 6), "d": decimal.Decimal("1.50"), "s": {3, 1}})
        {'at': '2026-12-06', 'd': '1.50', 's': [1, 3]}
        >>> _attribute_value([bytearray(b"ab"), memoryview(b"c")])
        [b'ab', b'c']
        >>> _MAX_DEPTH
        29
    """
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return value
        try:
            return str(value)
        except ValueError:  # more digits than int -> str allows
            return f"<integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value)  # sent as OTLP's bytesValue, in hex, as the reference SDK sends it
        except (TypeError, ValueError):  # a released view
            return f"<{type(value).__name__} that could not be read>"
    if isinstance(value, dict | list | tuple | set | frozenset):
        if id(value) in ancestors:
            return "<cycle>"
        if depth >= _MAX_DEPTH:
            return f"<nested deeper than {_MAX_DEPTH} levels>"
        inner = ancestors | {id(value)}
        if isinstance(value, dict):
            return {_body(key): _attribute_value(item, depth + 1, inner) for key, item in value.items()}
        if isinstance(value, set | frozenset):
            value = _in_order(value)
        return [_attribute_value(item, depth + 1, inner) for item in value]
    # Any other value (datetime, UUID, Decimal, Enum, ...) as its str(), as OpenTelemetry's own attribute
    # cleaning makes it: it was JSON text before, quotes included ('"2026-12-06 17:54:15"').
    try:
        return _text(str(value))
    except Exception:  # (its own __str__ may raise anything, RecursionError included: never the caller's problem)
        return "[unserializable]"


def _in_order(members: set[Any] | frozenset[Any]) -> list[Any]:
    """A set's members sorted where they compare (a set has no order of its own), else as iterated."""
    try:
        return sorted(members)
    except Exception:  # members of types that do not compare (or whose comparison raises)
        return list(members)


_text = escape_surrogates  # a record's text: its exporter cannot fail on it (a batch was lost for one before)


def _body(message: Any) -> str:
    """A record's body (or a ``data`` key): ``message`` as text now (:func:`_text`), so the record says what it was
    when logged and its exporter cannot fail on it; one whose ``str()`` raises is named by its type.

    Example:
        >>> from pathlib import PurePosixPath
        >>> _body(PurePosixPath(b"/tmp/r-\\xff".decode("utf-8", "surrogateescape")))
        '/tmp/r-\\\\udcff'
    """
    if not isinstance(message, str):
        try:
            message = str(message)
        except Exception as exc:  # a log call never raises into its caller
            return f"<{type(message).__name__} whose str() raised {type(exc).__name__}>"
    return _text(message)


class Logger:
    """Logger whose records carry the trace context.

    ``trace_id`` / ``span_id`` (hex) override the active span's ids; ``service_name`` becomes the
    ``service.name`` attribute of every record. ``data`` is attached as the ``log.data`` attribute.

    Example:
        >>> Logger().warn("retrying", {"attempt": 3})
    """

    def __init__(
        self,
        trace_id: str | None = None,
        service_name: str | None = None,
        span_id: str | None = None,
    ) -> None:
        self._trace_id = _hex_id(trace_id, 32, "trace_id")
        # any value is named by its text: a non-string one (service_name=123) sent the records to stdlib logging
        self._service_name = "" if not service_name else \
            service_name if isinstance(service_name, str) else _body(service_name)
        self._span_id = _hex_id(span_id, 16, "span_id")

    def info(self, message: str, data: Any = None) -> None:
        """Log at INFO (severity number 9).

        Example:
            >>> Logger().info("worker connected")
        """
        self._emit("info", message, data)

    def warn(self, message: str, data: Any = None) -> None:
        """Log at WARN (severity number 13).

        Example:
            >>> Logger().warn("slow call", {"ms": 1200})
        """
        self._emit("warn", message, data)

    def error(self, message: str, data: Any = None) -> None:
        """Log at ERROR (severity number 17).

        Example:
            >>> Logger().error("payment failed", {"code": "card_declined"})
        """
        self._emit("error", message, data)

    def debug(self, message: str, data: Any = None) -> None:
        """Log at DEBUG (severity number 5).

        Example:
            >>> Logger().debug("cache lookup", {"hit": False})
        """
        self._emit("debug", message, data)

    def _emit(self, level: str, message: str, data: Any) -> None:
        if self._emit_otel(level, message, data):
            return
        log.log(_STDLIB_LEVEL[level], "[%s] %s", self._service_name, message, extra={"data": data})

    def _emit_otel(self, level: str, message: str, data: Any) -> bool:
        otel_logger = telemetry.get_logger("iii.logger")
        if otel_logger is None:
            return False
        try:
            record = self._record(level, message, data)
            otel_logger.emit(record)
        except Exception:  # a log call must never raise into the handler; fall back to stdlib logging
            log.debug("emitting an OpenTelemetry log record failed", exc_info=True)
            return False
        return True

    def _record(self, level: str, message: str, data: Any) -> Any:
        from opentelemetry import trace
        from opentelemetry._logs import LogRecord, SeverityNumber

        severity_text, severity_number = _SEVERITY[level]
        attributes: dict[str, Any] = {"service.name": _text(self._service_name)}
        if data is not None:
            try:
                attributes["log.data"] = _attribute_value(data)
            except Exception as exc:  # a container whose iteration raises: the record goes, naming what it held
                attributes["log.data"] = f"<{type(data).__name__} that could not be read: {type(exc).__name__}>"

        active = trace.get_current_span().get_span_context()
        trace_id = self._trace_id or (active.trace_id if active.is_valid else 0)
        span_id = self._span_id or (active.span_id if active.is_valid else 0)
        flags = active.trace_flags if active.is_valid else trace.TraceFlags(trace.TraceFlags.SAMPLED)
        now = time.time_ns()
        common: dict[str, Any] = {
            "timestamp": now,
            "observed_timestamp": now,
            "severity_text": severity_text,
            "severity_number": SeverityNumber(severity_number),
            "body": _body(message),
            "attributes": attributes,
        }
        if not _log_record_takes_context():
            return LogRecord(trace_id=trace_id, span_id=span_id, trace_flags=flags, **common)
        context = None
        if trace_id and span_id:
            span_context = trace.SpanContext(trace_id=trace_id, span_id=span_id, is_remote=True, trace_flags=flags)
            context = trace.set_span_in_context(trace.NonRecordingSpan(span_context))
        elif trace_id or span_id:
            # Only one id given: a context cannot hold half a span, so pass ids the old way.
            return LogRecord(trace_id=trace_id, span_id=span_id, trace_flags=flags, **common)
        return LogRecord(context=context, **common)
