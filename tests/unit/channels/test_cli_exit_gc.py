"""``iii-channel`` run as its own process hides its imports from the garbage collector, so the interpreter's end
does not walk them: on a loaded machine that walk was most of the 0.5-2 s ``serve`` took to exit on SIGTERM."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import gc, sys
from iii_channels.cli import main
sys.argv = ["iii-channel", "send", "/nonexistent/x.bin", "--to", "f", "--engine", "ws://127.0.0.1:9"]
status = main()
print(status, gc.get_freeze_count(), len(gc.get_objects()))
"""


def test_the_console_script_freezes_what_its_imports_made() -> None:
    ran = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=20)
    status, frozen, tracked = (int(word) for word in ran.stdout.split())
    assert status == 1, ran.stderr
    # before: 0 frozen, every import's objects (~37,000) left for the collector's final passes
    assert frozen > 10 * tracked, (frozen, tracked)


def test_main_called_with_arguments_leaves_the_collector_alone() -> None:
    # a caller's own process (tests, an embedding program) keeps its collector as it was
    script = _SCRIPT.replace("status = main()", "status = main(sys.argv[1:])")
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    status, frozen, _ = (int(word) for word in ran.stdout.split())
    assert (status, frozen) == (1, 0), ran.stderr
