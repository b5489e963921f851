"""Messages the Redis bus received and has not delivered yet, queued per topic and taken in turns.

Why per topic: delivering one message can wait up to ``fire_wait_timeout_ms`` for room in the engine. In one queue,
a message for a quiet topic waited behind every queued message of a backed-up one, each waiting its own timeout
(1,024 of them at the defaults: up to 2.8 h). Taken in turns, a message first in its topic's queue waits for at
most one message of each other topic with messages queued, besides the one being delivered; each topic's own
messages still go in the order they came.

Why evict: the bounds (``max_messages`` and ``max_bytes`` for all topics together) would otherwise be filled by the
backed-up topic, and every message for another topic dropped on arrival. A message that does not fit takes the room
of the newest message of the topic with the most queued, when that room is enough and that topic has at least two
more than its own: each topic
keeps a share as large as any other's, and messages are only ever dropped from the end of a topic's queue (a gap at
its end, never a reordering); one message makes way at most, so a large newcomer never empties another topic. One
message larger than ``max_bytes`` is taken only when nothing is queued.

Example:
    >>> backlog = Backlog(max_messages=3, max_bytes=1000)
    >>> [backlog.put("hot", b"h%d" % i) for i in range(3)]
    [[], [], []]
    >>> backlog.put("hot", b"h3")  # full, and no topic has fewer queued than it: the new one is dropped
    [('hot', b'h3')]
    >>> backlog.put("cold", b"c0")  # hot's newest makes room
    [('hot', b'h2')]
    >>> [backlog.take() for _ in range(4)]
    [('hot', b'h0'), ('cold', b'c0'), ('hot', b'h1'), None]
"""

from __future__ import annotations

from collections import deque

__all__ = ["Backlog"]


class Backlog:
    """Messages per topic within a count and a byte bound, taken one topic after another (see the module)."""

    def __init__(self, *, max_messages: int, max_bytes: int, overhead: int = 0) -> None:
        """``overhead``: bytes counted per message besides its payload (what holding it costs: the bytes object's
        header, its place in a queue), so that many small messages are bounded in memory too."""
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._overhead = overhead
        self._queues: dict[str, deque[bytes]] = {}
        # topics with messages, in the order their turns come
        self._turns: deque[str] = deque()
        # topics by how many messages they have queued (dicts as ordered sets), and the largest such count: the
        # topic to evict from is found in O(1) however many topics there are
        self._by_length: dict[int, dict[str, None]] = {}
        self._longest = 0
        #: messages queued, all topics together
        self.messages = 0
        #: their bytes
        self.bytes = 0

    def __len__(self) -> int:
        return self.messages

    def put(self, topic: str, raw: bytes) -> list[tuple[str, bytes]]:
        """Queue ``raw`` for ``topic``; the messages dropped to keep the bounds (``raw`` itself, or the newest of
        topics with more queued), for the caller to count.

        Example:
            >>> Backlog(max_messages=1, max_bytes=4).put("t", b"12345")  # alone past max_bytes: taken
            []
        """
        queue = self._queues.get(topic)
        length = len(queue) if queue is not None else 0
        size = len(raw) + self._overhead
        dropped: list[tuple[str, bytes]] = []
        if self.messages and size > self._max_bytes:
            return [(topic, raw)]  # would not fit even alone: nothing is evicted for it
        if not self._fits(size):
            # One message makes way at most, and only when that makes room: evicting while the newcomer still did not
            # fit dropped it in the end too (one 1 MiB message took 952 small ones of another topic with it, one of
            # 20 MiB 59,997).
            if self._longest < length + 2 or not self._fits(size, freed=self._newest_of_longest()):
                return [(topic, raw)]
            dropped.append(self._evict())
        if queue is None:
            queue = self._queues[topic] = deque()
            self._turns.append(topic)
        queue.append(raw)
        self._moved(topic, length, length + 1)
        self.messages += 1
        self.bytes += size
        return dropped

    def take(self) -> tuple[str, bytes] | None:
        """The oldest message of the topic whose turn it is (its topic's turn then goes to the back), or ``None``."""
        if not self._turns:
            return None
        topic = self._turns.popleft()
        queue = self._queues[topic]
        raw = queue.popleft()
        self._moved(topic, len(queue) + 1, len(queue))
        if queue:
            self._turns.append(topic)
        else:
            del self._queues[topic]
        self.messages -= 1
        self.bytes -= len(raw) + self._overhead
        return topic, raw

    def _fits(self, size: int, freed: int | None = None) -> bool:
        """Whether a message of ``size`` bytes fits, with one message of ``freed`` bytes gone first (if given)."""
        messages, used = self.messages, self.bytes
        if freed is not None:
            messages, used = messages - 1, used - freed
        return messages == 0 or (messages < self._max_messages and used + size <= self._max_bytes)

    def _newest_of_longest(self) -> int:
        """The bytes :meth:`_evict` would free."""
        return len(self._queues[next(iter(self._by_length[self._longest]))][-1]) + self._overhead

    def _evict(self) -> tuple[str, bytes]:
        """Drop the newest message of the topic with the most queued (it keeps at least two: never emptied)."""
        topic = next(iter(self._by_length[self._longest]))
        queue = self._queues[topic]
        raw = queue.pop()
        self._moved(topic, len(queue) + 1, len(queue))
        self.messages -= 1
        self.bytes -= len(raw) + self._overhead
        return topic, raw

    def _moved(self, topic: str, before: int, after: int) -> None:
        """Keep ``_by_length`` and ``_longest`` up to date as ``topic``'s queue goes from ``before`` to ``after``."""
        if before:
            same = self._by_length[before]
            del same[topic]
            if not same:
                del self._by_length[before]
        if after:
            self._by_length.setdefault(after, {})[topic] = None
        if after > self._longest:
            self._longest = after
        while self._longest and self._longest not in self._by_length:
            self._longest -= 1  # lengths change by one at a time: amortised O(1)
