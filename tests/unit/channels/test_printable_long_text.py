"""``printable`` of long text: the same escapes, at a cost that grows with the text, not a string a character; and
what ``iii-channel`` prints of a peer's text is cut before it is escaped.

Before: ``printable`` built a string per character (10,000,000 control characters: 1.8-6 s and 780-840 MB); it had no
``limit``, so ``_say``, the SDK's log lines and a progress bar's label printed a peer's text whole (a line of
megabytes, escaped to four or six times that).
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import re

import pytest

from iii_channels import cli
from iii_channels.progress import ProgressBar, printable

CUT = re.compile(r"…\((\d+) more characters\)…")


def _reference(text: str) -> str:
    """The escapes printable gives, a character at a time."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def test_every_code_point_is_escaped_as_its_repr_escape() -> None:
    every = "".join(map(chr, range(0x110000)))
    assert printable(every) == _reference(every)


def test_long_mixed_text_matches_the_reference() -> None:
    pieces = ["a", "é", "文", "\x1b", "\n", "\x9b", "\u202e", "\u2028", "\udc9b", "\U000e0001", "\\", " ", "x" * 300]
    rng = random.Random(7)
    for _ in range(50):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 2000)))
        assert printable(text) == _reference(text)
    clean = "x" * 10_000
    assert printable(clean) is clean


def test_a_limit_keeps_the_head_and_the_tail_and_counts_the_rest() -> None:
    text = "\x1b[2J" + "文" * 10_000 + "\u202e.exe"
    shown = printable(text, 300)
    head, more, tail = CUT.split(shown)
    assert head == printable(text[:200]) and tail == printable(text[-100:]) and tail.endswith("\\u202e.exe")
    assert int(more) == len(text) - 300
    assert printable(text, len(text)) == printable(text)  # not longer than the limit: whole
    assert printable("abc", 0) == "…(3 more characters)…"
    with pytest.raises(ValueError, match="limit must be at least 0, got -1"):
        printable("abc", -1)


def test_say_cuts_a_long_line_before_escaping_it() -> None:
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        cli._say("iii-channel: error: f failed: " + "\x1b" * 1_000_000 + " end")
    line = said.getvalue()
    assert line.count("\n") == 1 and len(line) < cli._SAID_CHARS * 4 + 50, len(line)
    assert line.startswith("iii-channel: error: f failed: \\x1b") and line.endswith("\\x1b end\n")
    assert "\x1b" not in line and CUT.search(line) is not None


def test_the_sdks_log_lines_are_cut_too() -> None:
    record = logging.LogRecord("iii.handler_runner", logging.ERROR, __file__, 1, "Error in handler %s: %s",
                               ("f", "\u202e" * 100_000), None)
    line = cli._PrintableLog().format(record)
    assert len(line) < cli._SAID_CHARS * 6 + 50 and "\u202e" not in line and CUT.search(line) is not None


def test_a_progress_bars_long_label_is_cut_keeping_its_end() -> None:
    out = io.StringIO()
    bar = ProgressBar(label="\x1b" * 100_000 + ".iso", stream=out, interval=0, tty=False)
    bar(1, 2)
    bar.close()
    first = out.getvalue().splitlines()[0]
    assert len(first) < 120 * 4 + 100 and "\\x1b.iso [" in first and CUT.search(first) is not None, first
