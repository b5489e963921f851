"""List answers of the store modules (``state::list``, ``stream::list``, their ``list_groups``, ``stream::list_all``)
bounded by the engine's ``max_message_size``.

Why: a list answer is one frame, built whole before the caller's outbox is looked at. A state scope of 150 items of
1 MB was answered with one 150 MB frame built in 4-8.6 s of the event loop, and 8 callers that did not read took the
engine from 203 MB to 4,973 MB; a stream group of 40 x 1 MB took the engine from ~90 MB to 830-1,000 MB the same way.
So an answer over the budget (``max_message_size`` less the frame around it) fails with one error naming what was
listed, its size and the setting, found before the answer is built: a group's size is asked of the store
(:meth:`iii_streams.Backend.list_text` with ``max_bytes``: SQL stores sum it in the database, Redis in a script), a
list of names is counted in characters before it is encoded. Never a shortened list: an answer that fits is the
whole list, as production's.

An in-process caller (``Engine.invoke``, a module's own call, the REST API's HTTP trigger on one of these functions:
an :class:`InvocationContext` with neither a caller worker nor an invocation id) gets its answer as a value, never as
a frame, so no frame size applies to it: it gets the whole list however large, as before the bound.

Example:
    >>> bound = AnswerBound(4096 + 100)  # answers of 100 bytes at most
    >>> bound.names(["a", "b"], None, AnswerSpec("x::list_groups", "E", "raise max_message_size"), "names").json
    '["a","b"]'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.stream import StreamListInput
from iii.wire import dumps
from iii_streams import Backend, StreamTooLargeError

from ..config import DEFAULT_CONTROL_MAX_MESSAGE_SIZE, EngineConfig
from ..workers import frame_bytes
from .base import EncodedResult, EngineError, EngineServices, InvocationContext

__all__ = ["FRAME_BYTES", "AnswerBound", "AnswerSpec", "ConfiguredServices", "too_large"]

FRAME_BYTES: Final = 4096
"""Room left in ``max_message_size`` for the ``invocationresult`` frame around an answer, beyond its invocation id."""


class ConfiguredServices(EngineServices, Protocol):
    """What a module with bounded answers needs beyond :class:`EngineServices`: the engine's configuration (its
    ``max_message_size``)."""

    config: EngineConfig


@dataclass(frozen=True, slots=True)
class AnswerSpec:
    """How one function's refusal reads: its id, its error code and the way round the bound it suggests."""

    function_id: str
    code: str
    hint: str


def too_large(spec: AnswerSpec, what: str, size: int, limit: int) -> str:
    """The message of a refused answer: what was listed, its size, the limit and the setting.

    Example:
        >>> too_large(AnswerSpec("state::list", "LIST_ERROR", "read it by key"), "scope 's'", 9, 5)[:60]
        "state::list: scope 's' is 9 or more bytes of JSON, over the "
    """
    return (f"{spec.function_id}: {what} is {size} or more bytes of JSON, over the {limit} bytes one answer may take "
            f"(the engine's max_message_size, less its frame); {spec.hint}")


class AnswerBound:
    """The byte budget of one module's list answers: ``max_message_size`` (read at the module's start) less the
    frame around an answer.

    Example:
        >>> AnswerBound(8192).budget(None), AnswerBound(8192).budget(InvocationContext("w1"))
        (4096, 4096)
        >>> AnswerBound(8192).budget(InvocationContext()) is None  # in-process: no frame to fit
        True
    """

    def __init__(self, max_message_size: int = DEFAULT_CONTROL_MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size

    def budget(self, ctx: InvocationContext | None) -> int | None:
        """Bytes an answer to the call ``ctx`` may take (``None``: a frame with no invocation id, the socket's sync);
        ``None`` (no bound) for an in-process caller, whose answer is never a frame."""
        if ctx is not None and ctx.caller_worker_id is None and ctx.invocation_id is None:
            return None
        invocation_id = None if ctx is None else ctx.invocation_id
        return self.max_message_size - FRAME_BYTES - len(invocation_id or "")

    async def list_text(self, store: Backend, input: StreamListInput, ctx: InvocationContext | None,
                        spec: AnswerSpec, what: str, *, bounded: bool = True) -> EncodedResult:
        """A group's items as one answer (the stored texts joined, none decoded where the store keeps texts),
        refused with ``spec.code`` naming ``what`` when over the budget (``bounded``), before the store builds the
        text; any other store failure is ``spec.code`` with the store's message."""
        budget = self.budget(ctx) if bounded else None
        try:
            return EncodedResult(await store.list_text(input, max_bytes=budget))
        except StreamTooLargeError as exc:
            raise EngineError(spec.code, too_large(spec, what, exc.size, budget or 0)) from None
        except Exception as exc:
            raise EngineError(spec.code, str(exc)) from None

    def json(self, value: Callable[[], Any], at_least: int, ctx: InvocationContext | None, spec: AnswerSpec,
             what: str) -> EncodedResult:
        """``value()`` encoded, or ``spec.code`` naming ``what`` when over the budget. ``at_least``: a size the
        answer cannot be under (its characters, say): over the budget, nothing is encoded.

        Example:
            >>> spec = AnswerSpec("f", "E", "raise max_message_size")
            >>> AnswerBound(4096 + 7).json(lambda: [1, 2, 3], 0, None, spec, "the list").json
            '[1,2,3]'
            >>> AnswerBound(4096 + 6).json(lambda: [1, 2, 3], 0, None, spec, "the list")
            Traceback (most recent call last):
            ...
            iii_engine.modules.base.EngineError: E: f: the list is 7 or more bytes of JSON, over the 6 bytes one \
answer may take (the engine's max_message_size, less its frame); raise max_message_size
        """
        budget = self.budget(ctx)
        if budget is None:
            return EncodedResult(dumps(value()))
        size = at_least
        if size <= budget:
            text = dumps(value())
            size = frame_bytes(text)
            if size <= budget:
                return EncodedResult(text)
        raise EngineError(spec.code, too_large(spec, what, size, budget))

    def names(self, names: Sequence[str], ctx: InvocationContext | None, spec: AnswerSpec, what: str,
              wrap: Callable[[Sequence[str]], Any] = list) -> EncodedResult:
        """``wrap(names)`` encoded (a list of names, or an object around it), bounded as :meth:`json`; the names'
        characters are counted first, so a list far over the budget is never encoded.

        Example:
            >>> spec = AnswerSpec("f", "E", "raise max_message_size")
            >>> AnswerBound(4096 + 13).names(["ab"], None, spec, "1 name", lambda n: {"g": list(n)}).json
            '{"g":["ab"]}'
        """
        # each name at least its characters and two quotes, a comma between two; the wrapping as encoded empty
        at_least = sum(map(len, names)) + 3 * len(names) - 1 + len(dumps(wrap([]))) if names else 0
        return self.json(lambda: wrap(names), at_least, ctx, spec, what)
