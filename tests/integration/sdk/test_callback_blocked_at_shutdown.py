"""A callback (``on_functions_available``, ``on_registrations_ready``) that never returns: ``shutdown()`` names it in a
warning, and the process exits all the same (attack on registrations, F8).

Before: the callbacks ran on the handler threads, which the interpreter joins at exit: after ``shutdown()`` returned,
without a word, the process hung for good. (The reference SDK runs them on its loop: a blocked one stops the whole
client there, ``list_functions()`` and ``shutdown()`` included; its loop thread is a daemon.)
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading

import pytest

from iii import InitOptions
from iii.iii import III
from iii.iii_types import FunctionInfo

# A client whose engine never answers (nothing listens: it keeps connecting); its functions-available callback blocks
# for good once called.
_SCRIPT = textwrap.dedent("""
    import threading
    from iii import InitOptions
    from iii.iii import III

    client = III("ws://127.0.0.1:1", InitOptions(worker_name="blocked"))
    entered = threading.Event()

    def stuck_for_good(functions):
        entered.set()
        threading.Event().wait()

    client._functions_available.add(stuck_for_good)
    client._queue_functions_available([])
    assert entered.wait(5)
    client.shutdown()
    print("shutdown returned", flush=True)
""")


def test_the_process_exits_after_shutdown_with_a_callback_blocked_for_good() -> None:
    try:
        done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired as exc:  # before: shutdown returned, then the exit waited for the callback
        pytest.fail(f"the process did not exit: {exc.stdout!r} {exc.stderr!r}")
    assert done.returncode == 0, done.stderr
    assert "shutdown returned" in done.stdout
    assert "functions-available callback __main__.stuck_for_good still running" in done.stderr


def test_shutdown_names_the_callback_still_running_and_calls_no_more(caplog: pytest.LogCaptureFixture) -> None:
    client = III("ws://127.0.0.1:1", InitOptions(worker_name="named"))
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow(functions: list[FunctionInfo]) -> None:
        calls.append(len(functions))
        entered.set()
        release.wait(10)

    try:
        client._functions_available.add(slow)
        client._queue_functions_available([])
        assert entered.wait(5)
        client._queue_functions_available([FunctionInfo(function_id="f")])  # waits behind the running call
        with caplog.at_level(logging.WARNING, logger="iii.callback_set"):
            client.shutdown()
        # before: nothing said
        assert any("functions-available callback" in r.getMessage() and "slow still running" in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
    finally:
        release.set()
    client._queue_functions_available([FunctionInfo(function_id="g")])  # after shutdown: no call
    threads = [t for t in threading.enumerate() if t.name == "iii functions-available callbacks"]
    for thread in threads:
        assert thread.daemon
        thread.join(5)  # the running call ends, and its thread with it: the waiting call was dropped
    assert calls == [0]


def test_a_callback_shutting_its_client_down_is_not_named(caplog: pytest.LogCaptureFixture) -> None:
    client = III("ws://127.0.0.1:1", InitOptions(worker_name="self"))
    done = threading.Event()

    def shuts_down() -> None:
        client.shutdown()
        done.set()

    client._registrations_ready.add(shuts_down)
    with caplog.at_level(logging.WARNING, logger="iii.callback_set"):
        client._registrations_ready.push()
        assert done.wait(10)
    assert not [r for r in caplog.records if "still running" in r.getMessage()]
