"""Closing a peer's WebSocket, and a module's store, within a deadline.

A peer that stopped reading never takes the close frame (it waits behind the bytes it did not read, and the
library's close first waits for its buffer to drain), and one that never answers the close holds the connection
for ``websockets``' own 10 s: the close gets a deadline, after which the connection is reset and its buffers go
with it.

Example (a connection already closed is reset at once, which does nothing)::

    await close_within(ws, 1013, "too slow")

A store whose connection went silent (a Redis or PostgreSQL server that stopped answering, a half-open connection)
may never finish its close: :func:`close_store` bounds it, so the module's stop, and the engine's, ends anyway.
During an engine's stop (:class:`StoreCloses`) the closes of all its modules' stores run side by side and share one
deadline, so stores that all went silent hold the stop for one bound, not one each.

A module's start and its stop have bounds too (:data:`MODULE_START_TIMEOUT_S`, :data:`MODULE_STOP_TIMEOUT_S`, or
what the module states): :func:`stop_within` ends a wait on work that may never end (a module's stop), and
:func:`awaiting` names where such work is stuck. :func:`start_module_task` runs a module's start knowing its bound
(:func:`module_start_bound`), so a wait inside it can end first and say what it waited for; a start still waiting
after :data:`MODULE_START_NOTICE_S` is announced with :func:`start_waits_for` (what it most likely waits for).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple

import iii.ws_imports  # noqa: F401  # isort: skip - websockets loads whole there, under one lock (see there)
from websockets.asyncio.server import ServerConnection

from iii import ws_fastpath
from iii_streams.deadlines import finish_within, let_go
from iii_streams.messages import mask_passwords

__all__ = ["CLOSE_TIMEOUT_S", "MODULE_START_NOTICE_S", "MODULE_START_TIMEOUT_S", "MODULE_START_WAIT_S",
           "MODULE_STOP_TIMEOUT_S", "START_NOTICE", "STORE_CLOSE_TIMEOUT_S", "ModuleStartBound", "StoreCloses",
           "awaiting", "close_store", "close_within", "module_start_bound", "start_module_task", "start_waits_for",
           "stop_within"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0
"""How long a close of a peer's socket may take before the connection is reset."""

STORE_CLOSE_TIMEOUT_S = 10.0
"""How long a module's stop waits for its store to close before it lets the close go. A store's close that hung on a
silent server held the engine's stop for good. Above the stores' own bounds on their parts, so those end first and
name what hung: a ``RedisStream``'s close takes at most 8 s (its watch reader: 2 s after its cancel and 2 s after a
second one, then its leftover connection's close: 2 s, then its watch pool's close: 2 s; side by side with the end
of its update batches and its command pool's close, 2 s each). In an engine's stop it is one deadline for every
store together (:class:`StoreCloses`)."""

MODULE_START_WAIT_S = 5.0
"""How long a stop called during the engine's start waits for the module start under way (a store's open, a
subscription) before it cancels it: a start waiting on a silent peer never holds the stop for good, and one about
to end ends and is then stopped as usual."""

MODULE_START_TIMEOUT_S = 60.0
"""How long the engine waits for a module's start (unless the module states a longer bound, or its entry in the
configuration file sets ``start_timeout_ms``): a start waiting on a peer that never answers (a store's open, a
subscription) failed nothing and held the engine's start for good. Past it the start is cancelled and fails as any
failed start does. A SQL store connects, checks its schema and (``create``: a ``file_based`` KvStore's SQLite)
migrates it in its module's start, within 10 s, or within the entry's ``start_timeout_ms`` when it sets one
(:func:`~iii_engine.modules.stream.store.prepare_module_store`): a migration waiting longer for its turn (another
process migrating; it may wait up to 600 s) needs a larger ``start_timeout_ms``."""

MODULE_START_NOTICE_S = 2.0
"""How long a module's start may wait silently: past it the engine logs once what the start waits for and for how
long it may (a start waiting on a silent store left the terminal silent for up to its whole bound)."""

START_NOTICE = "iii_start_notice"
"""The attribute (``extra``) marking that log record: ``iii-engine`` shows it at once, while the other records of
the start are held back until the start ends."""

MODULE_STOP_TIMEOUT_S = 10.0
"""How long the engine waits for a module's stop beyond what the module's own settings give it (a settings field
named ``*stop_timeout_ms``, e.g. the queue module's ``stop_timeout_ms``): past it the stop is cancelled, given
:data:`CLOSE_TIMEOUT_S` to end, then let go, and the engine's stop goes on with the next module. A module whose stop
hung (a silent server, a handler ignoring its cancel) held the engine's stop for good. Store closes are handed to
the engine's stop (:class:`StoreCloses`), so a module's stop needs no time for them."""

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)

# The engine's stop in progress in this context: its modules' store closes are started and handed to it
_STOPPING: ContextVar[StoreCloses | None] = ContextVar("iii_engine_store_closes", default=None)


class ModuleStartBound(NamedTuple):
    """The bound of the module start running in this context (:func:`module_start_bound`)."""

    seconds: float  #: past it the engine cancels the start
    configured: bool  #: set by the module's configuration entry (``start_timeout_ms``), not the default
    deadline: float  #: when (the loop's time) the engine cancels the start

    def left(self) -> float:
        """Seconds until the engine cancels the start (what the start did so far, imports included, took the rest)."""
        return self.deadline - asyncio.get_running_loop().time()


class _Start:
    """A module start's bound and, once made, its task: the bound holds while that task runs."""

    __slots__ = ("bound", "task")

    def __init__(self, bound: ModuleStartBound) -> None:
        self.bound = bound
        self.task: asyncio.Task[None] | None = None


# Every task the start spawns copies it with the rest of the context, for its whole life: the start's task tells
# whether the start is still under way
_MODULE_START: ContextVar[_Start | None] = ContextVar("iii_engine_module_start", default=None)


def start_module_task(start: Coroutine[Any, Any, None], bound: float, *,
                      configured: bool) -> asyncio.Task[None]:
    """``start`` (a module's start, which the engine bounds by ``bound`` seconds; ``configured``: by its entry's
    ``start_timeout_ms``) in a task of its own, in which :func:`module_start_bound` tells that bound (as in the
    tasks the start spawns, while the start runs).

    Example:
        >>> async def demo() -> list[object]:
        ...     async def start() -> None:
        ...         bound = module_start_bound()
        ...         assert bound is not None and 2.4 < bound.left() <= 2.5
        ...         seen.append(bound[:2])
        ...     seen: list[object] = [module_start_bound()]
        ...     await start_module_task(start(), 2.5, configured=True)
        ...     return [*seen, module_start_bound()]
        >>> asyncio.run(demo())
        [None, (2.5, True), None]
    """
    loop = asyncio.get_running_loop()
    under_way = _Start(ModuleStartBound(bound, configured, loop.time() + bound))
    token = _MODULE_START.set(under_way)
    try:
        under_way.task = loop.create_task(start)  # the task copies this context, bound included
    finally:
        _MODULE_START.reset(token)
    return under_way.task


def module_start_bound() -> ModuleStartBound | None:
    """The bound of the module start running in this context (:func:`start_module_task`), ``None`` outside one: a
    wait inside the start (a store's connect) ends before it, so its own error, naming what it waited for, is the
    one the start fails with, not the engine's cut. A task the start spawned sees it while the start runs, and
    ``None`` once the start ended (a store it opens later gets no leftover of the start's bound).

    Example:
        >>> async def demo() -> object:
        ...     async def start() -> None:  # spawns a task that outlives it
        ...         spawned.append(asyncio.get_running_loop().create_task(read_later()))
        ...     async def read_later() -> object:
        ...         await later.wait()
        ...         return module_start_bound()
        ...     later, spawned = asyncio.Event(), []
        ...     await start_module_task(start(), 2.5, configured=False)
        ...     later.set()
        ...     return await spawned[0]
        >>> print(asyncio.run(demo()))
        None
    """
    start = _MODULE_START.get()
    if start is None or start.task is None or start.task.done():
        return None
    return start.bound


def _task_named(work: Awaitable[Any], what: str) -> asyncio.Future[Any]:
    """``work`` as a task named after what it is: one let go, still running at the process's exit, is named."""
    return (asyncio.get_running_loop().create_task(work, name=what) if asyncio.iscoroutine(work)
            else asyncio.ensure_future(work))


async def close_within(ws: ServerConnection, code: int, reason: str,
                       timeout: float = CLOSE_TIMEOUT_S) -> None:  # noqa: ASYNC109 (a deadline for the close alone)
    """Close ``ws`` with ``code`` and ``reason``, resetting it if the close handshake is not over within
    ``timeout`` seconds (or the transport is already broken): either way the peer is dropped."""
    ws.close_timeout = timeout
    try:
        await asyncio.wait_for(ws.close(code, reason), timeout)
    except Exception:
        ws_fastpath.reset(ws)


def awaiting(task: asyncio.Future[Any]) -> str:
    """Where ``task`` waits: the innermost of its frames outside asyncio, as ``function (file:line)``, and the
    asyncio call it is in (``""`` for a future that is no task, or a task done).

    Example:
        >>> async def demo() -> str:
        ...     async def stuck() -> None:
        ...         await asyncio.Event().wait()
        ...     task = asyncio.get_running_loop().create_task(stuck())
        ...     await asyncio.sleep(0)
        ...     where = awaiting(task)
        ...     task.cancel()
        ...     return where.split(" (")[0] + " ..." + where.split(")")[1]
        >>> asyncio.run(demo())
        'demo.<locals>.stuck ... in Event.wait'
    """
    if not isinstance(task, asyncio.Task) or task.done():
        return ""
    coro: Any = task.get_coro()
    own = inner = None
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        inner = frame
        if not frame.f_code.co_filename.startswith(_ASYNCIO_DIR):
            own = frame
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    if own is None:
        return inner.f_code.co_qualname if inner is not None else ""
    where = f"{own.f_code.co_qualname} ({os.path.basename(own.f_code.co_filename)}:{own.f_lineno})"
    return where if inner is own or inner is None else f"{where} in {inner.f_code.co_qualname}"


def start_waits_for(module: object, task: asyncio.Future[Any]) -> str:
    """What a module's start that takes long most likely waits for: the first URL its settings name (a store's, a
    server's; passwords masked), else where ``task`` (its start) waits (:func:`awaiting`); ``""`` if neither.

    Example:
        >>> from types import SimpleNamespace
        >>> from iii_engine.modules.stream.settings import StateSettings
        >>> state = SimpleNamespace(settings=StateSettings(store_url="postgresql+asyncpg://app:pw@db/app"))
        >>> async def demo() -> str:
        ...     return start_waits_for(state, asyncio.get_running_loop().create_future())
        >>> asyncio.run(demo())
        'its store postgresql+asyncpg://app:***@db/app'
    """
    dump = getattr(getattr(module, "settings", None), "model_dump", None)
    found = _first_url(dump()) if callable(dump) else None
    if found is not None:
        key, url = found
        return f"its {'store' if key in ('store_url', 'redis_url') else key} {mask_passwords(url)}"
    where = awaiting(task)
    return f"waiting in {where}" if where else ""


def _first_url(value: Any) -> tuple[str, str] | None:
    """The first ``(key, value)`` in a settings dump whose key names a URL and whose value is set."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and item and (key == "url" or str(key).endswith("_url")):
                return str(key), item
            found = _first_url(item)
            if found is not None:
                return found
    return None


async def stop_within(work: Awaitable[Any], timeout: float, what: str,  # noqa: ASYNC109 (the bound is the point)
                      logger: logging.Logger | None = None) -> bool:
    """Await ``work`` (a module's stop) for at most ``timeout`` seconds; ``True`` when it ended in time (its
    exception raised). Past it the work is cancelled and given :data:`CLOSE_TIMEOUT_S` to end (its ``finally``
    clauses run, a port it holds is closed), then let go; ONE warning names ``what``, where it waited
    (:func:`awaiting`) and whether it ended after the cancel; ``False``. A cancel of the caller cancels the work the
    same way (bounded) and propagates.

    Example:
        >>> async def demo() -> list[bool]:
        ...     async def hung_stop() -> None:
        ...         await asyncio.Event().wait()
        ...     return [await stop_within(asyncio.sleep(0), 1.0, "module a's stop"),
        ...             await stop_within(hung_stop(), 0.01, "module b's stop")]
        >>> asyncio.run(demo())
        [True, False]
    """
    task = _task_named(work, what)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except BaseException:
        # the caller is cancelled: so is the work, given CLOSE_TIMEOUT_S as the cancel always was (not awaited for good)
        task.cancel()
        try:
            await asyncio.wait((task,), timeout=CLOSE_TIMEOUT_S)
        finally:
            let_go(task)  # also when a second cancel ends that wait: referenced until it ends, its failure retrieved
        raise
    if done:
        task.result()
        return True
    where = awaiting(task)
    task.cancel()
    try:
        await asyncio.wait((task,), timeout=CLOSE_TIMEOUT_S)
    finally:
        ended = task.done()
        let_go(task)  # referenced until it ends (nothing if it did); its late failure is retrieved there
        (logger or log).warning(
            "%s did not end within %g s%s; cancelled, %s", what, timeout, f" (waiting in {where})" if where else "",
            "it ended after the cancel" if ended else f"still running {CLOSE_TIMEOUT_S:g} s after it: let go")
    return False


async def close_store(close: Awaitable[Any], what: str) -> None:
    """Await a store's ``close`` for at most :data:`STORE_CLOSE_TIMEOUT_S`; past it the close is cancelled and let
    go with a warning naming ``what``. A close that fails in time raises its error. Inside
    :meth:`StoreCloses.collecting` (an engine's stop) the close is started and handed to that stop, which waits for
    it with the other stores' closes, and this returns at once.

    Example (a memory store closes at once)::

        await close_store(MemoryStream().aclose(), "the stream module's store")
    """
    closes = _STOPPING.get()
    if closes is not None and closes.take(close, what):
        return
    await finish_within(close, STORE_CLOSE_TIMEOUT_S, what, log)


class StoreCloses:
    """The store closes of one engine stop. Each starts as soon as its module reaches it (after the module stopped
    taking work, as before), so they run side by side; :meth:`wait` then gives them all ONE deadline,
    :data:`STORE_CLOSE_TIMEOUT_S` from its call. Every close thus gets at least the whole bound (a healthy store
    next to silent ones flushes its acknowledged writes), and any number of silent stores hold the stop for one
    bound, not one each.

    Example (a memory store closes at once)::

        closes = StoreCloses()
        with closes.collecting():
            await close_store(MemoryStream().aclose(), "the stream module's store")  # started, not awaited
        await closes.wait()
    """

    def __init__(self) -> None:
        self._closes: list[tuple[asyncio.Future[Any], str]] = []
        self._taking = True

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """While inside, :func:`close_store` in this context (and tasks started from it) hands its close here."""
        token = _STOPPING.set(self)
        try:
            yield
        finally:
            _STOPPING.reset(token)

    def take(self, close: Awaitable[Any], what: str) -> bool:
        """Start ``close`` now and keep it for :meth:`wait`; ``False`` once the wait began (the caller then waits
        for it itself)."""
        if not self._taking:
            return False
        task = _task_named(close, what)
        self._closes.append((task, what))
        return True

    async def wait(self) -> None:
        """Wait for every close taken, all under one deadline :data:`STORE_CLOSE_TIMEOUT_S` from now; those still
        running then are cancelled and let go with a warning naming each. A close that failed is logged with its
        error. Cancelled, it lets every close go."""
        self._taking = False
        closes, self._closes = self._closes, []
        if not closes:
            return
        bound = STORE_CLOSE_TIMEOUT_S
        try:
            # each close's own finish_within, all started together: one shared deadline
            ended = await asyncio.gather(*(finish_within(task, bound, what, log) for task, what in closes),
                                         return_exceptions=True)
        except BaseException:
            self._let_go(closes)  # gather cancelled them already; a close not yet handed to finish_within too
            raise
        for (_, what), outcome in zip(closes, ended, strict=True):
            if isinstance(outcome, BaseException):
                log.error("%s failed to close: %r", what, outcome, exc_info=outcome)

    def let_go(self) -> None:
        """Cancel every close taken and let it go (a stop that ends before its :meth:`wait`, by an error or a
        cancel): each stays referenced until it ends."""
        self._taking = False
        closes, self._closes = self._closes, []
        self._let_go(closes)

    @staticmethod
    def _let_go(closes: list[tuple[asyncio.Future[Any], str]]) -> None:
        for task, _ in closes:
            let_go(task)
