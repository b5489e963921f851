"""A handler thread that cannot start (``RuntimeError: can't start new thread``: a process at its thread or memory
limit) is not the interpreter's exit: the pool does not call its ``on_exit`` (a client's: it shut the whole worker
down for good), and the run's caller gets that error, logged, not "the interpreter is exiting" with no line.

The limit itself cannot be reached safely in a test: ``Thread.start`` raises as it does there."""

from __future__ import annotations

import logging
import threading
from typing import NoReturn

import pytest

from iii.handler_runner import HandlerRunner
from iii.handler_threads import HandlerThreads
from iii.trace_scope import TraceScope


def _cannot_start(self: threading.Thread) -> NoReturn:
    raise RuntimeError("can't start new thread")


def test_a_thread_that_cannot_start_is_not_the_interpreters_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    told: list[int] = []
    ran: list[str] = []
    pool = HandlerThreads(limit=1, on_exit=lambda: told.append(1))
    try:
        with monkeypatch.context() as patched:
            patched.setattr(threading.Thread, "start", _cannot_start)
            with pytest.raises(RuntimeError, match="can't start new thread"):
                pool.submit(ran.append, "refused run")
        assert told == []
        assert pool.submit(sum, [1, 2]).result(5) == 3  # once threads start again, it serves on
        assert pool.submit(ran.append, "next run").result(5) is None
        # the refused run stays refused: its caller was told (before, the next free thread ran it too)
        assert ran == ["next run"]
    finally:
        pool.shutdown()


async def test_a_sync_run_whose_thread_cannot_start_says_so(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    runner = HandlerRunner("ws://127.0.0.1:1", on_exit=lambda: None)
    runner.add("w::sync", lambda data: data + 1)
    try:
        with monkeypatch.context() as patched, caplog.at_level(logging.ERROR, logger="iii.handler_runner"):
            patched.setattr(threading.Thread, "start", _cannot_start)
            _, error, _ = await runner.run("w::sync", 1, None, None, TraceScope(None))
        assert error is not None and "can't start new thread" in error["message"], error
        assert [r for r in caplog.records if "w::sync" in r.getMessage()], caplog.text
        assert await runner.run("w::sync", 1, None, None, TraceScope(None)) == (2, None, None)
    finally:
        runner.close()
