"""Runs the worker's function handlers for incoming invocations: async ones on the loop, sync ones on the runner's
:class:`~iii.handler_threads.HandlerThreads` with the caller's context, each inside the caller's trace context.

Example:
    >>> import asyncio
    >>> from iii.trace_scope import TraceScope
    >>> runner = HandlerRunner("ws://127.0.0.1:1")
    >>> runner.add("double", lambda data: data * 2)
    >>> asyncio.run(runner.run("double", 21, None, None, TraceScope(None)))
    (42, None, None)
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

from .channels import ChannelReader, ChannelWriter, LiveEnds
from .errors import ConnectionLostError, ShuttingDownError
from .handler_threads import ExitWait, HandlerThreads, exit_refusal
from .payloads import resolve_channels
from .protocol.codec import escape_surrogates
from .protocol.worker_session import clip_text
from .trace_scope import TraceScope

__all__ = ["HandlerAbortedError", "HandlerRunner", "describe_base_exception", "handler_raised", "is_async_callable"]

log = logging.getLogger(__name__)

HANDLER_ERROR_LOG_CHARS = 2000
"""Characters of a handler's error its log line quotes (cut beyond, saying how long it was)."""

#: ``(result, error body or None, response traceparent or None)``
Outcome = tuple[Any, dict[str, Any] | None, str | None]


class HandlerRunner:
    """The local handlers by function id, and how to run one."""

    def __init__(self, address: str, on_exit: Callable[[], ExitWait | None] | None = None) -> None:
        """``on_exit``: called once when the interpreter's exit starts, it may return a wait (see
        :class:`HandlerThreads`)."""
        self._address = address  # channel refs in payloads are opened against this engine
        # function id -> (handler, whether it is async, its span's name: one string per function, not per call)
        self._handlers: dict[str, tuple[Callable[[Any], Any], bool, str]] = {}
        # Not the loop's default executor: sync handlers calling back into sync handlers of this process starved it.
        self.threads = HandlerThreads(on_exit=on_exit)
        self._running = _Running()
        self._refusing: str | None = None  # why new sync runs are refused (refuse()), if they are
        # The channel ends given to handlers in payloads (and those the client adds): stopped by close()
        self.ends = LiveEnds()

    def refuse(self, why: str) -> None:
        """From now on a sync handler's run is refused before it starts: its caller gets an ``invocation_failed``
        error saying ``why``, and nothing is logged per run (one line says it all at :meth:`close`). A run that
        the handler threads refuse (the interpreter's exit) is answered so too."""
        if self._refusing is None:
            self._refusing = why

    def close(self, spare_thread: int | None = None) -> None:
        """No more sync handler runs: queued ones are cancelled, idle threads end. A sync handler still running is
        named in a warning: nothing can stop a thread, and the interpreter waits for it at exit (no bound), so the
        process stayed up after the client's shutdown without a word. The run on thread ``spare_thread`` (the
        shutdown's caller: a handler shutting its client down returns as the shutdown does) is not named."""
        self.threads.shutdown(wait=False, cancel_futures=True)
        # A handler still writing into (or reading) a channel would wait on it for the engine's attach deadline
        self.ends.stop_all("the client was shut down")
        running = self._running.now(spare_thread)
        if running:
            why = f"{self._refusing[:1].upper()}{self._refusing[1:]}: shut down" if self._refusing else "Shut down"
            log.warning("%s with %d sync handler run(s) still going on the handler threads (%s); they run on "
                        "(a thread cannot be stopped) and the process waits for them to return before it exits, "
                        "with no time limit", why, sum(running.values()),
                        ", ".join(f"{fid} x{n}" if n > 1 else fid for fid, n in sorted(running.items()))[:1000])

    def add(self, function_id: str, handler: Callable[[Any], Any]) -> None:
        """Serve ``function_id`` with ``handler`` (sync or async)."""
        self._handlers[function_id] = (handler, is_async_callable(handler), f"call {function_id}")

    def remove(self, function_id: str) -> None:
        """Stop serving ``function_id``."""
        self._handlers.pop(function_id, None)

    async def run(
        self, function_id: str, data: Any, traceparent: str | None, baggage: str | None, trace: TraceScope
    ) -> Outcome:
        """Run ``function_id``'s handler on ``data``; a failure becomes an ``invocation_failed`` body."""
        outcome, end = await self.start(function_id, data, traceparent, baggage, trace)
        end()
        return outcome

    async def start(
        self, function_id: str, data: Any, traceparent: str | None, baggage: str | None, trace: TraceScope,
        no_channel_refs: bool = False,
    ) -> tuple[Outcome, Callable[[], None]]:
        """Like :meth:`run`, with the handler's span left open: ``(outcome, end)``; call ``end()`` once the
        answer is sent (:meth:`TraceScope.start` says why). ``no_channel_refs``: ``data`` is known to hold none
        (:attr:`iii.protocol.client.InvocationRequested.no_channel_refs`), so it is not walked for them."""
        entry = self._handlers.get(function_id)
        if entry is None:  # unregistered while the frame was on its way
            return (None, {"code": "function_not_found", "message": f"Function '{function_id}' not found"},
                    None), _nothing
        handler, is_async, span_name = entry
        if not is_async and self._refusing is not None:
            return (None, {"code": "invocation_failed", "message": _refused(self._refusing)}, None), _nothing
        writers: list[ChannelWriter] = []
        readers: list[ChannelReader] = []
        try:
            if not no_channel_refs:
                data = resolve_channels(data, self._address, writers, readers)
                ends: list[ChannelWriter | ChannelReader] = [*writers, *readers]
                for channel_end in ends:
                    self.ends.add(channel_end)
        except Exception as exc:
            log.exception("Failed to resolve channel refs for %s", function_id)
            return (None, {"code": "invocation_failed", "message": str(exc), "stacktrace": traceback.format_exc()},
                    None), _nothing
        # An async handler is called with data by the scope itself: no closure per call
        if is_async:
            started = trace.start(span_name, handler, traceparent, baggage, data)
        else:
            started = trace.start(span_name, _bind_sync(handler, data, self.threads, function_id, self._running),
                                  traceparent, baggage)
        try:
            (result, error, stack, response_tp), end = await started
        except BaseException as exc:
            if not handler_raised(exc):
                raise
            # KeyboardInterrupt, SystemExit, GeneratorExit or CancelledError out of the handler itself: let through,
            # it ended the client's loop thread, so the caller and every later call to this worker timed out.
            log.error("Handler %s raised %s", function_id, type(exc).__name__, exc_info=exc)
            if writers:
                await _abort_used(writers, describe_base_exception(exc))
            if readers:
                await _release_readers(readers, describe_base_exception(exc))
            return (None, {"code": "invocation_failed", "message": describe_base_exception(exc),
                           "stacktrace": traceback.format_exc()}, None), _nothing
        if isinstance(error, _RefusedError):  # (no handler ran; the exit is said once, by the client's shutdown)
            return (None, {"code": "invocation_failed", "message": _refused(str(error))}, None), _nothing
        if error is not None:
            text = error_text(error)
            # A call the handler made that failed for the connection (lost, or the client shutting down) is not the
            # handler's bug: a warning, no ERROR (an engine restart wrote one ERROR per handler in flight)
            # (cut: an error of 100,000 characters was a log line of that size per failed call; the caller gets it
            # whole)
            log.log(logging.WARNING if isinstance(error, (ConnectionLostError, ShuttingDownError)) else logging.ERROR,
                    "Error in handler %s: %s", function_id,
                    clip_text(escape_surrogates(text), HANDLER_ERROR_LOG_CHARS))
            if writers:
                await _abort_used(writers, f"the handler raised {type(error).__name__}: {text}")
            if readers:
                await _release_readers(readers, f"the handler raised {type(error).__name__}")
            return (None, {"code": "invocation_failed", "message": text, "stacktrace": stack},
                    response_tp), end
        if readers:
            await _release_readers(readers, "the handler returned")
        return (result, None, response_tp), end


def _nothing() -> None:
    """The ``end`` of a run that opened no span."""


async def _abort_used(writers: list[ChannelWriter], why: str) -> None:
    """Abort the channel writers a handler that raised was given and left open after writing to them, before its
    error is sent: its reader (an HTTP response, the engine's) sees an aborted stream, never one that stays open or
    looks complete. A writer never written to is left alone (aborting it would connect it only to abort)."""
    used = [w for w in writers if not w.closed and (w.bytes_written or w.pending_bytes)]
    if used:
        await asyncio.gather(*(w.abort(why[:100]) for w in used))  # abort() never raises


async def _release_readers(readers: list[ChannelReader], why: str) -> None:
    """Close the channel readers a handler was given, started reading and left unfinished (neither at their end
    nor closed, nor detached with :meth:`~iii.channels.ChannelReader.detach`) as it ends, before its answer is
    sent: their writers hear the reader is gone instead of waiting on backpressure with no deadline. A reader the
    handler never read is left alone: it may have handed it on."""
    await asyncio.gather(*(reader.release_unfinished(why) for reader in readers))  # never raises


def _refused(why: str) -> str:
    return f"the worker is shutting down ({why}): its sync handlers take no new runs"


class _RefusedError(Exception):
    """The handler threads refused a run (the interpreter's exit, or they were shut down): no handler ran."""


def handler_raised(exc: BaseException) -> bool:
    """Whether ``exc``, a ``BaseException`` out of user code awaited in the current task, came from that code rather
    than from a cancellation of the task itself (shutdown), which must go on.

    Example:
        >>> handler_raised(KeyboardInterrupt())
        True
    """
    if not isinstance(exc, asyncio.CancelledError):
        return True
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: nothing to cancel
        return True
    return task is None or not task.cancelling()


def error_text(error: BaseException) -> str:
    """``str(error)``, or what says so when its ``__str__`` raises (with telemetry off, nothing else read it
    first: the handler's call then went unanswered, its caller waiting for its timeout).

    Example:
        >>> class Opaque(Exception):
        ...     def __str__(self) -> str: raise RuntimeError("no text")
        >>> error_text(ValueError("bad input")), error_text(Opaque())
        ('bad input', 'Opaque (its str() raised RuntimeError)')
    """
    try:
        return str(error)
    except Exception as exc:
        return f"{type(error).__name__} (its str() raised {type(exc).__name__})"


def describe_base_exception(exc: BaseException) -> str:
    """The error message for a ``BaseException`` out of a handler: its type, as ``str()`` is often empty.

    Example:
        >>> describe_base_exception(SystemExit(2))
        'the handler raised SystemExit: 2'
    """
    text = str(exc)
    return f"the handler raised {type(exc).__name__}" + (f": {text}" if text else "")


class HandlerAbortedError(Exception):
    """A sync handler raised a ``BaseException`` (``KeyboardInterrupt``, ``SystemExit``, ...): its caller's error."""


class _Running:
    """The function ids whose sync handlers run on a handler thread now, by thread (one run at a time on each)."""

    __slots__ = ("_by_thread", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_thread: dict[int, str] = {}

    def enter(self, function_id: str) -> None:
        with self._lock:
            self._by_thread[threading.get_ident()] = function_id

    def leave(self) -> None:
        with self._lock:
            self._by_thread.pop(threading.get_ident(), None)

    def now(self, spare_thread: int | None = None) -> dict[str, int]:
        """How many runs of each function id are going, but the one on ``spare_thread``."""
        counts: dict[str, int] = {}
        with self._lock:
            for thread, function_id in self._by_thread.items():
                if thread != spare_thread:
                    counts[function_id] = counts.get(function_id, 0) + 1
        return counts


def _bind_sync(handler: Callable[[Any], Any], data: Any, threads: HandlerThreads, function_id: str,
               running: _Running) -> Callable[[], Coroutine[Any, Any, Any]]:
    async def run_sync() -> Any:
        # copy_context carries the trace context into the handler thread (run_in_executor does not).
        ctx = contextvars.copy_context()
        try:
            ran = asyncio.get_running_loop().run_in_executor(threads, _run_guarded, ctx, handler, data, function_id,
                                                             running)
        except RuntimeError as exc:  # the submit's refusal (nothing ran yet), or a thread that could not start
            if threads.closing:
                raise _RefusedError("the client was shut down") from exc
            if exit_refusal(exc):
                raise _RefusedError("the interpreter is exiting") from exc
            raise
        result = await ran
        if inspect.isawaitable(result):
            result = await result
        return result

    return run_sync


def _run_guarded(ctx: contextvars.Context, handler: Callable[[Any], Any], data: Any, function_id: str,
                 running: _Running) -> Any:
    """``handler(data)`` in ``ctx`` on a handler thread, counted in ``running`` meanwhile, a ``BaseException`` it
    raises turned into :class:`HandlerAbortedError` there: carried to the loop by the executor's future, a
    ``GeneratorExit`` came back out of coroutines that had caught it and returned, and ended the loop thread."""
    running.enter(function_id)
    try:
        return ctx.run(handler, data)
    except Exception:
        raise
    except BaseException as exc:
        raise HandlerAbortedError(describe_base_exception(exc)) from exc
    finally:
        running.leave()


def is_async_callable(handler: Callable[..., Any] | None) -> bool:
    """Whether calling ``handler`` returns a coroutine (an ``async def``, or an object with ``async __call__``).

    Example:
        >>> async def f(x: int) -> int: return x
        >>> is_async_callable(f), is_async_callable(print), is_async_callable(None)
        (True, False, False)
    """
    if handler is None:
        return False
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - async __call__ on instances
    return call is not None and inspect.iscoroutinefunction(call)
