"""A process forked while another of its threads made or shut down a client (the lock of the pools the exit hook
tells held at that moment) exits all the same: the child inherits the hook, and a copy of that lock held by a thread
the child does not have held its exit for ever (multiprocessing's fork children run the hook as they end too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[3])

FORKS = """
import os, select, signal, sys, threading
from iii import handler_threads
pool = handler_threads.HandlerThreads(limit=1, on_exit=lambda: None)  # (the hook is registered)
holding, done = threading.Event(), threading.Event()
def hold():
    with handler_threads._watched_lock:  # as a client made or shut down on this thread holds it, briefly
        holding.set()
        done.wait(10)
threading.Thread(target=hold).start()
holding.wait(10)
pid = os.fork()
if pid == 0:
    sys.exit(3)  # the child's exit runs the hook
done.set()
if not select.select([os.pidfd_open(pid)], [], [], 10)[0]:  # (a hung child is not left behind)
    os.kill(pid, signal.SIGKILL)
    print("CHILD HUNG", flush=True)
_, status = os.waitpid(pid, 0)
print("CHILD", os.waitstatus_to_exitcode(status), flush=True)
pool.shutdown()
"""


def test_a_child_forked_while_the_pools_lock_was_held_exits() -> None:
    done = subprocess.run([sys.executable, "-c", FORKS], env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                          text=True, timeout=20)
    assert done.stdout.splitlines() == ["CHILD 3"], done.stdout + done.stderr
