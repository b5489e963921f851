"""Void calls of functions no worker serves yet, held for a grace period (the engine's ``void_grace_ms``).

After an engine restart every worker reconnects on its own jittered backoff, so a caller's backlog of void calls may
arrive before its callee's worker has registered again; production drops such calls without a word (an attack: 858 of
904 lost after a 15 s outage with a grace of 10 s, every one with none). The engine holds them here, in arrival order,
until a worker registers the function (then they are routed in that order, the caller's newer void calls of the
function going behind them) or the grace ends (then they are dropped, counted and logged by the caller of this
module).

Held calls are bounded apart from a worker's calls in flight, so a worker calling a function that will never come
cannot hold back its other calls: at most :data:`MAX_HELD_PER_WORKER` calls and :data:`MAX_HELD_BYTES_PER_WORKER`
bytes per worker connection, :data:`MAX_HELD_BYTES` bytes in all; past any, a call is not held (the engine drops it,
counted, as production does). A caller that disconnects has its held calls dropped at once.

Example:
    >>> import asyncio
    >>> from types import SimpleNamespace
    >>> async def demo() -> list[str]:
    ...     routed, dropped = [], []
    ...     caller = SimpleNamespace(id="w1")
    ...     held = HeldVoids(1000, route=lambda c, msg, size: routed.append(msg["function_id"]),
    ...                      drop=lambda c, f: dropped.append(f), connected=lambda c: True, served=lambda f: True)
    ...     held.hold(caller, {"function_id": "late::fn"}, 10)
    ...     held.registered("late::fn")
    ...     await asyncio.sleep(0)  # (the release runs in a task of its own)
    ...     return routed
    >>> asyncio.run(demo())
    ['late::fn']
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, Final

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.wire import dumps, loads

from .workers import frame_bytes

__all__ = ["MAX_HELD_BYTES", "MAX_HELD_BYTES_PER_WORKER", "MAX_HELD_PER_WORKER", "HeldVoids"]

MAX_HELD_PER_WORKER: Final = 10_000
"""Void calls one worker connection may have held at once (an SDK's outbound queue, whose backlog this is for, holds
fewer)."""
MAX_HELD_BYTES_PER_WORKER: Final = 16 * 1024 * 1024
"""Frame bytes of the void calls one worker connection may have held at once."""
MAX_HELD_BYTES: Final = 256 * 1024 * 1024
"""Frame bytes of the void calls held at once, all workers together."""


Route = Callable[[Any, dict[str, Any], int], Coroutine[Any, Any, None] | None]


class _Held:
    """One held call: its message as JSON text (parsed, a message of many small values takes up to 24 times its
    text), from its caller, until ``deadline`` (the loop's time; ``None``: held behind a release, no grace)."""

    __slots__ = ("caller", "deadline", "function_id", "size", "text")

    def __init__(self, caller: Any, text: str, size: int, function_id: str, deadline: float | None) -> None:
        self.caller = caller
        self.text = text
        self.size = size
        self.function_id = function_id
        self.deadline = deadline


class HeldVoids:
    """The held void calls of one engine (see the module docstring). Loop thread only.

    ``route(caller, msg, size)`` routes a call as the engine's reader would (a coroutine to await while the callee's
    queue has no room, else ``None``); ``drop(caller, function_id)`` counts and logs one call dropped;
    ``connected(caller)`` tells whether that connection is still the worker's; ``served(function_id)`` whether a
    connected worker serves the function now.
    """

    def __init__(self, grace_ms: int, *, route: Route, drop: Callable[[Any, str], object],
                 connected: Callable[[Any], bool], served: Callable[[str], bool]) -> None:
        self.grace_ms = grace_ms
        self._route = route
        self._drop = drop
        self._connected = connected
        self._served = served
        # insertion-ordered sets; _order: the calls with a deadline, whose arrival order is deadline order (one
        # grace for all)
        self._order: dict[_Held, None] = {}
        self._by_function: dict[str, dict[_Held, None]] = {}
        self._by_caller: dict[int, dict[_Held, None]] = {}  # by id() of the connection object
        self._caller_bytes: dict[int, int] = {}
        self.bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._releasing: dict[str, asyncio.Task[None]] = {}  # function -> the task routing its held calls
        self._routing = False  # a release is routing one of them (route() must not hold it again behind itself)
        # (function, id() of a caller) -> that caller's calls of the function held or being routed by a release: only
        # such a caller's newer calls go behind the release (another caller's are routed as usual, so a callee that
        # stops reading holds back only the callers whose calls it already holds, as without holds)
        self._pending: dict[tuple[str, int], int] = {}

    def __len__(self) -> int:
        return sum(map(len, self._by_function.values()))

    def releasing(self, function_id: str, caller: Any) -> bool:
        """Whether ``caller``'s void call of ``function_id`` must go behind its calls held for it, whose release is
        under way: then :meth:`hold` it rather than route it."""
        return (not self._routing and function_id in self._releasing
                and (function_id, id(caller)) in self._pending)

    def hold(self, caller: Any, msg: dict[str, Any], size: int, *, behind: bool = False) -> bool:
        """Hold a void call of ``msg["function_id"]`` (a frame of ``size`` bytes) from ``caller``; ``False`` when it
        is not held: no grace, or over a bound. ``behind``: the function is served and its held calls are being
        routed (:meth:`releasing`): this one waits its turn with no grace (it is not dropped for a slow callee)."""
        if self.grace_ms <= 0:
            return False
        text = dumps(msg)
        size = max(size, frame_bytes(text))
        key = id(caller)
        mine = self._by_caller.get(key)
        used = self._caller_bytes.get(key, 0)
        if ((mine is not None and len(mine) >= MAX_HELD_PER_WORKER) or used + size > MAX_HELD_BYTES_PER_WORKER
                or self.bytes + size > MAX_HELD_BYTES):
            return False
        function_id: str = msg["function_id"]
        held = _Held(caller, text, size, function_id, None if behind else self._deadline())
        self._count(function_id, key, 1)
        self._by_function.setdefault(function_id, {})[held] = None
        self._by_caller.setdefault(key, {})[held] = None
        self._caller_bytes[key] = used + size
        self.bytes += size
        if not behind:
            self._start_grace(held)
        return True

    async def released(self, function_id: str) -> None:
        """Wait until the release of ``function_id``'s held calls under way (if any) has ended."""
        task = self._releasing.get(function_id)
        if task is not None:
            await asyncio.shield(task)

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.grace_ms / 1000

    def _start_grace(self, held: _Held) -> None:
        if held.deadline is None:
            held.deadline = self._deadline()
        self._order[held] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(held.deadline, self._expire)

    def registered(self, function_id: str) -> None:
        """A worker registered ``function_id``: route the calls held for it, in order, in a task of its own (one
        waiting for room in the callee's queue must not stop the registering worker's reader); the caller's newer
        void calls of it wait behind them meanwhile (:meth:`releasing`)."""
        waiting = self._by_function.get(function_id)
        if waiting and function_id not in self._releasing:
            for held in waiting:  # served now: they wait their turn, no longer a grace (a slow callee outlasted it)
                self._order.pop(held, None)
                held.deadline = None
            self._releasing[function_id] = asyncio.get_running_loop().create_task(
                self._release(function_id), name=f"held voids of {function_id:.100}")

    def caller_left(self, caller: Any) -> None:
        """``caller``'s connection is gone: its held calls are dropped (a caller's disconnect stops its calls)."""
        for held in list(self._by_caller.get(id(caller), ())):
            self._forget(held)
            self._drop(held.caller, held.function_id)

    async def close(self) -> None:
        """Stop: cancel the releases under way and drop every call still held."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        releases = list(self._releasing.values())
        for task in releases:
            task.cancel()
        for task in releases:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for waiting in list(self._by_function.values()):
            for held in list(waiting):
                self._forget(held)
                self._drop(held.caller, held.function_id)

    async def _release(self, function_id: str) -> None:
        try:
            while self._served(function_id):
                waiting = self._by_function.get(function_id)
                if not waiting:
                    return
                held = next(iter(waiting))
                key = id(held.caller)
                self._count(function_id, key, 1)  # until routed: the caller's next call stays behind this one
                self._forget(held)
                try:
                    if not self._connected(held.caller):
                        self._drop(held.caller, function_id)
                        continue
                    # route() runs its checks and takes the caller's count at once; one that finds the function gone
                    # again holds it anew (then this loop ends: not served)
                    self._routing = True
                    try:
                        routed = self._route(held.caller, loads(held.text), held.size)
                    finally:
                        self._routing = False
                    if routed is not None:
                        await routed
                finally:
                    self._count(function_id, key, -1)
            # no longer served (its worker left): the calls held behind the release wait for the next one, with
            # the grace the others have
            for held in list(self._by_function.get(function_id, ())):
                if held.deadline is None:
                    self._start_grace(held)
        finally:
            del self._releasing[function_id]

    def _count(self, function_id: str, caller_key: int, step: int) -> None:
        key = (function_id, caller_key)
        n = self._pending.get(key, 0) + step
        if n:
            self._pending[key] = n
        else:
            del self._pending[key]

    def _forget(self, held: _Held) -> None:
        self._count(held.function_id, id(held.caller), -1)
        self._order.pop(held, None)
        waiting = self._by_function[held.function_id]
        del waiting[held]
        if not waiting:
            del self._by_function[held.function_id]
        key = id(held.caller)
        mine = self._by_caller[key]
        del mine[held]
        left = self._caller_bytes[key] - held.size
        if mine:
            self._caller_bytes[key] = left
        else:
            del self._by_caller[key], self._caller_bytes[key]
        self.bytes -= held.size

    def _expire(self) -> None:
        """Drop the calls whose grace is over, and wait for the next one's."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._order:
            held = next(iter(self._order))
            assert held.deadline is not None  # (only calls with a grace are in _order)
            if held.deadline > now:
                self._timer = loop.call_at(held.deadline, self._expire)
                return
            self._forget(held)
            self._drop(held.caller, held.function_id)
