"""Sync handler chains on a :class:`~iii.handler_threads.HandlerThreads` pool, without an engine: each level submits
the next and waits for it inside :func:`~iii.handler_threads.blocked`, as a sync handler blocked in ``trigger`` does.

Example::

    assert nested_chain(HandlerThreads(limit=2, max_threads=16), 10, wait_s=5, outer_s=25) == 10
"""

from __future__ import annotations

from concurrent.futures import Future

from iii.handler_threads import HandlerThreads, blocked


def nested_chain(pool: HandlerThreads, depth: int, wait_s: float, outer_s: float) -> int:
    """Run a chain ``depth`` levels deep on ``pool``: ``depth`` when it finishes; a level waits ``wait_s`` for the
    next, the caller ``outer_s`` for the whole (``TimeoutError`` past either)."""
    def level(n: int) -> int:
        if n == 0:
            return 0
        inner: Future[int] = pool.submit(level, n - 1)
        with blocked():
            return inner.result(wait_s) + 1

    return pool.submit(level, depth).result(outer_s)
