"""``Backend``: what every ``iii_streams`` store adds to the ``IStream`` contract.

On top of get/set/delete/list/list_groups/update (in this package's stores each takes an optional
keyword-only ``timeout`` in seconds) a backend can ``send`` custom events, ``watch()`` changes, ``list_all()``
streams with their groups (for an engine's ``stream::list_all``) and close. Backend failures surface as
:class:`~iii_streams.errors.StreamError` subclasses with the driver's exception as ``__cause__``. Opening a
store from a URL is :func:`iii_streams.open_stream`'s job (``iii_streams.urls``); this module knows nothing of
URLs.

Example:
    >>> import asyncio
    >>> from iii_streams import MemoryStream
    >>> async def demo():
    ...     async with MemoryStream() as store:
    ...         await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="1", data=[1, 2]), timeout=5)
    ...         return await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="1"))
    >>> asyncio.run(demo())
    [1, 2]
"""

from __future__ import annotations

import asyncio
import builtins
from abc import abstractmethod
from types import TracebackType
from typing import Any, ClassVar, Final, Self

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.stream import (
    IStream,
    StreamGetInput,
    StreamListInput,
    StreamSetInput,
    StreamSetResult,
    StreamUpdateInput,
    StreamUpdateResult,
)
from iii.stream_ops import Op, apply_update, parse_ops
from iii.wire import dumps

from .close_once import CloseOnce
from .deadlines import SharedDeadlines
from .errors import (
    StreamError,
    StreamTimeoutError,
    StreamUnavailableError,
    StreamValueTooLargeError,
    check_list_bytes,
    check_timeout,
    closed_unapplied,
    json_text,
    utf8_size,
)
from .events import EventFilter, StreamEvent, Watch

__all__ = ["DEFAULT_TIMEOUT", "Backend", "FieldUpdates", "OperationGuard", "SetResult", "StoreDeadline",
           "StreamGetInput", "StreamSetInput", "UpdateResult", "WriteProgress"]

DEFAULT_TIMEOUT: Final = 60.0
"""Seconds an operation may take when neither the call nor the store says otherwise."""

DRIVER_TIMEOUT: Final = "no answer within the driver's own timeout (TimeoutError)"
"""The reason given for a driver's ``TimeoutError`` that carries no text of its own."""

# the result models parametrized once: pydantic's ``Model[Any]`` lookup costs more than building the result
SetResult = StreamSetResult[Any]
UpdateResult = StreamUpdateResult[Any]


class StoreDeadline:
    """``asyncio.timeout(limit)`` for a store's batch of writes, on the store's shared timer when it has one
    (:class:`~iii_streams.deadlines.SharedDeadlines`: no timer armed and cancelled per batch). Past the limit
    the body is cancelled and ``TimeoutError`` raised, as ``asyncio.timeout`` does; other exceptions pass as
    they are (each caller's :class:`OperationGuard` wraps them with its own operation's name). ``limit=None``
    bounds nothing.

    The timing half of :class:`OperationGuard` too, which inherits ``__aenter__`` and ``__aexit__`` unchanged and
    only overrides the two hooks they call on failure (so a guard that succeeds runs exactly this code).

    Example:
        >>> async def demo() -> str:
        ...     deadline = StoreDeadline(0.01, SharedDeadlines(0.01))
        ...     try:
        ...         async with deadline:
        ...             await asyncio.sleep(1)
        ...     except TimeoutError:
        ...         return "timed out"
        ...     return "finished"
        >>> asyncio.run(demo())
        'timed out'
    """

    __slots__ = ("_deadlines", "_entry", "_limit", "_timer")

    def __init__(self, limit: float | None, deadlines: SharedDeadlines | None = None) -> None:
        self._limit = limit
        self._deadlines = deadlines  # the store's shared timer, for a limit that is the store's own
        self._entry: Any = None
        self._timer: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        if self._deadlines is not None:
            self._entry = self._deadlines.enter()
            if self._entry is not None:
                return
        if self._limit is not None:
            self._timer = asyncio.timeout(self._limit)
            await self._timer.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._entry is not None:
            assert self._deadlines is not None
            if self._deadlines.leave(self._entry, exc_type is asyncio.CancelledError):
                expired = TimeoutError()
                expired.__cause__ = exc
                raise self._timed_out(expired)
        elif self._timer is not None:
            try:
                await self._timer.__aexit__(exc_type, exc, tb)
            except TimeoutError as expired:
                raise self._timed_out(expired)  # noqa: B904 - the cause is set by _timed_out (or is asyncio's)
        if exc is not None:
            wrapped = self._wrapped(exc)
            if wrapped is not None:
                raise wrapped from exc

    def _timed_out(self, expired: TimeoutError) -> BaseException:
        """The exception to raise when the limit passed (``expired`` is the plain ``TimeoutError``)."""
        # named, for the callers whose own guards wrap it (``SQLStream.set: timed out: a batch of writes …``)
        error = TimeoutError(f"a batch of writes did not finish within {self._limit:g} s (the store's timeout)")
        error.__cause__ = expired.__cause__
        return error

    def _wrapped(self, exc: BaseException) -> BaseException | None:
        """The exception to raise (``from exc``) for one the body raised, or ``None`` to let it pass."""
        return None


class OperationGuard(StoreDeadline):
    """Bounds one store operation in time (:class:`StoreDeadline`) and turns backend exceptions into
    :class:`StreamError` subclasses; past the limit it raises :class:`StreamTimeoutError` naming the operation.

    Used as ``async with self._guard("get", timeout):`` around a store method's body. A plain class rather
    than a generator-based context manager: it runs on every operation.
    """

    __slots__ = ("_operation", "_store")

    def __init__(self, store: Backend, operation: str, limit: float | None,
                 deadlines: SharedDeadlines | None = None) -> None:
        # StoreDeadline.__init__'s assignments inline: a super() call is a measurable share of a guard's cost
        self._limit = limit
        self._deadlines = deadlines
        self._entry: Any = None
        self._timer: asyncio.Timeout | None = None
        self._store = store
        self._operation = operation

    def _where(self) -> str:
        return f"{type(self._store).__name__}.{self._operation}"

    def _timed_out(self, expired: TimeoutError) -> BaseException:
        error = StreamTimeoutError(f"{self._where()} did not finish within {self._limit:g} s"
                                   f"{self._store._timeout_note(self._operation)}")
        error.__cause__ = expired
        return error

    def _wrapped(self, exc: BaseException) -> BaseException | None:
        if isinstance(exc, StreamError) or not isinstance(exc, Exception):
            return None
        return self._store._wrap_error(exc, self._where())


class WriteProgress:
    """How far one caller's queued write got, shared by the caller and the batch that runs it: a batch leaves out
    a write whose caller ``abandoned`` it (timed out or was cancelled) and, just before sending the commit (or the
    single statement, or script) that applies it, marks it ``sent`` (or earlier: an SQL batch that already ran
    again twice for withdrawals); a caller giving up after that cannot withdraw it. Both sides run on one event
    loop and each checks and sets without awaiting in between, so every write is either withdrawn (never
    applied) or sent (its outcome unknown to a caller that stopped waiting).
    """

    __slots__ = ("abandoned", "sent")

    def __init__(self) -> None:
        self.abandoned = False
        self.sent = False

    def give_up(self) -> bool:
        """The caller stops waiting: withdraw the write unless it was sent; ``True`` when it was withdrawn.

        Example:
            >>> queued, sent = WriteProgress(), WriteProgress()
            >>> sent.sent = True  # the batch already sent its commit
            >>> queued.give_up(), sent.give_up()
            (True, False)
        """
        self.abandoned = not self.sent
        return self.abandoned

    def timeout_error(self, exc: StreamTimeoutError) -> StreamTimeoutError:
        """``exc`` (the caller's timeout) restated with the write's outcome; the caller raises it ``from exc``.

        Example:
            >>> progress = WriteProgress()
            >>> error = progress.timeout_error(StreamTimeoutError("S.set did not finish within 1 s"))
            >>> str(error), error.applied
            ('S.set did not finish within 1 s; the write was withdrawn and not applied', False)
        """
        if self.give_up():
            error = StreamTimeoutError(f"{exc}; the write was withdrawn and not applied")
            error.applied = False
        else:
            error = StreamTimeoutError(f"{exc}; the write had been sent and may have been applied (outcome unknown)")
        return error


class _Flight:
    """The bounded default-path updates of one item under way on one store object (:meth:`Backend.update_parsed`):
    how many (``users``), the growth in bytes of those that passed their check and are being written
    (``pending_*``), and of those written since the first of them began (``done_*``: an update measured on a read
    made before one of them completed counts it)."""

    __slots__ = ("done_bytes", "done_count", "pending_bytes", "pending_count", "users")

    def __init__(self) -> None:
        self.users = self.pending_bytes = self.pending_count = self.done_bytes = self.done_count = 0


class Backend(IStream[Any]):
    """Base class of the stream stores (open one by URL with :func:`iii_streams.open_stream`).

    ``publish_events`` (default true) makes set/update/delete publish change events (to the store's pub/sub
    for Redis and PostgreSQL, in-process otherwise); an engine that publishes events itself turns it off.
    ``timeout`` (default 60 s, ``None`` for no limit) bounds every operation called without a ``timeout`` of
    its own; past it the call fails with :class:`~iii_streams.errors.StreamTimeoutError`.
    """

    publish_events: bool = True
    timeout: float | None = DEFAULT_TIMEOUT
    _deadlines: SharedDeadlines | None = None  # set per store at its first bounded operation
    # a store with connections to release sets it: once its close began, an operation is refused at its start
    _close_once: CloseOnce | None = None
    atomic_updates: ClassVar[bool] = True
    """``update`` is atomic by itself (across processes too), so callers need no lock of their own around it;
    a caller-side per-item lock would only keep concurrent updates from sharing one transaction."""

    # The six IStream operations stay abstract with the reference's signatures (inherited); the stores of this
    # package add the optional keyword ``timeout`` to each, bounded through ``_guard``.

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass whose update() comes before its update_parsed() in the MRO (its own override, or a mixin's)
        # gets every update through that update(), update_parsed's included.
        mro = cls.__mro__
        update_at = next(i for i, k in enumerate(mro) if "update" in k.__dict__)
        parsed_at = next(i for i, k in enumerate(mro) if "update_parsed" in k.__dict__)
        if update_at < parsed_at:
            cls.update_parsed = Backend.update_parsed  # type: ignore[method-assign]

    # -- extras ----------------------------------------------------------------------------------------------

    async def update_parsed(self, stream_name: str, group_id: str, item_id: str, ops: builtins.list[Op], *,
                            max_bytes: int | None = None) -> StreamUpdateResult[Any] | None:
        """:meth:`update` of ops that :func:`iii.stream_ops.parse_ops` returned, with no input model to build (an
        engine's per-update path). The stores of this package run their update on the fields; by default, and
        for a subclass overriding ``update`` alone, it is ``update`` itself.

        ``max_bytes``: an update whose new value is more UTF-8 bytes of JSON than that is refused with
        :class:`~iii_streams.errors.StreamValueTooLargeError`, nothing written and no event published. The stores
        of this package check the text they write, in the same step as the write (atomic: in Redis's
        compare-and-set, in the SQL transaction; the other updates of the same batch go through). By default (an
        ``update`` of a subclass's own) the item is read, the ops applied to it and the result measured before
        ``update`` runs; one item's concurrent updates still reach ``update`` together (an atomic store may commit
        them as one), each measured beside what the others under way on this object add (and one byte each for a
        separator), so together they cannot pass the bound either: a little cautious, it may refuse an update
        that would just have fitted beside them. A write made meanwhile by another process is not counted.

        Example:
            >>> import asyncio
            >>> from iii.stream_ops import parse_ops
            >>> from iii_streams import MemoryStream
            >>> ops = parse_ops([{"type": "increment", "path": "n", "by": 2}])
            >>> asyncio.run(MemoryStream().update_parsed("s", "g", "i", ops)).new_value
            {'n': 2}
            >>> asyncio.run(MemoryStream().update_parsed("s", "g", "i", ops, max_bytes=6))
            Traceback (most recent call last):
            ...
            iii_streams.errors.StreamValueTooLargeError: the updated value is 7 bytes of JSON, over the update's \
max_bytes (6); nothing was written
        """
        request = StreamUpdateInput.model_construct(stream_name=stream_name, group_id=group_id, item_id=item_id,
                                                    ops=ops)  # type: ignore[arg-type]
        if max_bytes is None:
            return await self.update(request)
        key = (stream_name, group_id, item_id)
        flights: dict[tuple[str, str, str], _Flight] = self.__dict__.setdefault("_bounded_flights", {})
        flight = flights.get(key) or flights.setdefault(key, _Flight())
        flight.users += 1
        done_bytes, done_count = flight.done_bytes, flight.done_count  # what completes from now on: not read
        try:
            old = await self.get(StreamGetInput(stream_name=stream_name, group_id=group_id, item_id=item_id))
            size = utf8_size(json_text(apply_update(old, ops)[1], "the updated value"))
            count = flight.pending_count + flight.done_count - done_count
            others = flight.pending_bytes + flight.done_bytes - done_bytes + count
            if size + others > max_bytes:
                what = f"the updated value, with what {count} concurrent update(s) of it add," if count else \
                    "the updated value"
                raise StreamValueTooLargeError(what, size + others, max_bytes)
            growth = max(0, size - (0 if old is None else utf8_size(dumps(old))))
            flight.pending_bytes += growth
            flight.pending_count += 1
            try:
                result = await self.update(request)
            finally:
                flight.pending_bytes -= growth
                flight.pending_count -= 1
            flight.done_bytes += growth
            flight.done_count += 1
            return result
        finally:
            flight.users -= 1
            if not flight.users:
                del flights[key]

    async def list_text(self, input: StreamListInput, *, max_bytes: int | None = None) -> str:
        """What :meth:`list` returns, as one JSON array text. A store that keeps each item as JSON text (memory,
        SQL) joins those texts without decoding one (an engine's socket sync of a 50,000-item group spent 95 to
        300 ms of its event loop decoding the items and encoding them again); by default :meth:`list`'s answer,
        encoded.

        ``max_bytes``: a text over that many UTF-8 bytes raises :class:`StreamTooLargeError` instead; the memory
        and Redis stores find out before building it (an engine's ``state::list`` of a 150 MB scope built the
        whole answer for each caller).

        Example:
            >>> import asyncio
            >>> from iii_streams import MemoryStream
            >>> async def demo() -> str:
            ...     store = MemoryStream()
            ...     for item_id in ("b", "a"):
            ...         await store.set(StreamSetInput(stream_name="s", group_id="g", item_id=item_id,
            ...                                        data={"id": item_id}))
            ...     return await store.list_text(StreamListInput(stream_name="s", group_id="g"))
            >>> asyncio.run(demo())
            '[{"id":"b"},{"id":"a"}]'
        """
        text = dumps(await self.list(input))
        check_list_bytes(input, utf8_size(text), max_bytes)
        return text

    @abstractmethod
    async def send(self, stream_name: str, group_id: str, id: str | None, type: str, data: Any) -> None:
        """Publish a custom event ``{"type": "event", "event": {"type": type, "data": data}}``; stores nothing.

        Example:
            >>> import asyncio
            >>> from iii_streams import MemoryStream
            >>> async def demo() -> Any:
            ...     async with MemoryStream() as store, store.watch("chat") as events:
            ...         await store.send("chat", "room-1", None, "typing", {"user": "ada"})
            ...         return (await anext(events))["event"], await store.list_all()
            >>> asyncio.run(demo())
            ({'type': 'event', 'event': {'type': 'typing', 'data': {'user': 'ada'}}}, [])
        """

    @abstractmethod
    async def publish(self, event: StreamEvent) -> None:
        """Publish an already built event wrapper to this store's watchers (and pub/sub, where it has one).

        Example:
            >>> import asyncio
            >>> from iii_streams import MemoryStream
            >>> from iii_streams.events import make_event
            >>> async def demo() -> Any:
            ...     async with MemoryStream() as store, store.watch("s") as events:
            ...         await store.publish(make_event("s", "g", "i", "update", {"n": 1}))
            ...         return (await anext(events))["event"]
            >>> asyncio.run(demo())
            {'type': 'update', 'data': {'n': 1}}
        """

    @abstractmethod
    def watch(
        self, stream_name: str | None = None, group_id: str | None = None, item_id: str | None = None
    ) -> Watch:
        """Change events, optionally filtered; use as ``async with store.watch(...) as events``.

        Example:
            >>> import asyncio
            >>> from iii.stream import StreamSetInput
            >>> from iii_streams import MemoryStream
            >>> async def demo() -> Any:
            ...     async with MemoryStream() as store, store.watch("todos", group_id="work") as events:
            ...         await store.set(StreamSetInput(stream_name="todos", group_id="home", item_id="1", data="x"))
            ...         await store.set(StreamSetInput(stream_name="todos", group_id="work", item_id="2", data="y"))
            ...         event = await anext(events)  # the "home" write was filtered out
            ...         return event["id"], event["event"]
            >>> asyncio.run(demo())
            ('2', {'type': 'create', 'data': 'y'})
        """

    @abstractmethod
    async def list_all(self) -> builtins.list[tuple[str, builtins.list[str]]]:
        """Every stream with its non-empty groups, both sorted: ``[(stream_name, [group_id, …]), …]``.

        Example:
            >>> import asyncio
            >>> from iii.stream import StreamSetInput
            >>> from iii_streams import MemoryStream
            >>> async def demo() -> Any:
            ...     store = MemoryStream()
            ...     for stream, group in [("b", "y"), ("a", "z"), ("a", "x")]:
            ...         await store.set(StreamSetInput(stream_name=stream, group_id=group, item_id="1", data=1))
            ...     return await store.list_all()
            >>> asyncio.run(demo())
            [('a', ['x', 'z']), ('b', ['y'])]
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections; idempotent.

        Example:
            >>> import asyncio
            >>> from iii_streams import open_stream
            >>> async def demo() -> None:
            ...     store = open_stream("memory://")
            ...     try:
            ...         await store.list_all()
            ...     finally:
            ...         await store.aclose()
            ...     await store.aclose()  # again: nothing happens
            >>> asyncio.run(demo())
        """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- for subclasses --------------------------------------------------------------------------------------

    def _limit(self, timeout: float | None) -> float | None:
        """The time limit of one call: its own ``timeout`` (checked), else the store's."""
        return self.timeout if timeout is None else check_timeout(timeout)

    def _guard(self, operation: str, timeout: float | None) -> OperationGuard:
        """``async with self._guard("get", timeout):`` bounds the body and wraps backend exceptions; refuses with
        :class:`~iii_streams.errors.StreamClosedError` once the store's close began (nothing was applied).

        Why: redis-py's pool connects again after its close, so a ``RedisStream`` went on serving after ``aclose()``
        and left connections nobody closed (20 writes after the close opened 20 again; a second close kept them).
        """
        closing = self._close_once
        if closing is not None and closing.closing:
            raise closed_unapplied(f"{type(self).__name__}.{operation}")
        if timeout is None and self.timeout is not None:
            # the store's own limit: every such call shares one timer (iii_streams.deadlines)
            return OperationGuard(self, operation, self.timeout, self._shared_deadlines(self.timeout))
        return OperationGuard(self, operation, self._limit(timeout))

    def _shared_deadlines(self, limit: float) -> SharedDeadlines:
        deadlines = self._deadlines
        if deadlines is None or deadlines.limit != limit:
            deadlines = self._deadlines = SharedDeadlines(limit)
        return deadlines

    def _store_deadline(self) -> StoreDeadline:
        """``async with self._store_deadline():`` is ``asyncio.timeout(self.timeout)`` on the store's shared timer."""
        limit = self.timeout
        return StoreDeadline(limit, None if limit is None else self._shared_deadlines(limit))

    def _timeout_note(self, operation: str) -> str:
        """What the timeout message of ``operation`` adds (``"; …"``): the store's state that may explain it, such as
        a pool whose connections were all in use; ``""`` here."""
        return ""

    def _wrap_error(self, exc: Exception, where: str) -> StreamError | None:
        """The :class:`StreamError` to raise (``from exc``) for a backend exception, or ``None`` to let it pass.

        Subclasses add their driver's exceptions and fall back to this for ``OSError``.
        """
        if isinstance(exc, TimeoutError):
            # a driver's own timeout may carry no text (asyncpg's connect timeout): say whose it was
            return StreamTimeoutError(f"{where}: timed out: {str(exc) or DRIVER_TIMEOUT}")
        if isinstance(exc, OSError):
            return StreamUnavailableError(f"{where}: backend unreachable: {exc}")
        return None

    @staticmethod
    def _filter(stream_name: str | None, group_id: str | None, item_id: str | None) -> EventFilter:
        return EventFilter(stream_name, group_id, item_id)


class FieldUpdates(Backend):
    """A :class:`Backend` whose ``update`` and ``update_parsed`` both run :meth:`_update` on the fields (the
    stores of this package).

    Example:
        >>> from iii_streams import MemoryStream
        >>> issubclass(MemoryStream, FieldUpdates)
        True
    """

    async def update(self, input: StreamUpdateInput, *, timeout: float | None = None,
                     max_bytes: int | None = None) -> StreamUpdateResult[Any]:
        """Apply ``input.ops`` in order to one item (created as ``{}`` when missing), within ``timeout`` seconds.
        ``max_bytes``: refuse (:class:`~iii_streams.errors.StreamValueTooLargeError`, nothing written) a new value
        of more UTF-8 bytes of JSON, checked in the same atomic step as the write (see :meth:`update_parsed`).

        Example:
            >>> import asyncio
            >>> from iii.stream import StreamUpdateInput
            >>> from iii_streams import MemoryStream
            >>> ops = [{"type": "set", "path": "n", "value": 1}, {"type": "increment", "path": "n", "by": 2}]
            >>> request = StreamUpdateInput(stream_name="s", group_id="g", item_id="i", ops=ops)
            >>> asyncio.run(MemoryStream().update(request)).new_value
            {'n': 3}
        """
        ops = parse_ops(input.ops)  # invalid ops fail before the store is touched
        return await self._update(input.stream_name, input.group_id, input.item_id, ops, timeout,
                                  max_bytes=max_bytes)

    async def update_parsed(self, stream_name: str, group_id: str, item_id: str, ops: builtins.list[Op], *,
                            max_bytes: int | None = None) -> StreamUpdateResult[Any]:
        """:meth:`update` with ops already parsed (no validation on the way, no time limit of its own);
        ``max_bytes`` as :meth:`Backend.update_parsed` says, checked on the text the store writes.

        Example:
            >>> import asyncio
            >>> from iii.stream_ops import parse_ops
            >>> from iii_streams import MemoryStream
            >>> ops = parse_ops([{"type": "increment", "path": "n", "by": 2}])
            >>> asyncio.run(MemoryStream().update_parsed("s", "g", "i", ops)).old_value is None
            True
        """
        if "update" in self.__dict__:  # an update() set on this very object (a wrapper, a test double) sees it all
            return await Backend.update_parsed(  # type: ignore[return-value]
                self, stream_name, group_id, item_id, ops, max_bytes=max_bytes)
        return await self._update(stream_name, group_id, item_id, ops, None, max_bytes=max_bytes)

    @abstractmethod
    async def _update(self, stream_name: str, group_id: str, item_id: str, ops: builtins.list[Op],
                      timeout: float | None, *, max_bytes: int | None = None) -> StreamUpdateResult[Any]:
        """Apply parsed ``ops`` to one item, within ``timeout``; a new value over ``max_bytes`` UTF-8 bytes of
        JSON refused (:func:`~iii_streams.errors.check_value_bytes` of the text the store writes), nothing
        written."""
