"""Trace context around incoming invocations: the optional ``iii.telemetry`` module, a span per handler run.

Kept apart from the client so the client never imports OpenTelemetry itself; with telemetry missing or off,
:class:`TraceScope` just runs the handler and captures its exception.

Example:
    >>> import asyncio
    >>> async def ok() -> int: return 7
    >>> asyncio.run(TraceScope(None).run("call f", ok, None, None))
    (7, None, None, None)
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, Final

__all__ = ["NO_DATA", "TraceScope", "load_telemetry"]

#: The ``data`` of :meth:`TraceScope.start` when ``call`` takes no argument.
NO_DATA: Final[Any] = object()

HandlerCall = Callable[..., Awaitable[Any]]
Outcome = tuple[Any, BaseException | None, str | None, str | None]


def load_telemetry() -> ModuleType | None:
    """``iii.telemetry``, or ``None`` when it cannot be imported (OpenTelemetry is an optional extra).

    Example:
        >>> load_telemetry() is None or hasattr(load_telemetry(), "init_otel")
        True
    """
    # Imported here, not at the top: a missing optional dependency is a None, not an import error at startup.
    try:
        from . import telemetry
    except ImportError:
        return None
    return telemetry


class TraceScope:
    """Runs a handler inside the caller's trace context and reports the response ``traceparent``.

    Example:
        >>> TraceScope(None).headers()
        (None, None)
    """

    def __init__(self, telemetry: ModuleType | None) -> None:
        self._tel = telemetry
        # iii.telemetry's TelemetryRuntime (one per process, never replaced), whose get_tracer() is its .tracer
        runtime = getattr(telemetry, "runtime", None)
        self._state: Any = runtime() if callable(runtime) else None
        # The opentelemetry ``context`` and ``trace`` modules, and the OK status every successful run sets (a
        # Status never changes once made, so one serves every span, as a new one per call would).
        self._otel: tuple[Any, Any, Any] | None = None
        # iii.light_span's LightSpan and its UNSET status (loaded with OpenTelemetry, by _load_otel).
        self._light: Any = None
        self._unset: Any = None
        # OpenTelemetry's default runtime context and its context variable, which context.attach and detach set and
        # reset (two Python-level calls each, per handled call); None for any other runtime context.
        self._runtime: Any = None
        self._variable: Any = None
        self._runtime_context: Callable[[], Any] = _no_runtime  # iii.otel_internals.runtime_context once loaded

    def headers(self) -> tuple[str | None, str | None]:
        """``(traceparent, baggage)`` to put on an outgoing invocation."""
        tel = self._tel
        if tel is None:
            return None, None
        headers: tuple[str | None, str | None] = tel.trace_headers()
        return headers

    async def run(
        self, name: str, call: HandlerCall, traceparent: str | None, baggage: str | None, data: Any = NO_DATA
    ) -> Outcome:
        """``(result, error, formatted traceback, response traceparent)`` of ``await call()`` (``call(data)`` when
        ``data`` is given).

        The caller's context (trace parent *and* baggage) is made current for the whole run, so the handler
        sees the baggage and its nested calls forward both headers.
        """
        outcome, end = await self.start(name, call, traceparent, baggage, data)
        end()
        return outcome

    async def start(
        self, name: str, call: HandlerCall, traceparent: str | None, baggage: str | None, data: Any = NO_DATA
    ) -> tuple[Outcome, Callable[[], None]]:
        """Like :meth:`run`, but the handler's span is left open: ``(outcome, end)``, and ``end()`` must follow.

        Why: ending a span (the OpenTelemetry SDK's end and its span processor) is work nobody waits for, so the
        invocation's answer goes out first and the span ends right after. Its status is already set and the
        response ``traceparent`` is known when this returns; the handler's context is no longer current.

        ``data``: passed to ``call`` (a closure per call binding it would cost a call and an object more).

        Example:
            >>> import asyncio
            >>> async def double(x: int) -> int: return 2 * x
            >>> (outcome, end) = asyncio.run(TraceScope(None).start("call f", double, None, None, 21)); end()
            >>> outcome
            (42, None, None, None)
        """
        tel = self._tel
        if tel is None:
            return await self._plain(call, data), _nothing
        # the runtime's tracer as get_tracer() returns it, two Python-level calls less per handled call
        runtime = self._state
        tracer = tel.get_tracer() if runtime is None else runtime.tracer
        if tracer is None and not traceparent and not baggage:
            return await self._plain(call, data), _nothing
        context, trace, ok = self._otel or self._load_otel()
        # The usual case in one straight path (telemetry.begin_handler), else in steps.
        begun = None if tracer is None or runtime is None else tel.begin_handler(name, traceparent, baggage)
        if begun is not None:
            span, ctx, response = begun
        else:
            response = None
            started = None if tracer is None else tel.start_handler(tracer, name, traceparent, baggage)
            if started is not None:
                span, ctx = started  # see telemetry.start_handler
            else:
                parent = tel.extract_context(traceparent, baggage)
                if tracer is None:
                    # Telemetry is off: no span, but nested calls still carry the caller's trace context.
                    token = context.attach(parent)
                    try:
                        return await self._plain(call, data), _nothing
                    finally:
                        context.detach(token)
                # What start_as_current_span(name, kind=SERVER, record_exception=False) does, without its two
                # generator context managers per call. The span's context is built on the extracted one (not only
                # the span, as start_as_current_span(context=parent) would do), so the handler sees the caller's
                # baggage too; one attach makes both current.
                span = tel.start_handler_span(tracer, name, parent)
                ctx = trace.set_span_in_context(span, parent)
        # Only BaseExceptions (cancellation) get through, on which use_span would just end the span too.
        try:
            # context.attach/detach, on the runtime context's variable itself while it is the default one
            variable = self._variable if self._runtime_context() is self._runtime else None
            token = context.attach(ctx) if variable is None else variable.set(ctx)
            try:
                # What _plain does, inline: one coroutine less per handled call.
                result = await (call() if data is NO_DATA else call(data))
                error = stack = None
            except Exception as exc:
                result, error, stack = None, exc, traceback.format_exc()
            finally:
                if variable is None:
                    context.detach(token)
                else:
                    try:
                        variable.reset(token)
                    except Exception:
                        context.detach(token)  # fails again, and logs it as OpenTelemetry's detach does
            if error is not None:
                span.record_exception(error)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
            elif type(span) is self._light and span._status is self._unset and span.end_time is None:
                span._status = ok  # what LightSpan.set_status(ok) does to a span still UNSET and open
            else:
                span.set_status(ok)
            return (result, error, stack, tel.span_traceparent(span) if response is None else response), span.end
        except BaseException:
            span.end()
            raise

    def _load_otel(self) -> tuple[Any, Any, Any]:
        # Imported on first use (OpenTelemetry is optional), then kept: an import statement per call adds up.
        from opentelemetry import context, trace

        try:
            from .light_span import _UNSET, LightSpan, context_variable
            from .otel_internals import runtime_context
        except ImportError:  # the OpenTelemetry API without its SDK: no light spans (nor spans at all) either
            pass
        else:
            self._light, self._unset = LightSpan, _UNSET
            self._runtime, self._variable = context_variable(context)
            self._runtime_context = runtime_context
        self._otel = (context, trace, trace.Status(trace.StatusCode.OK))
        return self._otel

    @staticmethod
    async def _plain(call: HandlerCall, data: Any) -> Outcome:
        try:
            return await (call() if data is NO_DATA else call(data)), None, None, None
        except Exception as exc:
            return None, exc, traceback.format_exc(), None


def _no_runtime() -> None:
    """No runtime context (OpenTelemetry not loaded): the context variable is never used then."""
    return None


def _nothing() -> None:
    """The ``end`` of a run without a span."""
