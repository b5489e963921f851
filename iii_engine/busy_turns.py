"""Turns that keep trigger-fired calls of one key in order while their worker refuses them for being busy.

A call refused with ``worker_busy`` is asked again a little later (docs/protocol.md M11). Without turns, the retries
of a burst of changes to one state key went out in whatever order their waits ended, and a later change could run
before an earlier one: in an attack, 16 of 40 updates of one key reached the handler after a newer one, and the
handler's last value was the 7th where the key ended at the 39th. With a turn, once one call of a key has been refused,
the calls of that key dispatched after it wait behind it, and the refused ones are asked again one at a time in the
order they were dispatched: each goes once the one before it has been answered (or given up).

Calls of a key never refused go out at once, as before: the turns cost nothing while the worker has room. Entries
exist only while a call of their key is held, and every held call holds a ``max_fired_calls`` slot, so they are
bounded by that setting.

Example:
    >>> import asyncio
    >>> async def main():
    ...     turns = BusyTurns()
    ...     first, second = turns.ticket("k"), turns.ticket("k")
    ...     await first.hold()  # refused: the key now has a held call
    ...     assert second.behind_held()  # so the second call waits in line before its first try
    ...     waiting = asyncio.create_task(second.hold())
    ...     await asyncio.sleep(0)
    ...     before = waiting.done()
    ...     first.release()  # answered: the next in line goes
    ...     await waiting
    ...     second.release()
    ...     return before, turns.held_keys()
    >>> asyncio.run(main())
    (False, 0)
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Hashable

__all__ = ["BusyTurns", "Turn"]


class BusyTurns:
    """The held calls of each key, in dispatch order; see the module docstring."""

    def __init__(self) -> None:
        self._issued = 0
        # key -> its held turns, ordered by dispatch; the first is the one being asked
        self._held: dict[Hashable, list[Turn]] = {}

    def ticket(self, key: Hashable) -> Turn:
        """A turn for a call of ``key``, numbered in the order tickets are taken (take it as the event is
        dispatched, not when its task runs)."""
        self._issued += 1
        return Turn(self, key, self._issued)

    def held_keys(self) -> int:
        """How many keys have held calls now."""
        return len(self._held)

    def _join(self, turn: Turn) -> None:
        line = self._held.setdefault(turn.key, [])
        at = bisect.bisect(line, turn.seq, key=lambda t: t.seq)
        # never ahead of the first: it is being asked, and the worker may be running it now
        line.insert(max(at, 1) if line else 0, turn)
        if line[0] is turn:
            turn._first.set()

    def _leave(self, turn: Turn) -> None:
        line = self._held.get(turn.key)
        if line is None or turn not in line:
            return
        was_first = line[0] is turn
        line.remove(turn)
        if not line:
            del self._held[turn.key]
        elif was_first:
            line[0]._first.set()


class Turn:
    """One call's place among the held calls of its key."""

    __slots__ = ("_first", "_turns", "key", "seq")

    def __init__(self, turns: BusyTurns, key: Hashable, seq: int) -> None:
        self._turns = turns
        self.key = key
        self.seq = seq
        self._first = asyncio.Event()

    @property
    def holding(self) -> bool:
        """Whether this call is among its key's held calls."""
        line = self._turns._held.get(self.key)
        return line is not None and self in line

    def behind_held(self) -> bool:
        """Whether calls of the key are held: a call not yet tried then joins them (:meth:`hold`) instead of
        going ahead of them."""
        return self.key in self._turns._held

    async def hold(self) -> bool:
        """Join the key's held calls in dispatch order (refused, or behind refused ones) and wait to be first.
        Returns whether it had to wait behind others."""
        if not self.holding:
            self._turns._join(self)
        if self._first.is_set():
            return False
        await self._first.wait()
        return True

    def release(self) -> None:
        """This call is answered, given up or cancelled: the next held call of its key goes. Idempotent."""
        self._turns._leave(self)
