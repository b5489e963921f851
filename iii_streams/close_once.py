"""A close that runs once, however many callers ask for it and whenever they do.

The stores' ``aclose`` (``RedisStream``, ``SQLStream``) promise that a call while a close is under way returns once
that close ended, not at once: a caller that then removes the database file, drops the schema or ends its event loop
must not do it under the first close's last writes and its pools.

Example:
    >>> import asyncio
    >>> async def demo() -> tuple[int, bool]:
    ...     once, runs = CloseOnce(), []
    ...     async def close() -> None:
    ...         runs.append(1)
    ...         await asyncio.sleep(0.01)
    ...     await asyncio.gather(once.run(close), once.run(close))  # the second waits for the first's close
    ...     await once.run(close)  # and a later one returns at once
    ...     return len(runs), once.closed
    >>> asyncio.run(demo())
    (1, True)
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable

__all__ = ["CloseOnce"]


class CloseOnce:
    """Runs the first :meth:`run`'s ``close``; every other call returns once that close ended.

    How the close ended does not matter to the other callers: when it raised, the error is its caller's (the others
    return, as they do after it succeeded: it is not run again, so a failure is not repeated on every shutdown
    path); when its caller was cancelled (a deadline of the engine's, a Ctrl-C), the others waiting for it return
    too. Running it again for them would put a whole close's bounds (seconds on a silent server) behind a deadline
    that already ran out. A call made after such a cut-off close ended runs ``close`` again, to finish what the
    first did not reach (its pools), so ``close`` must be safe to run again: the parts it already closed end at
    once; only on the cut-off close's own loop (the pools belong to it: run from another, the close failed with
    "Event loop is closed" or "attached to a different loop"), a call from another loop returns at once. A call
    never waits for good behind a close that will not end.

    The close belongs to the event loop of its first call: a call from another loop while it is under way raises
    ``RuntimeError`` (it waited on an ``asyncio.Event`` that the close's thread sets without waking that loop: until
    its own timeout, or for good); after it ended, a call from any loop returns at once.

    Example:
        >>> import asyncio
        >>> async def demo() -> tuple[bool, bool, bool]:
        ...     once = CloseOnce()
        ...     async def close() -> None:
        ...         assert once.closing and not once.closed  # closing from the first call on
        ...     before = once.closing
        ...     await once.run(close)
        ...     return before, once.closing, once.closed
        >>> asyncio.run(demo())
        (False, True, True)
    """

    __slots__ = ("_cut_off", "_ended", "_loop")

    def __init__(self) -> None:
        self._ended: asyncio.Event | None = None  # made by the run under way (or the last); set once its close ended
        self._loop: asyncio.AbstractEventLoop | None = None  # the running close's, while it is under way
        # the loop of the last close, when it ended cancelled: the next call there runs it again
        self._cut_off: weakref.ref[asyncio.AbstractEventLoop] | None = None

    @property
    def closing(self) -> bool:
        """A close began (it may have ended since): the owner refuses new work from then on.

        Example:
            >>> CloseOnce().closing
            False
        """
        return self._ended is not None

    @property
    def closed(self) -> bool:
        """The close ended: it returned, raised or was cancelled (until a later call runs a cut-off one again).

        Example:
            >>> CloseOnce().closed
            False
        """
        return self._ended is not None and self._ended.is_set()

    async def run(self, close: Callable[[], Awaitable[None]]) -> None:
        """Await ``close()`` on the first call; on any other, return once that close ended, except that a call after
        a close whose caller was cancelled runs ``close()`` again (which the calls during it wait for).

        ``close`` is a function, called by the run that closes alone, so a waiting call leaves no coroutine never
        awaited.

        Example:
            >>> import asyncio
            >>> async def demo() -> None:
            ...     once = CloseOnce()
            ...     async def failing() -> None:
            ...         raise OSError("the pool's close failed")
            ...     first, second = await asyncio.gather(once.run(failing), once.run(failing),
            ...                                          return_exceptions=True)
            ...     print(repr(first), second)
            >>> asyncio.run(demo())
            OSError("the pool's close failed") None
        """
        ended = self._ended
        cut_off = self._cut_off
        again = cut_off is not None and cut_off() is asyncio.get_running_loop()
        if ended is not None and not (ended.is_set() and again):
            if not ended.is_set():
                if asyncio.get_running_loop() is not self._loop:
                    raise RuntimeError("a close under way on another event loop cannot be waited for here: close "
                                       "it on the loop it belongs to")
                await ended.wait()
            return
        self._loop = asyncio.get_running_loop()
        self._ended = ended = asyncio.Event()
        self._cut_off = None
        try:
            await close()
        except asyncio.CancelledError:
            self._cut_off = weakref.ref(self._loop)
            raise
        finally:
            self._loop = None  # a closed loop is not kept alive by a closed store
            ended.set()
