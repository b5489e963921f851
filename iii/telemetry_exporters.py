"""OpenTelemetry exporters that hand OTLP-JSON telemetry frames to a sink.

A frame is a 4-byte ASCII prefix followed by an OTLP-JSON body, as the engine expects on the worker socket
(docs/protocol.md#framing): ``OTLP`` for spans, ``MTRC`` for metrics, ``LOGS`` for logs. Trace and span ids are
lower-case
hex, as the engine stores them.

Ours (docs/protocol.md#sdk-improvements S12): there is no second WebSocket. :class:`SharedEngineConnection` only
buffers frames and
passes them to a sink, a ``Callable[[bytes], None]``; the SDK client's sink writes a binary frame on its own
worker socket. Exporters run on OpenTelemetry's background threads, so when the connection is started on an
event loop every frame is handed to the sink on that loop's thread.

Example:
    >>> frames: list[bytes] = []
    >>> connection = SharedEngineConnection(frames.append)
    >>> connection.send_threadsafe(PREFIX_SPANS, b'{"resourceSpans":[]}')
    >>> frames
    [b'OTLP{"resourceSpans":[]}']
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from .wire import dumps

__all__ = [
    "MAX_FRAME_BYTES",
    "PREFIX_LOGS",
    "PREFIX_METRICS",
    "PREFIX_SPANS",
    "EngineLogExporter",
    "EngineMetricsExporter",
    "EngineSpanExporter",
    "FrameSink",
    "SharedEngineConnection",
    "span_text",
    "span_text_pieces",
]

log = logging.getLogger(__name__)

FLUSH_TURN_FRAMES: Final = 64
"""Buffered frames a flush hands to the sink in one loop turn (the socket is written between turns)."""

DROP_WARNING_INTERVAL_S: Final = 10.0
"""Seconds between two warnings that the telemetry buffer dropped frames (each says how many since the last)."""

PREFIX_SPANS: Final = b"OTLP"
PREFIX_METRICS: Final = b"MTRC"
PREFIX_LOGS: Final = b"LOGS"

FrameSink = Callable[[bytes], None]


class SharedEngineConnection:
    """Where telemetry frames go: a sink, with a bounded buffer while there is none.

    The name is the reference SDK's (there it owned a second WebSocket); here it is a thin object over the
    sink. ``send_threadsafe`` may be called from any thread. Before a sink is attached, up to ``MAX_QUEUE``
    frames of at most ``MAX_QUEUE_BYTES`` in all are kept (oldest dropped) and delivered on :meth:`attach`.

    Example:
        >>> connection = SharedEngineConnection()
        >>> connection.send_threadsafe(PREFIX_LOGS, b"{}")
        >>> got: list[bytes] = []
        >>> connection.attach(got.append)
        >>> got
        [b'LOGS{}']
    """

    MAX_QUEUE: int = 1000
    #: A frame may be up to MAX_FRAME_BYTES: 1000 of them would be 4 GiB.
    MAX_QUEUE_BYTES: int = 16 * 1024 * 1024

    def __init__(self, sink: FrameSink | str | None = None) -> None:
        # A string is the reference's engine URL; we never open a socket for it, so it only leaves frames
        # buffered until the client attaches its sink.
        self.url = sink if isinstance(sink, str) else None
        self._sink: FrameSink | None = None if isinstance(sink, str) else sink
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffer: deque[bytes] = deque()  # bounded by _keep
        self._buffered_bytes = 0
        self._lock = threading.Lock()
        self._dropped = 0
        self._started = False
        self._flushing: object | None = None  # the token of the flush on its way to (or running on) the loop
        self._drops_told = float("-inf")
        self._drops_untold = 0

    @property
    def sink(self) -> FrameSink | None:
        """The current sink, ``None`` while frames are being buffered."""
        return self._sink

    @property
    def dropped_frames(self) -> int:
        """Frames the buffer dropped since this connection was made (ours): the oldest, past ``MAX_QUEUE`` frames
        or ``MAX_QUEUE_BYTES`` (the warning says it at most every :data:`DROP_WARNING_INTERVAL_S`). The client's
        is ``iii.telemetry.runtime().connection`` while telemetry is on.

        Example:
            >>> connection = SharedEngineConnection()
            >>> connection.MAX_QUEUE = 2
            >>> for _ in range(3):
            ...     connection.send_threadsafe(PREFIX_LOGS, b"{}")
            >>> connection.dropped_frames
            1
        """
        return self._dropped

    @property
    def engine_limit(self) -> int | None:
        """The message size limit of the engine the sink writes to, when the sink names it (the SDK client's does,
        as ``max_message_size``, once its engine named one); ``None`` otherwise.

        Example:
            >>> class Sink:
            ...     max_message_size = 65536
            ...     def __call__(self, frame: bytes) -> None: ...
            >>> SharedEngineConnection(Sink()).engine_limit, SharedEngineConnection(print).engine_limit
            (65536, None)
        """
        limit = getattr(self._sink, "max_message_size", None)
        return limit if isinstance(limit, int) and limit > 0 else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver frames on ``loop``'s thread from now on (the sink need not be thread-safe)."""
        self._loop = loop
        self._started = True
        self._flush()

    def attach(self, sink: FrameSink | None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Replace the sink; ``None`` detaches it and frames are buffered again.

        ``loop``: the sink's own loop, which frames are delivered on from now on. Sink and loop change
        together, so a handed-over sink is never called on the previous owner's (possibly stopped) loop.
        """
        with self._lock:
            self._sink = sink
            if loop is not None:
                self._loop = loop
                self._started = True
            self._flushing = None  # a flush on its way to the previous loop does nothing now (see _flush_turn)
        self._flush()

    def send_threadsafe(self, prefix: bytes, payload: bytes) -> None:
        """Hand one frame (``prefix + payload``) to the sink, or buffer it while there is none.

        From a thread other than the sink's loop the frame joins the buffer (its bounds hold), and one flush on the
        loop hands the buffered frames to the sink, :data:`FLUSH_TURN_FRAMES` a loop turn (the socket is written
        between turns): before, each frame was a callback of its own, held without bound while the loop was busy
        (617 waiting with 1 MB records, 4,000-12,000 with small ones, each a turn a call's answer waited behind)."""
        frame = prefix + payload
        with self._lock:
            if self._sink is None:
                self._keep([frame])
                return
            loop = self._loop
            if loop is not None and _running_loop() is not loop:
                self._keep([frame])
                token = self._flush_token()
                if token is None:
                    return  # a flush is on its way and takes this frame too
        if loop is None or _running_loop() is loop:
            self._call_sink([frame])
            return
        self._schedule(loop, token)

    def _flush_token(self) -> object | None:
        """A new flush's token (the lock held), or ``None`` when one is on its way already."""
        if self._flushing is not None:
            return None
        token = self._flushing = object()
        return token

    def _schedule(self, loop: asyncio.AbstractEventLoop, token: object) -> None:
        try:
            loop.call_soon_threadsafe(self._flush_turn, token)
        except RuntimeError:  # the loop is closed: the frames wait for the next sink and loop (attach)
            with self._lock:
                if self._flushing is token:
                    self._flushing = None
            log.debug("event loop closed: telemetry frames kept in the buffer")

    def _flush_turn(self, token: object) -> None:
        """One loop turn of the flush ``token``: up to :data:`FLUSH_TURN_FRAMES` frames to the sink, and the next
        turn scheduled while frames are left (handed over all at once, 1,000 frames overflowed the connection's
        share for telemetry in one turn: a burst of 2,000 small records from one thread stored a median 606)."""
        with self._lock:
            if self._flushing is not token:
                return  # superseded: the sink or loop changed since (attach)
            sink = self._sink
            if sink is None:
                self._flushing = None
                return
            buffer = self._buffer
            frames = [buffer.popleft() for _ in range(min(FLUSH_TURN_FRAMES, len(buffer)))]
            self._buffered_bytes -= sum(map(len, frames))
            if not buffer:
                self._flushing = None
        self._call_sink(frames)
        if self._flushing is token:
            asyncio.get_running_loop().call_soon(self._flush_turn, token)

    def flush_now(self) -> None:
        """On the sink's loop, hand every buffered frame to the sink at once (a client's shutdown, before its socket
        closes: handed turn by turn, frames reached the socket while it closed, and 388 of 900 were lost there
        uncounted); elsewhere, or with no sink, nothing.

        Example:
            >>> import asyncio
            >>> async def demo() -> list[bytes]:
            ...     got: list[bytes] = []
            ...     connection = SharedEngineConnection()
            ...     connection.send_threadsafe(PREFIX_LOGS, b"{}")  # no sink yet: kept
            ...     connection._sink, connection._loop = got.append, asyncio.get_running_loop()
            ...     connection.flush_now()
            ...     return got
            >>> asyncio.run(demo())
            [b'LOGS{}']
        """
        with self._lock:
            if self._sink is None or not self._buffer or _running_loop() is not self._loop:
                return
            frames = list(self._buffer)
            self._buffer.clear()
            self._buffered_bytes = 0
            self._flushing = None  # (a turn on its way finds nothing to do)
        self._call_sink(frames)

    def _keep(self, frames: list[bytes]) -> None:
        """Buffer ``frames`` (the lock held), dropping the oldest past ``MAX_QUEUE`` frames or ``MAX_QUEUE_BYTES``."""
        buffer = self._buffer
        for frame in frames:
            buffer.append(frame)
            self._buffered_bytes += len(frame)
        dropped = 0
        while len(buffer) > self.MAX_QUEUE or self._buffered_bytes > self.MAX_QUEUE_BYTES:
            self._buffered_bytes -= len(buffer.popleft())
            dropped += 1
        if dropped:
            self._dropped += dropped
            self._drops_untold += dropped
            now = time.monotonic()
            if now - self._drops_told >= DROP_WARNING_INTERVAL_S:  # (a line per drop flooded the log)
                self._drops_told, told, self._drops_untold = now, self._drops_untold, 0
                log.warning("telemetry buffer full (%d frames, %d bytes): dropped the %d oldest frame(s) since the "
                            "last such warning, %d in all", self.MAX_QUEUE, self.MAX_QUEUE_BYTES, told,
                            self._dropped)

    async def shutdown(self) -> None:
        """Detach the sink; later frames are buffered (and eventually dropped)."""
        self.attach(None)

    def _flush(self) -> None:
        """Hand the buffered frames to the sink: a flush on the sink's loop (see :meth:`_flush_turn`), or at once
        when there is no loop yet."""
        with self._lock:
            if self._sink is None or not self._buffer:
                return
            loop = self._loop
            if loop is None:
                frames = list(self._buffer)
                self._buffer.clear()
                self._buffered_bytes = 0
            else:
                token = self._flush_token()
                if token is None:
                    return
        if loop is None:
            self._call_sink(frames)
        elif _running_loop() is loop:
            loop.call_soon(self._flush_turn, token)
        else:
            self._schedule(loop, token)

    def _call_sink(self, frames: list[bytes]) -> None:
        sink = self._sink
        if sink is None:
            with self._lock:
                self._keep(frames)
            return
        for frame in frames:
            try:
                sink(frame)
            except Exception:  # telemetry must never break the worker
                log.warning("telemetry sink failed; frame dropped", exc_info=True)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# ---------------------------------------------------------------------------------------------- OTLP JSON


def _any_value(value: Any) -> dict[str, Any]:
    """OTLP ``AnyValue`` JSON for a Python attribute value."""
    if isinstance(value, bool):  # before int: bool is an int
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": value}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": value.hex()}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": _key_values(value)}}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_any_value(item) for item in value]}}
    return {"stringValue": str(value)}


def _key_values(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not attributes:
        return []
    return [{"key": str(key), "value": _any_value(value)} for key, value in attributes.items()]


def _hex_trace(trace_id: int) -> str:
    return format(trace_id, "032x")


def _hex_span(span_id: int) -> str:
    return format(span_id, "016x")


def _scope_json(scope: Any) -> dict[str, str]:
    return {"name": (scope.name if scope else "") or "", "version": (scope.version if scope else "") or ""}


def _group(
    items: Iterable[Any], resource_of: Callable[[Any], Any], scope_of: Callable[[Any], Any]
) -> list[tuple[Any, list[tuple[Any, list[Any]]]]]:
    """Group items by resource, then by instrumentation scope, keeping first-seen order."""
    resources: dict[int, Any] = {}
    scopes: dict[int, dict[tuple[str, str], tuple[Any, list[Any]]]] = defaultdict(dict)
    last_resource: Any = _NOTHING
    last_scope: Any = _NOTHING
    last_items: list[Any] = []
    for item in items:
        resource = resource_of(item)
        scope = scope_of(item)
        if resource is last_resource and scope is last_scope:  # a batch's items mostly share both objects
            last_items.append(item)
            continue
        resources.setdefault(id(resource), resource)
        key = ((scope.name if scope else "") or "", (scope.version if scope else "") or "")
        last_items = scopes[id(resource)].setdefault(key, (scope, []))[1]
        last_items.append(item)
        last_resource, last_scope = resource, scope
    return [(resource, list(scopes[rid].values())) for rid, resource in resources.items()]


_NOTHING: Final = object()
# Keyed by id: an Enum member's hash is a Python-level call; the entry keeps the member, so its id stays its own.
_ENUM_VALUES: dict[int, tuple[Any, int]] = {}


def _enum_value(member: Any) -> int:
    """``member.value`` of a span kind or status code, cached: an Enum's ``.value`` is a slow descriptor and every
    exported span reads two."""
    entry = _ENUM_VALUES.get(id(member))
    if entry is not None and entry[0] is member:
        return entry[1]
    value = int(member.value)
    if isinstance(member, enum.Enum):  # a member lives as long as its class; anything else would pile up here
        _ENUM_VALUES[id(member)] = (member, value)
    return value


def _span_json(span: Any) -> dict[str, Any]:
    """One span as an OTLP-JSON object; :func:`serialize_spans` writes the same text without building it."""
    context = span.context
    status = span.status
    events = span.events
    links = span.links
    body: dict[str, Any] = {
        "traceId": f"{context.trace_id:032x}",
        "spanId": f"{context.span_id:016x}",
        "name": span.name,
        # OTLP numbers kinds from 1 (INTERNAL); the Python API from 0. The reference sends the API value.
        "kind": _enum_value(span.kind) + 1,
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": _key_values(span.attributes),
        "events": _events_json(events) if events else [],
        "links": _links_json(links) if links else [],
        "status": {"code": _enum_value(status.status_code), "message": status.description or ""},
    }
    parent = span.parent
    if parent is not None:
        body["parentSpanId"] = f"{parent.span_id:016x}"
    return body


def _events_json(events: Iterable[Any]) -> list[dict[str, Any]]:
    return [
        {"name": event.name, "timeUnixNano": str(event.timestamp), "attributes": _key_values(event.attributes)}
        for event in events
    ]


def _links_json(links: Iterable[Any]) -> list[dict[str, Any]]:
    return [
        {
            "traceId": _hex_trace(link.context.trace_id),
            "spanId": _hex_span(link.context.span_id),
            "attributes": _key_values(link.attributes),
        }
        for link in links
    ]


# dumps(name) per span name: names repeat ("call <function id>"). Bounded in count (cleared when full) and in
# size: only str names (1, 1.0 and True are one key but three texts) of at most _NAME_CACHED_LEN characters.
_NAMES: dict[str, str] = {}
_NAMES_MAX: Final = 4096
_NAME_CACHED_LEN: Final = 256


def _json_name(name: Any) -> str:
    if type(name) is not str or len(name) > _NAME_CACHED_LEN:
        return dumps(name)
    text = _NAMES.get(name)
    if text is None:
        text = dumps(name)
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[name] = text
    return text


_EMPTY_STRING: Final = '""'


def span_text(span: Any) -> str:
    """One span's OTLP-JSON text, as :func:`serialize_spans` writes it into a batch: ``dumps(_span_json(span))``,
    written directly (issue 10: building the dicts cost more CPU than the rest of
    a handler span's life). Keys, their order and the compact separators are what dumps writes for the dict; every
    string that needs escaping (name, status message) and every non-empty list goes through dumps itself, so the
    text is the same byte for byte and the same values fail the same way.

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> span = TracerProvider().get_tracer("t").start_span("job")
        >>> span.end()
        >>> span_text(span).startswith('{"traceId":"')
        True
    """
    status = span.status
    attributes = span.attributes
    events = span.events
    links = span.links
    parent = span.parent
    name = span.name
    kind = span.kind
    start = span.start_time or 0
    end = span.end_time or 0
    head = tail = None
    if not (attributes or events or links):
        # The usual handler span: its middle from the two cached pieces (below), if both are known.
        if type(name) is str:
            cached = _heads.get((name, id(kind)))
            if cached is not None and cached[0] is kind:
                head = cached[1]
        cached = _tails.get(id(status))
        if cached is not None and cached[0] is status:
            tail = cached[1]
    try:
        trace_id, span_id = span.context[:2]  # a SpanContext is a tuple: (trace_id, span_id, ...)
        # Written here only when plain ints: the dict path writes str(time) inside a JSON string and format(id),
        # which an int subclass may override, and a str time would need escaping.
        if not type(trace_id) is type(span_id) is type(start) is type(end) is int:
            raise TypeError
        # int.to_bytes(...).hex() is format(..., "032x") for an id in range, in half the time; out of range it
        # raises, and the dict path below writes what format does.
        hex_trace = trace_id.to_bytes(16, "big").hex()
        hex_span = span_id.to_bytes(8, "big").hex()
        if parent is None:
            parent_text = "}"
        else:
            parent_id = parent.span_id
            if type(parent_id) is not int:
                raise TypeError
            parent_text = f',"parentSpanId":"{parent_id.to_bytes(8, "big").hex()}"}}'
        if head is not None and tail is not None:
            return (f'{{"traceId":"{hex_trace}","spanId":"{hex_span}",{head},"startTimeUnixNano":"{start}",'
                    f'"endTimeUnixNano":"{end}",{tail}{parent_text}')
        # Only str names are cached, so no other name (1, True, 1.0) finds one's text; an unhashable one raises.
        name_text = _NAMES.get(name)
    except (OverflowError, AttributeError, TypeError, ValueError):
        return dumps(_span_json(span))  # whatever the dict path makes of the span, written or raised
    description = status.description
    code = status.status_code
    text = (
        f'{{"traceId":"{hex_trace}","spanId":"{hex_span}","name":{name_text or _json_name(name)},'
        f'"kind":{_enum_value(kind) + 1},'
        f'"startTimeUnixNano":"{start}","endTimeUnixNano":"{end}",'
        f'"attributes":{dumps(_key_values(attributes)) if attributes else "[]"},'
        f'"events":{dumps(_events_json(events)) if events else "[]"},'
        f'"links":{dumps(_links_json(links)) if links else "[]"},'
        f'"status":{{"code":{_enum_value(code)},'
        f'"message":{dumps(description) if description else _EMPTY_STRING}}}{parent_text}'
    )
    if not (attributes or events or links):
        _remember_pieces(name, kind, status)
    return text


# The two middle pieces of the text of a span without attributes, events and links: the same for every span of one
# name and kind (``"name":...,"kind":N``) and of one status object (``"attributes":[],...,"status":{...}``). Kept
# for str names (as long as _NAMES keeps them) and for statuses without a description, by identity with the object
# kept (the OK status of handler spans is one object for all; an Enum's hash is a Python-level call). Cleared when
# full.
_heads: dict[tuple[str, int], tuple[Any, str]] = {}
_tails: dict[int, tuple[Any, str]] = {}
_PIECES_MAX: Final = 256


def _remember_pieces(name: Any, kind: Any, status: Any) -> None:
    """Cache the pieces :func:`span_text` reuses for spans of ``name``, ``kind`` and ``status`` (those it can)."""
    if type(name) is str and len(name) <= _NAME_CACHED_LEN:
        if len(_heads) >= _PIECES_MAX:
            _heads.clear()
        _heads[(name, id(kind))] = (kind, f'"name":{_json_name(name)},"kind":{_enum_value(kind) + 1}')
    if status.description is None:
        if len(_tails) >= _PIECES_MAX:
            _tails.clear()
        _tails[id(status)] = (status, f'"attributes":[],"events":[],"links":[],"status":{{"code":'
                                      f'{_enum_value(status.status_code)},"message":{_EMPTY_STRING}}}')


def span_text_pieces(name: Any, kind: Any, status: Any) -> tuple[str, str] | None:
    """The two cached middle pieces :func:`span_text` writes a span of ``name``, ``kind`` and ``status`` without
    attributes, events and links from, ``(head, tail)``:
    ``{"traceId":"<32 hex>","spanId":"<16 hex>",<head>,"startTimeUnixNano":"<int>","endTimeUnixNano":"<int>",<tail>``
    then ``}`` or ``,"parentSpanId":"<16 hex>"}``. ``None`` while not cached (that span's :func:`span_text` caches
    them). Ours (issue 10): a handler span's text is written from them and its traceparent's digits."""
    if type(name) is not str:
        return None
    head = _heads.get((name, id(kind)))
    tail = _tails.get(id(status))
    if head is None or tail is None or head[0] is not kind or tail[0] is not status:
        return None
    return head[1], tail[1]


def _source_of(span: Any, texts: tuple[Any, Any] | None) -> tuple[Any, Any]:
    """``(resource, instrumentation scope)`` of a batch item: a span's own, or ``texts`` for a span's text."""
    if type(span) is str:
        if texts is None:
            raise TypeError("a span's text in a batch whose exporter was told of no text source")
        return texts
    return span.resource, span.instrumentation_scope


def _one_source(spans: Sequence[Any], texts: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
    """The ``(resource, scope)`` every item has (the same objects), or ``None`` when they differ."""
    first = _source_of(spans[0], texts)
    resource, scope = first
    for span in spans:
        if type(span) is str:
            if texts is None or texts[0] is not resource or texts[1] is not scope:
                return None
        elif span.resource is not resource or span.instrumentation_scope is not scope:
            return None
    return first


_ONLY_STR: Final = frozenset({str})


def serialize_spans(spans: Sequence[Any], texts: tuple[Any, Any] | None = None) -> bytes:
    """OTLP-JSON ``ExportTraceServiceRequest`` for SDK ``ReadableSpan`` objects: the text ``dumps`` writes for
    ``{"resourceSpans": [{"resource": ..., "scopeSpans": [{"scope": ..., "spans": [_span_json(span), ...]}]}]}``.

    An item may also be a span's text already (:func:`span_text`, made when it ended); ``texts`` is then the
    ``(resource, instrumentation scope)`` those spans had (:meth:`EngineSpanExporter.take_texts`).
    """
    resource_spans: list[str] = []
    groups: Sequence[tuple[Any, Sequence[tuple[Any, Sequence[Any]]]]]
    # The usual batch of handler spans is all texts: told at C speed, so no item is looked at in Python (two passes
    # of a few Python-level steps per span otherwise).
    all_text = texts is not None and bool(spans) and {*map(type, spans)} == _ONLY_STR
    source = texts if all_text else _one_source(spans, texts) if spans else None
    if source is not None:  # the usual batch: every span from our tracer, in one resource and scope
        groups = [(source[0], [(source[1], spans)])]  # what _group returns then
    else:
        groups = _group(spans, lambda s: _source_of(s, texts)[0], lambda s: _source_of(s, texts)[1])
    for resource, scopes in groups:
        scope_spans = ",".join(
            f'{{"scope":{dumps(_scope_json(scope))},"spans":['
            f'{",".join(members if all_text else [s if type(s) is str else span_text(s) for s in members])}]}}'
            for scope, members in scopes
        )
        attributes = dumps(_key_values(resource.attributes if resource else None))
        resource_spans.append(f'{{"resource":{{"attributes":{attributes}}},"scopeSpans":[{scope_spans}]}}')
    return f'{{"resourceSpans":[{",".join(resource_spans)}]}}'.encode()


def _log_json(item: Any) -> dict[str, Any]:
    # SDK 1.39+ hands exporters ReadableLogRecord(log_record=...); older ones LogData(log_record=...).
    record = getattr(item, "log_record", item)
    severity = getattr(record, "severity_number", None)
    body = getattr(record, "body", None)
    out: dict[str, Any] = {
        "timeUnixNano": str(getattr(record, "timestamp", 0) or 0),
        "observedTimeUnixNano": str(getattr(record, "observed_timestamp", 0) or 0),
        "severityNumber": severity.value if severity is not None else 0,
        "severityText": getattr(record, "severity_text", "") or "",
        "body": {"stringValue": "" if body is None else str(body)},
        "attributes": _key_values(getattr(record, "attributes", None)),
    }
    trace_id = getattr(record, "trace_id", 0) or 0
    span_id = getattr(record, "span_id", 0) or 0
    # an id past its width (a record made by other code) is left out: the engine refuses the whole frame for one
    if trace_id and 0 < trace_id < 1 << 128:
        out["traceId"] = _hex_trace(trace_id)
    if span_id and 0 < span_id < 1 << 64:
        out["spanId"] = _hex_span(span_id)
    return out


def serialize_logs(batch: Sequence[Any]) -> bytes:
    """OTLP-JSON ``ExportLogsServiceRequest`` for SDK log records."""
    resource_logs = [
        {
            "resource": {"attributes": _key_values(getattr(resource, "attributes", None))},
            "scopeLogs": [
                {"scope": _scope_json(scope), "logRecords": [_log_json(item) for item in items]}
                for scope, items in scopes
            ],
        }
        for resource, scopes in _group(
            batch,
            lambda item: getattr(item, "resource", None),
            lambda item: getattr(item, "instrumentation_scope", None),
        )
    ]
    return dumps({"resourceLogs": resource_logs}).encode()


def _point_json(point: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attributes": _key_values(getattr(point, "attributes", None)),
        "startTimeUnixNano": str(getattr(point, "start_time_unix_nano", 0) or 0),
        "timeUnixNano": str(getattr(point, "time_unix_nano", 0) or 0),
    }
    if hasattr(point, "value"):
        value = point.value
        # int64 values are strings in OTLP JSON; doubles stay numbers.
        if isinstance(value, int) and not isinstance(value, bool):
            out["asInt"] = str(value)
        else:
            out["asDouble"] = float(value)
    elif hasattr(point, "bucket_counts"):
        out.update(
            count=str(point.count),
            sum=point.sum,
            bucketCounts=[str(count) for count in point.bucket_counts],
            explicitBounds=list(point.explicit_bounds),
            min=point.min,
            max=point.max,
        )
    elif hasattr(point, "scale"):
        out.update(
            count=str(point.count),
            sum=point.sum,
            scale=point.scale,
            zeroCount=str(point.zero_count),
            positive={"offset": point.positive.offset, "bucketCounts": [str(c) for c in point.positive.bucket_counts]},
            negative={"offset": point.negative.offset, "bucketCounts": [str(c) for c in point.negative.bucket_counts]},
            min=point.min,
            max=point.max,
        )
    return out


def _temporality(data: Any) -> int:
    temporality = getattr(data, "aggregation_temporality", None)
    if temporality is None:
        return 1  # DELTA
    return int(getattr(temporality, "value", temporality))


def _metric_json(metric: Any, points: list[dict[str, Any]]) -> dict[str, Any]:
    data = metric.data
    out: dict[str, Any] = {"name": metric.name, "description": metric.description or "", "unit": metric.unit or ""}
    kind = type(data).__name__
    if kind == "ExponentialHistogram":
        out["exponentialHistogram"] = {"dataPoints": points, "aggregationTemporality": _temporality(data)}
    elif kind == "Histogram":
        out["histogram"] = {"dataPoints": points, "aggregationTemporality": _temporality(data)}
    elif kind == "Sum":
        out["sum"] = {
            "dataPoints": points,
            "aggregationTemporality": _temporality(data),
            "isMonotonic": bool(getattr(data, "is_monotonic", False)),
        }
    else:
        out["gauge"] = {"dataPoints": points}
    return out


# One data point of a metric with what holds it (resource metrics, scope metrics, metric; ``None`` past an empty
# one): the pieces a metrics frame over the size limit is split into.
_MetricUnit = tuple[Any, Any, Any, "dict[str, Any] | None"]


def _metric_units(metrics_data: Any) -> list[_MetricUnit]:
    units: list[_MetricUnit] = []
    for rm in metrics_data.resource_metrics:
        if not rm.scope_metrics:
            units.append((rm, None, None, None))
        for sm in rm.scope_metrics:
            if not sm.metrics:
                units.append((rm, sm, None, None))
            for metric in sm.metrics:
                points = [_point_json(point) for point in metric.data.data_points]
                units.extend([(rm, sm, metric, point) for point in points] or [(rm, sm, metric, None)])
    return units


def _serialize_metric_units(units: Sequence[_MetricUnit]) -> bytes:
    """The request for ``units`` (in order, consecutive ones of one metric, scope or resource together)."""
    resources: list[tuple[Any, list[tuple[Any, list[tuple[Any, list[dict[str, Any]]]]]]]] = []
    for rm, sm, metric, point in units:
        if not resources or resources[-1][0] is not rm:
            resources.append((rm, []))
        scopes = resources[-1][1]
        if sm is None:
            continue
        if not scopes or scopes[-1][0] is not sm:
            scopes.append((sm, []))
        metrics = scopes[-1][1]
        if metric is None:
            continue
        if not metrics or metrics[-1][0] is not metric:
            metrics.append((metric, []))
        if point is not None:
            metrics[-1][1].append(point)
    resource_metrics = [
        {
            "resource": {"attributes": _key_values(rm.resource.attributes if rm.resource else None)},
            "scopeMetrics": [
                {"scope": _scope_json(sm.scope), "metrics": [_metric_json(m, points) for m, points in metrics]}
                for sm, metrics in scopes
            ],
        }
        for rm, scopes in resources
    ]
    return dumps({"resourceMetrics": resource_metrics}).encode()


def serialize_metrics(metrics_data: Any) -> bytes:
    """OTLP-JSON ``ExportMetricsServiceRequest`` for SDK ``MetricsData``."""
    return _serialize_metric_units(_metric_units(metrics_data))


# ---------------------------------------------------------------------------------------------- exporters

#: Largest telemetry frame sent (prefix included). The engine closes a worker's connection (1009) on a message over
#: its ``max_message_size`` (4 MiB by default): one frame of big spans or log records would cost the worker every
#: call in flight. An engine that names a smaller limit (ours, docs/protocol.md#message-size-extension) gets frames
#: under that one (:attr:`SharedEngineConnection.engine_limit`).
MAX_FRAME_BYTES: Final = 4 * 1024 * 1024


def _frame_limit(max_frame_bytes: int, connection: SharedEngineConnection) -> int:
    """The largest frame to send: ``max_frame_bytes``, or the engine's limit when it named a smaller one."""
    engine = connection.engine_limit
    return max_frame_bytes if engine is None else min(max_frame_bytes, engine)


def _writable(items: Sequence[Any], serialize_one: Callable[[Any], object], what: str) -> tuple[list[Any], int]:
    """``items`` without those ``serialize_one`` cannot write (any exception: a NaN, a lone surrogate, a name that
    is no string, a body whose ``str()`` raises), and how many were left out; one error line says so. Used once a
    whole batch could not be written, so that one such item does not take its batch down.

    Example:
        >>> _writable([1, "a", 2], lambda item: item + 0, "number")
        ([1, 2], 1)
    """
    kept: list[Any] = []
    first: Exception | None = None
    for item in items:
        try:
            serialize_one(item)
        except Exception as exc:  # (whatever the item's own code raises: a __str__ of a user's object)
            first = first or exc
            continue
        kept.append(item)
    dropped = len(items) - len(kept)
    log.error("%s export failed for %d of %d %s(s), dropped: no OTLP-JSON text for them: %r", what, dropped,
              len(items), what, first)
    return kept, dropped


def _send_split(connection: SharedEngineConnection, prefix: bytes, items: Sequence[Any], payload: bytes,
                serialize: Callable[[Sequence[Any]], bytes], limit: int, what: str) -> int:
    """Send ``payload`` (``serialize(items)``), split in halves while ``prefix`` and it are over ``limit`` bytes;
    an item over it on its own is dropped and logged. Returns how many were dropped."""
    if len(prefix) + len(payload) <= limit:
        connection.send_threadsafe(prefix, payload)
        return 0
    if len(items) == 1:
        log.error("%s export failed for one of %d bytes, dropped: over the %d-byte frame limit",
                  what, len(payload), limit)
        return 1
    half = len(items) // 2
    first, second = items[:half], items[half:]
    dropped = _send_split(connection, prefix, first, serialize(first), serialize, limit, what)
    return dropped + _send_split(connection, prefix, second, serialize(second), serialize, limit, what)


class EngineSpanExporter:
    """Span exporter writing ``OTLP`` frames to a :class:`SharedEngineConnection`.

    Example:
        >>> frames: list[bytes] = []
        >>> EngineSpanExporter(SharedEngineConnection(frames.append)).export([]).name
        'SUCCESS'
        >>> frames
        [b'OTLP{"resourceSpans":[]}']
    """

    #: Largest frame sent (prefix included): see :data:`MAX_FRAME_BYTES`.
    max_frame_bytes: int = MAX_FRAME_BYTES

    def __init__(self, connection: SharedEngineConnection) -> None:
        self._connection = connection
        # {"source": (resource, scope)} of the spans handed over as text, set once with dict.setdefault (atomic: no
        # lock a fork could leave held)
        self._texts: dict[str, tuple[Any, Any]] = {}
        self.unwritable = 0  # spans dropped from their batch's frame: no OTLP-JSON text could be written for them
        self.oversized = 0  # spans dropped: one alone made a frame over max_frame_bytes

    def take_texts(self, resource: Any, scope: Any) -> bool:
        """Whether spans of ``resource`` and ``scope`` may be handed to :meth:`export` as their :func:`span_text`
        instead of themselves (ours, used by :mod:`iii.light_span`): yes for the first source that asks (and
        again for it), no for any other, whose spans must come as spans.

        Why: a queued text is no object for the garbage collector to walk, a queued span is several (a batch
        holds up to 512), and written when it ended a span needs no reading back later.

        Example:
            >>> exporter = EngineSpanExporter(SharedEngineConnection())
            >>> exporter.take_texts("r", "s"), exporter.take_texts("r", "s"), exporter.take_texts("r", "other")
            (True, True, False)
        """
        first = self._texts.setdefault("source", (resource, scope))
        return first[0] is resource and first[1] is scope

    def export(self, spans: Sequence[Any]) -> Any:
        """Send the batch in one frame, or in several when one would be over :attr:`max_frame_bytes`;
        ``SpanExportResult`` (``FAILURE`` when a span was dropped)."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            items = spans
            try:
                payload = serialize_spans(items, self._texts.get("source"))
            except Exception:  # one span's: UnicodeEncodeError (a lone surrogate), a name's __str__ raising, ...
                items = self._writable(spans)
                if not items:
                    return SpanExportResult.FAILURE
                payload = serialize_spans(items, self._texts.get("source"))
            if self._send(items, payload) and items is spans:
                return SpanExportResult.SUCCESS
        except Exception:
            log.exception("span export failed")
        return SpanExportResult.FAILURE

    def _writable(self, spans: Sequence[Any]) -> list[Any]:
        """The batch without the spans that have no OTLP-JSON text (a NaN attribute, a lone surrogate, a name that
        is no string), each counted in :attr:`unwritable` and logged. Why: one such span used to take the whole
        batch (up to 512 other calls' spans) down with it."""
        texts = self._texts.get("source")
        kept, dropped = _writable(spans, lambda span: serialize_spans([span], texts), "span")
        self.unwritable += dropped
        return kept

    def _send(self, spans: Sequence[Any], payload: bytes) -> bool:
        """Send ``payload`` (the frame body of ``spans``) in frames of at most :attr:`max_frame_bytes`; a span over
        it alone is dropped (counted in :attr:`oversized`). ``False`` if one was."""
        source = self._texts.get("source")
        dropped = _send_split(self._connection, PREFIX_SPANS, spans, payload,
                              lambda part: serialize_spans(part, source),
                              _frame_limit(self.max_frame_bytes, self._connection), "span")
        self.oversized += dropped
        return not dropped

    def shutdown(self) -> None:
        """Nothing to release: the sink belongs to the client."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Frames are handed over at once, so there is nothing to flush."""
        return True


class EngineLogExporter:
    """Log exporter writing ``LOGS`` frames to a :class:`SharedEngineConnection`.

    Example:
        >>> frames: list[bytes] = []
        >>> EngineLogExporter(SharedEngineConnection(frames.append)).export([]).name
        'SUCCESS'
    """

    #: Largest frame sent (prefix included): see :data:`MAX_FRAME_BYTES`.
    max_frame_bytes: int = MAX_FRAME_BYTES

    def __init__(self, connection: SharedEngineConnection) -> None:
        self._connection = connection
        #: Ours: told how many records an export took once it ended, however it ended (the telemetry's log processor
        #: frees their bytes of its budget then).
        self.on_export_end: Callable[[int], None] | None = None
        self.unwritable = 0  # log records dropped from their batch's frame: no OTLP-JSON text could be written for them
        self.oversized = 0  # log records dropped: one alone made a frame over max_frame_bytes

    def export(self, batch: Sequence[Any]) -> Any:
        """:meth:`_export` the batch, then tell :attr:`on_export_end` (if any) that its records left the queue."""
        try:
            return self._export(batch)
        finally:
            if self.on_export_end is not None:
                self.on_export_end(len(batch))

    def _export(self, batch: Sequence[Any]) -> Any:
        """Send the batch in one frame, or in several when one would be over :attr:`max_frame_bytes` (a record
        over it alone is dropped, counted in :attr:`oversized`); a record with no OTLP-JSON text (a lone surrogate
        from a record not made by :class:`iii.logger.Logger`, which writes them as escapes) is dropped alone, counted
        in :attr:`unwritable`: it took its whole batch down. ``LogExportResult`` (``FAILURE`` when one was dropped)."""
        from opentelemetry.sdk._logs.export import LogExportResult

        try:
            items = batch
            try:
                payload = serialize_logs(items)
            except Exception:  # one record's: UnicodeEncodeError (a lone surrogate), a body's __str__ raising, ...
                items, unwritable = _writable(batch, lambda item: serialize_logs([item]), "log record")
                self.unwritable += unwritable
                if not items:
                    return LogExportResult.FAILURE
                payload = serialize_logs(items)
            dropped = _send_split(self._connection, PREFIX_LOGS, items, payload, serialize_logs,
                                  _frame_limit(self.max_frame_bytes, self._connection), "log record")
        except Exception:
            log.exception("log export failed")
            return LogExportResult.FAILURE
        self.oversized += dropped
        return LogExportResult.FAILURE if dropped or items is not batch else LogExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: the sink belongs to the client."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Frames are handed over at once, so there is nothing to flush."""
        return True


class EngineMetricsExporter:
    """Push metric exporter writing ``MTRC`` frames; usable with ``PeriodicExportingMetricReader``.

    Example:
        >>> exporter = EngineMetricsExporter(SharedEngineConnection(lambda frame: None))
        >>> exporter.force_flush()
        True
    """

    #: Largest frame sent (prefix included): see :data:`MAX_FRAME_BYTES`.
    max_frame_bytes: int = MAX_FRAME_BYTES

    def __init__(self, connection: SharedEngineConnection) -> None:
        self._connection = connection
        self.oversized = 0  # data points dropped: one alone made a frame over max_frame_bytes
        # PeriodicExportingMetricReader reads these two attributes of any exporter it is given.
        self._preferred_temporality: dict[Any, Any] = {}
        self._preferred_aggregation: dict[Any, Any] = {}

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        """Send the collected metrics in one frame, or in several when one would be over :attr:`max_frame_bytes`
        (split between data points; one over it alone is dropped, counted in :attr:`oversized`);
        ``MetricExportResult``."""
        from opentelemetry.sdk.metrics.export import MetricExportResult

        try:
            units = _metric_units(metrics_data)
            dropped = _send_split(self._connection, PREFIX_METRICS, units, _serialize_metric_units(units),
                                  _serialize_metric_units, _frame_limit(self.max_frame_bytes, self._connection),
                                  "metric data point")
        except Exception:
            log.exception("metrics export failed")
            return MetricExportResult.FAILURE
        self.oversized += dropped
        return MetricExportResult.FAILURE if dropped else MetricExportResult.SUCCESS

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release: the sink belongs to the client."""

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Frames are handed over at once, so there is nothing to flush."""
        return True
