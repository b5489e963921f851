"""Every example in iii_channels shows a result, so the doctest run checks something.

An example that only defines a coroutine passes the doctest run without running a line of it: a broken call in
it would go unnoticed. An example with no expected output at all is such a one (or checks nothing either way).
"""

from __future__ import annotations

import doctest

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
