"""``WarnOnce``: one warning per key and process, thread-safe, and recorded as the calling module's."""

from __future__ import annotations

import logging
import threading

import pytest

from iii.warn_once import WarnOnce


def test_each_key_is_said_once_however_many_threads_race(caplog: pytest.LogCaptureFixture) -> None:
    said = WarnOnce(logging.getLogger("demo.once"))
    start = threading.Barrier(16)

    def race() -> None:
        start.wait()
        for key in ("a", "b", "a", "c"):
            said(key, "missing %s", key)

    with caplog.at_level(logging.WARNING, "demo.once"):
        threads = [threading.Thread(target=race) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # (only demo.once's: a client another test left reconnecting in the background logs too, which failed CI once)
    said_lines = sorted(r.getMessage() for r in caplog.records if r.name == "demo.once")
    assert said_lines == ["missing a", "missing b", "missing c"]


def test_the_record_names_the_caller_not_the_helper(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "demo.caller"):
        WarnOnce(logging.getLogger("demo.caller"))("k", "said")
    (record,) = [r for r in caplog.records if r.name == "demo.caller"]
    assert record.filename == "test_warn_once.py"
    assert record.funcName == "test_the_record_names_the_caller_not_the_helper"
