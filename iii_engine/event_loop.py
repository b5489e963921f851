"""Which asyncio event loop runs the engine: the standard one, or uvloop (the ``uvloop`` extra) by choice.

Nothing changes unless asked: ``asyncio`` is the default everywhere. Asking for ``uvloop`` without the package
installed raises :class:`EventLoopUnavailable` (one line naming the extra), never a silent fall-back to asyncio.

- :func:`run` is :func:`asyncio.run` with the loop chosen: the in-process way to put an ``Engine`` on uvloop
  (an ``Engine`` runs on its caller's loop, so the choice is made where the loop is made).
- :func:`use` makes every loop this process creates from now on the chosen one (``asyncio.run``, the SDK's own
  loop thread): for code that does not create its loop itself.
- ``iii-engine --event-loop uvloop`` does the same for the command line.

Example:
    >>> async def kind() -> str:
    ...     return type(asyncio.get_running_loop()).__module__.split(".")[0]
    >>> run(kind(), "asyncio")
    'asyncio'
    >>> run(kind(), "tokio")
    Traceback (most recent call last):
    ...
    ValueError: event loop must be asyncio or uvloop, got 'tokio'
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, Literal, TypeVar, get_args

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.errors import PicklesByState
from iii_streams.messages import needs_package

__all__ = ["DEFAULT_EVENT_LOOP", "EVENT_LOOPS", "EventLoopName", "EventLoopUnavailable", "loop_factory", "run",
           "use"]

T = TypeVar("T")
log = logging.getLogger(__name__)

#: The event loops the engine can run on.
EventLoopName = Literal["asyncio", "uvloop"]
EVENT_LOOPS: Final[tuple[str, ...]] = get_args(EventLoopName)
DEFAULT_EVENT_LOOP: Final = "asyncio"


class EventLoopUnavailable(PicklesByState, ModuleNotFoundError):
    """The chosen event loop's package is not installed; ``str()`` is one line naming the extra to install.

    Example:
        >>> str(EventLoopUnavailable("uvloop"))
        "the uvloop event loop needs the package 'uvloop': pip install 'iii-toolkit[uvloop]'"
    """

    def __init__(self, name: str) -> None:
        super().__init__(needs_package(f"the {name} event loop", name), name=name)


def _check(name: str) -> None:
    if name not in EVENT_LOOPS:
        raise ValueError(f"event loop must be {' or '.join(EVENT_LOOPS)}, got {name!r}")


def _uvloop() -> Any:
    try:
        return importlib.import_module("uvloop")
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "uvloop":
            raise  # uvloop is there but something it imports is not: not ours to reword
        raise EventLoopUnavailable("uvloop") from exc


def loop_factory(name: str = DEFAULT_EVENT_LOOP) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new loop of kind ``name`` (for :class:`asyncio.Runner`'s ``loop_factory``).

    Raises ``ValueError`` for an unknown name and :class:`EventLoopUnavailable` when its package is missing.
    """
    _check(name)
    if name == "uvloop":
        factory: Callable[[], asyncio.AbstractEventLoop] = _uvloop().new_event_loop
        return factory
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], event_loop: str = DEFAULT_EVENT_LOOP, *, debug: bool | None = None) -> T:
    """Run ``main`` to completion on a new loop of kind ``event_loop`` and close it, as :func:`asyncio.run` does.

    The choice is checked before ``main`` starts: an unknown name or a missing package closes ``main`` unstarted
    and raises (``ValueError`` / :class:`EventLoopUnavailable`).

    Example (an embedded engine on uvloop):
        >>> async def main() -> None:  # doctest: +SKIP
        ...     async with Engine(port=0) as engine:
        ...         ...
        >>> run(main(), "uvloop")  # doctest: +SKIP
    """
    try:
        factory = loop_factory(event_loop)
    except BaseException:
        main.close()  # never awaited: close it so no "coroutine was never awaited" warning follows the error
        raise
    runner = asyncio.Runner(debug=debug, loop_factory=factory)
    try:
        return runner.run(main)
    finally:
        loop = runner.get_loop()
        ended = _end_remaining_tasks(loop, EXIT_WAIT_S)
        # Runner.close closes the async generators main left open, and waits for any task, with no bound: a
        # generator's finally that never returns held the exit as a task ignoring its cancel did
        if not _wait_bounded(loop, loop.shutdown_asyncgens(), EXIT_WAIT_S):
            log.warning("the async generators left open did not close within %g s at exit and were left", EXIT_WAIT_S)
            ended = False
        if ended and not asyncio.all_tasks(loop):
            runner.close()
        else:
            loop.close()  # without the tasks left (named in the warning)


EXIT_WAIT_S: Final = 5.0
"""Seconds :func:`run` gives the tasks still running when ``main`` ends to finish after their cancel (and as much to
the async generators left open). Work already handed to a thread (``asyncio.to_thread``, ``run_in_executor``) is not
cut short: a thread cannot be cancelled, and the process exits once it returns."""


def _wait_bounded(loop: asyncio.AbstractEventLoop, aw: Coroutine[Any, Any, Any], seconds: float) -> bool:
    """Run ``aw`` on ``loop`` for at most ``seconds``; whether it ended."""
    task = loop.create_task(aw)
    loop.run_until_complete(asyncio.wait({task}, timeout=seconds))
    if not task.done():
        task.cancel()
        return False
    if not task.cancelled() and task.exception() is not None:
        loop.call_exception_handler({"message": "an exit step of the event loop failed", "exception": task.exception(),
                                     "task": task})
    return True


def _end_remaining_tasks(loop: asyncio.AbstractEventLoop, seconds: float) -> bool:
    """Cancel the tasks ``main`` left running and wait at most ``seconds`` for them: whether they all ended. A task
    that ignores its cancel (a store's close that never returns, say) is logged by name, not waited for: before, it
    kept the process from exiting after the engine had stopped."""
    cancelled: set[asyncio.Task[Any]] = set()
    deadline = loop.time() + seconds
    # again until none is left: a task ending on its cancel may start another (a bounded close's own task, a
    # finally's cleanup), which Runner.close would then wait for with no bound
    while (pending := asyncio.all_tasks(loop)) and (remaining := deadline - loop.time()) > 0:
        for task in pending - cancelled:
            task.cancel()
        cancelled |= pending
        loop.run_until_complete(asyncio.wait(pending, timeout=remaining))
    for task in cancelled:
        if task.done() and not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({"message": "a task failed while the event loop was closing",
                                         "exception": task.exception(), "task": task})
    left = [task for task in cancelled if not task.done()]
    if left:
        log.warning("%d task(s) did not end within %g s of their cancel at exit and were left: %s", len(left),
                    seconds, ", ".join(sorted(task.get_name() for task in left))[:1000])
    return not left


def use(name: str = DEFAULT_EVENT_LOOP) -> None:
    """Make every event loop this process creates from now on (``asyncio.run``, ``asyncio.new_event_loop``, the
    SDK's loop thread) of kind ``name``, by setting asyncio's event loop policy; loops already made are unchanged.

    Raises ``ValueError`` for an unknown name and :class:`EventLoopUnavailable` when its package is missing.
    """
    _check(name)
    policy = _uvloop().EventLoopPolicy() if name == "uvloop" else asyncio.DefaultEventLoopPolicy()
    asyncio.set_event_loop_policy(policy)
