"""The parts a worker's exit relies on: the interpreter-exit hook is there on the Pythons we support (an upgrade that
takes it away fails here; the fallback is tested in tests/integration/sdk/test_exit_sync_handler_running.py), the
handler threads tell their ``on_exit`` once, and a runner that refuses new sync runs answers each with an error and
no log line of its own."""

from __future__ import annotations

import logging
import threading

import pytest

from iii import handler_threads
from iii.handler_runner import HandlerRunner
from iii.handler_threads import HandlerThreads
from iii.trace_scope import TraceScope


def test_the_interpreter_exit_hook_is_there() -> None:
    assert handler_threads.EXIT_HOOK_MISSING == ()


def test_on_exit_is_called_once_and_not_after_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    told: list[int] = []

    def fails() -> None:
        told.append(threading.get_ident())
        raise ValueError("on_exit broke")

    pool = HandlerThreads(limit=1, on_exit=fails)
    with caplog.at_level(logging.ERROR, logger="iii.handler_threads"):
        pool.exiting()
        pool.exiting()
    assert told == [threading.get_ident()]
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] and "on_exit failed" in caplog.records[0].getMessage()
    pool.shutdown()

    later: list[int] = []
    closed = HandlerThreads(limit=1, on_exit=lambda: later.append(1))
    closed.shutdown()
    with pytest.raises(RuntimeError):  # our own shutdown's refusal: not the interpreter's exit
        closed.submit(sum, [1])
    closed.exiting()
    assert later == [] and closed.closing


async def test_a_refusing_runner_answers_sync_runs_with_an_error_and_no_line(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[int] = []
    runner = HandlerRunner("ws://127.0.0.1:1")
    runner.add("w::sync", lambda data: ran.append(data))

    async def double(data: int) -> int:
        return data * 2

    runner.add("w::async", double)
    try:
        runner.refuse("the interpreter is exiting")
        with caplog.at_level(logging.DEBUG, logger="iii.handler_runner"):
            result, error, _ = await runner.run("w::sync", 1, None, None, TraceScope(None))
            assert await runner.run("w::async", 21, None, None, TraceScope(None)) == (42, None, None)
        assert result is None and error is not None and ran == []
        assert error["code"] == "invocation_failed"
        assert error["message"] == ("the worker is shutting down (the interpreter is exiting): its sync handlers "
                                    "take no new runs")
        assert not caplog.records
    finally:
        runner.close()


async def test_a_run_refused_by_shut_down_threads_is_answered_without_a_line(
        caplog: pytest.LogCaptureFixture) -> None:
    runner = HandlerRunner("ws://127.0.0.1:1")
    runner.add("w::sync", lambda data: data)
    runner.threads.shutdown()
    with caplog.at_level(logging.DEBUG, logger="iii.handler_runner"):
        _, error, _ = await runner.run("w::sync", 1, None, None, TraceScope(None))
    assert error is not None and "(the client was shut down)" in error["message"]
    assert not caplog.records
    runner.close()
