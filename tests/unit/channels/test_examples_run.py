"""Every example in iii_channels shows a result, so the doctest run checks something; and leaves no thread behind.

An example that only defines a coroutine passes the doctest run without running a line of it: a broken call in
it would go unnoticed. An example with no expected output at all is such a one (or checks nothing either way).
An example is also what a reader copies: one that leaves a client's loop thread running teaches a leak.
"""

from __future__ import annotations

import doctest
import threading
import time

from tests.docs.test_examples_present import public_modules


def examples_without_output() -> list[str]:
    """Names of the iii_channels docstrings whose ``>>>`` examples expect no output anywhere."""
    finder = doctest.DocTestFinder()
    silent = set()
    for module in public_modules("iii_channels"):
        for test in finder.find(module):
            if test.examples and not any(example.want for example in test.examples):
                silent.add(test.name)
    return sorted(silent)


def test_walk_finds_the_examples() -> None:
    # Guards the walk: a finder that saw nothing would pass the test below vacuously.
    finder = doctest.DocTestFinder()
    names = {test.name for module in public_modules("iii_channels") for test in finder.find(module) if test.examples}
    assert {"iii_channels", "iii_channels.sink", "iii_channels.source.ChannelSource.items"} <= names
    assert len(names) > 50


def test_every_example_shows_a_result() -> None:
    silent = examples_without_output()
    assert not silent, f"examples that define code but never run it: {silent}"


def test_examples_leave_no_thread_running() -> None:
    before = set(threading.enumerate())
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for module in public_modules("iii_channels"):
        for test in finder.find(module):
            runner.run(test, out=report.append)
    assert runner.tries > 100 and runner.failures == 0, "".join(report)
    # a client's pools are shut down without waiting: their idle threads end just after, so wait (bounded)
    deadline = time.monotonic() + 5.0
    started = [t for t in threading.enumerate() if t not in before]
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = sorted(t.name for t in started if t.is_alive())
    assert left == [], f"threads the examples left running: {left}"
