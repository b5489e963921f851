"""Lines that keep trigger-fired calls of one key in order while their worker refuses them for being busy.

A call refused with ``worker_busy`` is asked again a little later (docs/protocol.md M11). Without lines, the retries
of a burst of changes to one state key went out in whatever order their waits ended, and a later change could run
before an earlier one: in an attack, 16 of 40 updates of one key reached the handler after a newer one, and the
handler's last value was the 7th where the key ended at the 39th.

With a line: the first call of a key refused busy heads its key's line and is asked again on its schedule; the calls
of that key dispatched meanwhile, and those refused while it heads, wait in the line in dispatch order. The line
opens as soon as its head is taken by the worker, given up, or cancelled: every call in it then goes at once, in
dispatch order (one socket carries them in that order), and any refused again form a new line. "Taken" is the call
answered, or no refusal within :data:`TAKEN_AFTER_S` of its try (our SDK refuses as soon as an invocation arrives, so
a call still unanswered then is running): a line never waits for a slow or hung handler, and it lasts only as long as
the busy spell.

Calls of a key never refused go out at once, as before: lines cost nothing while the worker has room. A line exists
only while its head is refused, and every call in it holds a ``max_fired_calls`` slot, so lines are bounded by that
setting.

Example:
    >>> import asyncio
    >>> async def main():
    ...     turns = BusyTurns()
    ...     first, second = turns.ticket("k"), turns.ticket("k")
    ...     assert first.refused()  # the first refused heads the key's line
    ...     assert second.behind_held()  # so the second waits in it before its first try
    ...     waiting = asyncio.create_task(second.wait_in_line())
    ...     await asyncio.sleep(0)
    ...     before = waiting.done()
    ...     first.release()  # the head taken (or given up): the line opens
    ...     await waiting
    ...     return before, turns.held_keys()
    >>> asyncio.run(main())
    (False, 0)
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Hashable

__all__ = ["TAKEN_AFTER_S", "BusyTurns", "Turn"]

TAKEN_AFTER_S = 0.25
"""A line's head still unanswered this long after its try was not refused: the worker took it, and the line opens.
(A refusal comes back within a round trip; a longer wait would hold the line behind a handler's whole run.)"""


class BusyTurns:
    """The lines of the keys whose calls a busy worker refused; see the module docstring."""

    def __init__(self) -> None:
        self._issued = 0
        self._lines: dict[Hashable, _Line] = {}

    def ticket(self, key: Hashable) -> Turn:
        """A turn for a call of ``key``, numbered in the order tickets are taken (take it as the event is
        dispatched, not when its task runs)."""
        self._issued += 1
        return Turn(self, key, self._issued)

    def held_keys(self) -> int:
        """How many keys have a line now."""
        return len(self._lines)


class _Line:
    __slots__ = ("head", "waiting")

    def __init__(self, head: Turn) -> None:
        self.head = head
        self.waiting: list[tuple[int, asyncio.Event, Turn]] = []  # by dispatch order


class Turn:
    """One call's place among the calls of its key."""

    __slots__ = ("_turns", "key", "seq")

    def __init__(self, turns: BusyTurns, key: Hashable, seq: int) -> None:
        self._turns = turns
        self.key = key
        self.seq = seq

    def heads(self) -> bool:
        """Whether this call heads its key's line (it was refused first, and is asked again on its schedule)."""
        line = self._turns._lines.get(self.key)
        return line is not None and line.head is self

    def behind_held(self) -> bool:
        """Whether another call of the key heads a line: this one then waits in it (:meth:`wait_in_line`)."""
        line = self._turns._lines.get(self.key)
        return line is not None and line.head is not self

    def refused(self) -> bool:
        """This call was refused busy. ``True``: it heads its key's line (made now if there was none) and is asked
        again on its schedule; ``False``: another call heads it, and this one waits in it (:meth:`wait_in_line`)."""
        line = self._turns._lines.setdefault(self.key, _Line(self))
        return line.head is self

    async def wait_in_line(self) -> None:
        """Wait in the key's line, in dispatch order, until it opens (at once if it has none)."""
        line = self._turns._lines.get(self.key)
        if line is None or line.head is self:
            return
        place = (self.seq, asyncio.Event(), self)
        bisect.insort(line.waiting, place, key=lambda entry: entry[0])
        try:
            await place[1].wait()
        finally:
            if not place[1].is_set():  # cancelled while waiting: leave the line
                line.waiting.remove(place)

    def release(self) -> None:
        """This call was taken, answered, given up or cancelled: when it heads its key's line, the line opens and
        every call waiting in it goes, in dispatch order. Idempotent."""
        lines = self._turns._lines
        line = lines.get(self.key)
        if line is not None and line.head is self:
            del lines[self.key]
            for _, go, _turn in line.waiting:  # woken, and so sending, in this order
                go.set()
