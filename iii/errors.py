"""Errors raised by the SDK (ours; the reference SDK raises bare ``Exception``).

``InvocationError`` is an ``Exception`` whose ``str()`` is exactly the reference SDK's message (the repr of the
error dict), so code that matched on the text keeps working, while new code reads ``.code``.

Example:
    >>> err = InvocationError.from_wire({"code": "function_not_found", "message": "Function x not found"})
    >>> err.code, str(err)
    ('function_not_found', "{'code': 'function_not_found', 'message': 'Function x not found'}")
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

# The published SDK installs the same top-level package ``iii``; pip lets both be installed, and whichever was
# installed last overwrites the other's files, so neither works. Checked here, at import, because every entry
# into this toolkit (``iii``, ``iii_channels``, ``iii_engine``) imports this module, and this file is one the
# published SDK does not have, so it survives either install order.
_PUBLISHED_SDK = "iii-sdk"


def _refuse_published_sdk() -> None:
    """``ImportError`` naming what to uninstall when the distribution ``iii-sdk`` is installed too."""
    try:
        published = importlib.metadata.distribution(_PUBLISHED_SDK)
    except importlib.metadata.PackageNotFoundError:
        return
    where = str(published.locate_file(""))
    ours = os.path.dirname(os.path.abspath(__file__))
    try:
        overwritten = os.path.samefile(where, os.path.dirname(ours))
    except OSError:
        overwritten = False
    if overwritten:
        problem = (f"{_PUBLISHED_SDK} {published.version} (the published SDK) is installed in {where}, the same "
                   "place as iii-toolkit: both install the Python package 'iii', so one overwrites the other's "
                   "files and neither works.")
    else:
        problem = (f"{_PUBLISHED_SDK} {published.version} (the published SDK, in {where}) is installed in this "
                   f"environment, but 'import iii' found iii-toolkit's package in {ours}: the two share the name "
                   "'iii' and cannot be used side by side (to run the published SDK, start Python outside "
                   f"{os.path.dirname(ours)} or with -P).")
    raise ImportError(
        f"{problem} Run `pip uninstall {_PUBLISHED_SDK}`, then reinstall iii-toolkit "
        "(in its checkout: `pip install --force-reinstall -e '.[all]'`; the uninstall also deletes any files the two "
        "share).",
        name="iii",
    )


_refuse_published_sdk()


def _rebuilt(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any] | None) -> BaseException:
    """The exception :meth:`PicklesByState.__reduce__` describes, no ``__init__`` of the toolkit's (or a user's) run
    again: only the nearest built-in exception's ``__new__`` and ``__init__``, with ``args``, so that the state
    built-ins keep outside ``__dict__`` comes back too (``OSError.errno``, ``SystemExit.code``, an exception
    group's exceptions), then ``__setstate__`` (a class's own, where it has one) with the rest."""
    builtin: Any = next(base for base in cls.__mro__ if base.__module__ == "builtins")
    exc: BaseException = builtin.__new__(cls, *args)
    builtin.__init__(exc, *args)
    exc.args = args
    if state:
        exc.__setstate__(state)
    return exc


class PicklesByState(BaseException):
    """An exception whose pickle round trip (across processes: multiprocessing, ``concurrent.futures``) keeps its
    type, ``args``, ``str()`` and attributes as they are, whatever its constructor takes.

    Python rebuilds an exception as ``type(exc)(*exc.args)``: one whose constructor takes other parameters than
    the message it passes on failed to unpickle (``TypeError: missing ... argument``) or came back with its
    message built twice. This one is rebuilt without calling ``__init__``. Put it first among the bases.

    Example:
        >>> import pickle
        >>> back = pickle.loads(pickle.dumps(OutboundQueueFullError(1000, 30.0)))  # takes (max_queue, waited)
        >>> type(back).__name__, back.code, back.message == OutboundQueueFullError(1000, 30.0).message
        ('OutboundQueueFullError', 'connection_lost', True)
    """

    def __reduce__(self) -> tuple[Any, ...]:
        reduced = super().__reduce__()
        state = reduced[2] if isinstance(reduced, tuple) and len(reduced) > 2 else None
        return _rebuilt, (type(self), self.args, state)


class IIIError(PicklesByState, Exception):
    """Base of the errors this toolkit raises (other than ``TimeoutError``, ``ValueError``, ``TypeError``)."""


class InvocationError(IIIError):
    """A function call failed: the engine or the callee answered with an error body."""

    def __init__(self, code: str, message: str, stacktrace: str | None = None, *, raw: Any = None) -> None:
        self.code = code
        self.message = message
        self.stacktrace = stacktrace
        self.raw = raw if raw is not None else _body(code, message, stacktrace)
        super().__init__(str(self.raw))

    @classmethod
    def from_wire(cls, error: Any) -> InvocationError:
        """Build from an ``invocationresult.error`` value of any shape."""
        if isinstance(error, dict):
            return cls(
                str(error.get("code", "")),
                str(error.get("message", "")),
                error.get("stacktrace"),
                raw=error,
            )
        return cls("unknown_error", str(error), raw=error)

    def __str__(self) -> str:
        return str(self.raw)


class ConnectionLostError(InvocationError):
    """The call failed with the connection to the engine (code ``connection_lost``; ``outbound_queue_full`` for one
    refused while the connection is up). Its message says which of two cases it is:

    - ``"... never sent ..."``: the frame never left the SDK's outbound queue, so the call did not run; trying
      again is safe.
    - ``"Connection to the engine was lost while invoking 'f', after the call was sent: it may have run ..."``:
      the frame was written to the socket that dropped. The engine may have read it before it saw the drop (one
      that stalled reads what its kernel buffered when it resumes) and run the function, the answer going nowhere.
      Retry only a call that is safe to run twice, or check first whether it ran.
    """


class OutboundQueueFullError(ConnectionLostError):
    """A fire-and-forget frame was never sent: the outbound queue stayed full while the engine was unreachable.

    Example:
        >>> OutboundQueueFullError(1000, 30.0).message[-65:]
        ' waiting for the engine) for 30 s, the most a send waits for room'
        >>> OutboundQueueFullError(1000, 1.0, by_call=True).message
        "never sent: the outbound queue stayed full (1000 frames waiting for the engine) for 1 s, the call's timeout_ms"
    """

    def __init__(self, max_queue: int, waited: float | None, *, crowded: int = 0, by_call: bool = False) -> None:
        # ``waited`` None: reconnection gave up (max_retries), so the queue would stay full for good. ``crowded``:
        # that many sends already wait for room (the most allowed), so this one is not let wait too. ``by_call``:
        # the wait ended at the call's own timeout_ms, shorter than the queue's bound.
        if crowded:
            why = f"and {crowded} more sends already wait for room"
        elif waited is None:
            why = "and reconnection gave up (max_retries)"
        else:
            why = f"for {waited:g} s, " + ("the call's timeout_ms" if by_call else "the most a send waits for room")
        super().__init__("connection_lost", f"never sent: the outbound queue stayed full ({max_queue} frames waiting"
                                            f" for the engine) {why}")


class ShuttingDownError(IIIError):
    """The client is shutting down; its message matches the reference SDK's. ``cause``, when known (ours), is added
    as a note: it shows in the traceback, the message stays the reference's.

    Example:
        >>> error = ShuttingDownError("shut down by the interpreter's exit")
        >>> str(error), error.__notes__
        ('iii is shutting down', ["shut down by the interpreter's exit"])
    """

    def __init__(self, cause: str | None = None) -> None:
        super().__init__("iii is shutting down")
        if cause is not None:
            self.add_note(cause)


def _body(code: str, message: str, stacktrace: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if stacktrace is not None:
        body["stacktrace"] = stacktrace
    return body
