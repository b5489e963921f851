"""Attack A-S2: the registration book is written from the caller's threads while the loop reads it.

``register_function`` and ``register_trigger`` change the :class:`ClientSession` book on the caller's thread; the
loop reads it for the replay on every new connection and for the T7 recovery. A read that walked the live dict in
Python code raised "dictionary changed size during iteration" when a thread registered meanwhile; raised in the
replay it ended the connection's supervisor, and the client stayed disconnected for good.
"""

from __future__ import annotations

import gc
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iii.iii_types import RegisterFunctionMessage
from iii.protocol.client import ClientSession


def _read_while_registering(session: ClientSession, read: Callable[[], Any], rounds: int = 40) -> None:
    """Call ``read()`` ``rounds`` times while another thread registers functions and triggers without pause."""
    stop = threading.Event()

    def register() -> None:
        triggers: deque[str] = deque()
        for n in _churn(session, stop):
            triggers.append(session.register_trigger("cron", f"late{n}", {"expression": "* * * * * *"})[0])
            if len(triggers) > _LATE:
                session.unregister_trigger(triggers.popleft(), "cron")

    writer = threading.Thread(target=register, daemon=True)
    writer.start()
    try:
        for _ in range(rounds):
            read()  # raised RuntimeError: dictionary changed size during iteration
    finally:
        stop.set()
        writer.join(10)


_LATE = 500
"""Late registrations live at once: the writer keeps the book's size changing without growing it, so every read
walks about the same book (before, an unbounded writer grew it for as long as the reads took, and on a loaded
machine each read took longer than the one before it: over 30 s)."""


def _churn(session: ClientSession, stop: threading.Event) -> Iterator[int]:
    """Register ``late<n>`` functions without pause until ``stop``, dropping the oldest past :data:`_LATE`; yields
    each ``n`` just registered."""
    n = 0
    while not stop.is_set():
        session.register_function(RegisterFunctionMessage(id=f"late{n}"), invokable=True)
        yield n
        if n >= _LATE:
            session.unregister_function(f"late{n - _LATE}")
        n += 1


def _book(functions: int) -> ClientSession:
    session = ClientSession()
    for n in range(functions):
        session.register_function(RegisterFunctionMessage(id=f"f{n}"), invokable=True)
        session.register_trigger("cron", f"f{n}", {"expression": "* * * * * *"})
    return session


@pytest.mark.usefixtures("fast_switching")
def test_the_replay_reads_the_book_while_threads_register() -> None:
    session = _book(1000)
    _read_while_registering(session, session.connection_opened)
    replay = session.replay()
    assert sum('"registerfunction"' in frame for frame in replay) >= 1000


@pytest.mark.usefixtures("fast_switching")
def test_the_recovery_reads_the_book_while_threads_register() -> None:
    session = _book(1000)
    _read_while_registering(session, lambda: (session.missing_functions([]), session.missing_triggers([])))
    assert len(session.missing_functions(["f0"])) == len(session.missing_functions([])) - 1


class _Cycle:
    """Garbage the collector must find, with a finaliser: Python code it runs where a collection happens."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        sum(range(50))


@pytest.mark.usefixtures("fast_switching")
def test_the_recovery_reads_the_book_whole_even_when_a_collection_runs_python_code_midway() -> None:
    # The floors run of CI caught this: list(d.items()) makes a tuple per entry, a collection can start there and
    # run a finaliser, and the thread that registers runs in the middle of the walk. dict.copy() allocates no
    # tracked object per entry. Before: RuntimeError in about 286 of 300 reads.
    session = _book(1000)
    stop = threading.Event()

    def register() -> None:
        for _ in _churn(session, stop):
            _Cycle()

    writer = threading.Thread(target=register, daemon=True)
    threshold = gc.get_threshold()
    gc.set_threshold(50)
    writer.start()
    try:
        for _ in range(300):
            session.missing_functions([])
            session.missing_triggers([])
    finally:
        stop.set()
        writer.join(10)
        gc.set_threshold(*threshold)
