"""Progress reporting: a callback ``(done_bytes, total_bytes_or_None)`` and a terminal progress bar.

Every adapter takes ``progress=``: ``None`` (off), ``True`` (a :class:`ProgressBar` on stderr), or any callable.

Example:
    >>> seen = []
    >>> report = _make_progress(lambda done, total: seen.append((done, total)), total=10)
    >>> report is not None and report(4) is None and seen
    [(4, 10)]
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from ._unblocked import settle, write_text

log = logging.getLogger("iii_channels.progress")

ProgressCallback = Callable[[int, int | None], None]
Progress = bool | ProgressCallback | None


class _Escapes(dict[int, str]):
    """:meth:`str.translate`'s table for :func:`printable`: a code point as its character, or as that character's
    ``repr`` escape when ``str.isprintable`` refuses it. Filled as characters come (the unprintable code points are
    most of the 1,114,112), and at most :data:`_ESCAPES_KEPT` are kept: a text of every code point costs no more."""

    def __missing__(self, point: int) -> str:
        char = chr(point)
        shown = char if char.isprintable() else repr(char)[1:-1]
        if len(self) < _ESCAPES_KEPT:
            self[point] = shown
        return shown


_ESCAPES = _Escapes()
_ESCAPES_KEPT = 4096
# Long text is looked at in stretches of this many characters: a printable one (most, in a name or a message with one
# escape sequence) is kept as it is after one C-level check, and only the others go through the table.
_STRETCH = 256
# How long a bar's close waits for its final line to be written, at most (not at all once its stream is stuck).
_CLOSE_WAIT_S = 0.1
# The most characters of a ProgressBar's label drawn: its head and its tail (a name's extension), as printable cuts.
_LABEL_CHARS = 120


def printable(text: str, limit: int | None = None) -> str:
    """``text`` with every character that ``str.isprintable`` refuses written as its ``repr`` escape (``\\x1b``,
    ``\\n``, ``\\u202e``): for text a peer chose (a sender's file name, an abort reason) on its way to a terminal,
    where an escape sequence would set the window title, clear the screen or print a fake status line, and a bidi
    override would show ``gpj.exe`` as ``exe.jpg``. Printable text is returned as it is (one C-level scan).

    With ``limit``, a longer ``text`` is cut before it is escaped: its first two thirds of ``limit`` characters and
    its last third are kept, with ``…(N more characters)…`` between them (a peer's 10 MB answer quoted in one line
    of stderr was 10 MB, 40 MB escaped).

    Example:
        >>> print(printable("a\\x1b[2Jb\\u202egpj.exe"), printable("été.txt"))
        a\\x1b[2Jb\\u202egpj.exe été.txt
        >>> print(printable("\\x1b[2J" + "x" * 100 + ".exe", limit=12))
        \\x1b[2Jxxxx…(96 more characters)….exe
    """
    if limit is not None and len(text) > limit:
        if limit < 0:
            raise ValueError(f"limit must be at least 0, got {limit}")
        tail = limit // 3
        return (f"{printable(text[:limit - tail])}…({len(text) - limit} more characters)…"
                f"{printable(text[len(text) - tail:])}")
    if text.isprintable():
        return text
    if len(text) <= _STRETCH:
        return text.translate(_ESCAPES)
    # (before: a string per character, 10,000,000 control characters took 1.8-4.6 s and 780-840 MB)
    return "".join(stretch if stretch.isprintable() else stretch.translate(_ESCAPES)
                   for stretch in (text[at:at + _STRETCH] for at in range(0, len(text), _STRETCH)))


def human_bytes(n: float) -> str:
    """``1536`` → ``'1.5 KiB'``.

    Example:
        >>> human_bytes(1536), human_bytes(3 * 1024 ** 3)
        ('1.5 KiB', '3.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class ProgressBar:
    """A one-line terminal bar: bytes done, percentage, rate and ETA, redrawn at most every ``interval`` s. The
    label is drawn with its unprintable characters escaped (:func:`printable`): it may be a sender's file name; one
    longer than 120 characters is cut in the middle.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> bar = ProgressBar(label="copy", stream=out, interval=0)
        >>> bar(512, 1024); bar.close()
        >>> "copy" in out.getvalue() and "50%" in out.getvalue()
        True
    """

    def __init__(
        self,
        label: str = "",
        stream: TextIO | None = None,
        width: int = 30,
        interval: float | None = None,
        tty: bool | None = None,
    ) -> None:
        self.label = label
        # sys.stderr is None when the process started with it closed (2>&-): nothing is drawn then
        self.stream: TextIO | None = stream if stream is not None else sys.stderr
        self.width = width
        # On a terminal the bar redraws in place; elsewhere (a log file, a pipe) it prints one line per update,
        # less often, so the output stays readable and never contains carriage returns.
        self.tty = (self.stream is not None and _isatty(self.stream)) if tty is None else tty
        self.interval = interval if interval is not None else (0.1 if self.tty else 1.0)
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._done = 0
        self._total: int | None = None
        self._closed = False

    def __call__(self, done: int, total: int | None) -> None:
        self._done, self._total = done, total
        now = time.monotonic()
        if now - self._last_draw >= self.interval:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        if self.stream is None:
            return
        elapsed = max(now - self._start, 1e-9)
        rate = self._done / elapsed
        # the label is often a peer's file name: never a terminal escape sequence (printable), nor longer than a
        # line (a sender's name of megabytes was escaped whole at every redraw)
        parts = [printable(self.label, _LABEL_CHARS)] if self.label else []
        if self._total:
            frac = min(self._done / self._total, 1.0)
            filled = int(frac * self.width)
            parts.append("[" + "#" * filled + "." * (self.width - filled) + f"] {frac * 100:3.0f}%")
            parts.append(f"{human_bytes(self._done)}/{human_bytes(self._total)}")
            eta = (self._total - self._done) / rate if rate > 0 else 0.0
            parts.append(f"{human_bytes(rate)}/s ETA {eta:4.0f}s")
        else:
            parts.append(f"{human_bytes(self._done)} {human_bytes(rate)}/s")
        line = " ".join(parts)
        self._write("\r" + line + "  " if self.tty else line + "\n", redraw=True)

    def _write(self, text: str, redraw: bool = False) -> None:
        """Write ``text`` and flush, never waiting for the stream's reader (:func:`~iii_channels._unblocked.write_text`:
        a stream with a descriptor is written by a thread of its own, and a ``redraw`` not drawn yet is replaced by
        the next one); on a stream that cannot be written (closed, ``/dev/full``, a pipe whose reader left) the bar
        stops drawing, with one warning. It never fails nor holds up the transfer it reports on: progress is a
        courtesy, a receive with ``progress=True`` under ``2>&-`` stored nothing, and one whose stderr was a pipe
        nobody read froze its event loop.

        Example:
            >>> import io
            >>> out = io.StringIO()
            >>> bar = ProgressBar(label="copy", stream=out, interval=0)
            >>> out.close()
            >>> bar(1, 2); bar.close(); bar.stream is None
            True
        """
        if self.stream is None:
            return
        try:
            write_text(self.stream, text, self if redraw else None)
        except (OSError, ValueError) as exc:  # ValueError: a closed file object
            self.stream = None
            _warn_unwritable(exc)

    def close(self) -> None:
        """Draw the final state and end the line (once; later calls do nothing).

        Example:
            >>> import io
            >>> out = io.StringIO()
            >>> bar = ProgressBar(label="copy", stream=out, interval=60, tty=True)
            >>> bar(512, 1024); bar(1024, 1024)  # the first is drawn, the second is within the interval
            >>> bar.close(); bar.close()
            >>> out.getvalue().count("100%"), out.getvalue().endswith("\\n")
            (1, True)
        """
        if self._closed:
            return
        self._closed = True
        self._draw(time.monotonic())
        if self.tty:
            self._write("\n")
        if self.stream is not None:
            # A short wait, none once the stream is known stuck: the final line goes before what follows it, and a
            # stream that fails is told now (one warning), not at a later bar's draw.
            try:
                settle(self.stream, _CLOSE_WAIT_S)
            except (OSError, ValueError) as exc:
                self.stream = None
                _warn_unwritable(exc)


_warned = False


def _warn_unwritable(exc: BaseException) -> None:
    """One warning per process that progress bars stopped drawing (a serve's every transfer would repeat it)."""
    global _warned
    if not _warned:
        _warned = True
        log.warning("progress bar stopped: its stream cannot be written (%s); the transfer goes on", exc)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or file-like objects without isatty
        return False


class _Reporter:
    def __init__(self, callback: ProgressCallback, total: int | None, owned_bar: ProgressBar | None) -> None:
        self.callback = callback
        self.total = total
        self.bar = owned_bar

    def __call__(self, done: int) -> None:
        self.callback(done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_progress(progress: object) -> Progress:
    """``progress`` if it is a ``progress=`` argument: ``None``, a bool, or a callable; ``TypeError`` naming it
    otherwise. Why: ``progress=5`` failed only once the first chunk had moved (``'int' object is not callable``),
    part-way through a transfer.

    Example:
        >>> check_progress(5)
        Traceback (most recent call last):
        ...
        TypeError: progress must be None, True, False or a callable(done, total), got 5
    """
    if progress is None or isinstance(progress, bool) or callable(progress):
        return progress  # any callable: its signature is the caller's to get right
    raise TypeError(f"progress must be None, True, False or a callable(done, total), got {progress!r:.80}")


def _make_progress(progress: Progress, total: int | None = None, label: str = "") -> _Reporter | None:
    """Normalise a ``progress=`` argument into a reporter taking ``done`` bytes, or ``None`` when off (``TypeError``
    for anything else: :func:`check_progress`)."""
    check_progress(progress)
    if progress is None or progress is False:
        return None
    if progress is True:
        bar = ProgressBar(label=label)
        return _Reporter(bar, total, bar)
    if isinstance(progress, ProgressBar):
        # A bar handed in is finished (final line drawn) by the adapter, like one it made itself.
        return _Reporter(progress, total, progress)
    return _Reporter(progress, total, None)
