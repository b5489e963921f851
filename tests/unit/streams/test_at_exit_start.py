"""``iii.handler_threads.at_exit_start``: the one use of ``threading._register_atexit`` (the SDK's handler pools and
the SQL store's aiosqlite connections both go through it). Its callback runs as the exit starts, before the exit
joins a thread that is not a daemon; it says ``False`` where it cannot register (no such hook, the exit started).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from iii import handler_threads
from iii.handler_threads import at_exit_start

pytestmark = pytest.mark.timeout(30)

CHILD = textwrap.dedent("""
    import threading
    from iii.handler_threads import at_exit_start

    release = threading.Event()
    threading.Thread(target=lambda: (release.wait(), print("thread ended", flush=True))).start()  # not a daemon
    print("registered", at_exit_start(release.set), flush=True)
""")


def test_the_callback_runs_before_the_exit_joins_a_thread() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["registered True", "thread ended"]


def test_false_on_a_python_without_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler_threads, "EXIT_HOOK_MISSING", ("threading._register_atexit",))
    assert at_exit_start(lambda: None) is False


def test_false_once_the_exit_started(monkeypatch: pytest.MonkeyPatch) -> None:
    def exiting(_callback: object) -> None:
        raise RuntimeError("can't register atexit after shutdown")

    monkeypatch.setattr(threading, "_register_atexit", exiting, raising=False)
    assert at_exit_start(lambda: None) is False
