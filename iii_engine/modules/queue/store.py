"""Where queue jobs live: the job record, the store contract and the in-memory store.

Jobs are grouped in **lanes**. A lane is an ordered list of jobs of which only the head may run; a lane is in
exactly one of three places while it has jobs: *ready* (may be claimed), *active* (its head is running) or
*delayed* (its head waits out a retry backoff). A FIFO message group is one lane, which gives strict order per
group with head-of-line blocking until success or the dead-letter queue (docs/protocol.md#module-improvements M3); a
job of a standard
queue is a lane of its own, so standard jobs run independently. A retried lane re-enters at the head of
*ready* when its backoff expires.

Example:
    >>> import asyncio
    >>> store = MemoryQueueStore()
    >>> job = Job.new("q", "fn", {"x": 1})
    >>> asyncio.run(store.push("q", job))
    True
    >>> asyncio.run(store.claim("q", now_ms=0, lease_ms=1000)).data
    {'x': 1}
"""

from __future__ import annotations

import bisect
import heapq
import sys
import time
import uuid
from collections import deque
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Final, Protocol

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.errors import PicklesByState
from iii.wire import dumps, loads


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (what ``failed_at`` and due times use)."""
    return time.time_ns() // 1_000_000


def clip_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, the cut saying how many bytes it was; never splits a
    character (a lone surrogate, as JSON can carry, counts its 3 bytes). A budget too small for the marker gets
    ``…`` (3 bytes), or nothing below 3.

    Example:
        >>> clip_utf8("abc", 3)
        'abc'
        >>> clip_utf8("\U0001F600" * 10, 20)
        '\U0001F600…(40 bytes)'
        >>> clip_utf8("x" * 100, 5), clip_utf8("x" * 100, 2)
        ('…', '')
    """
    if len(text) * 4 <= limit:  # at most 4 bytes a character: no need to encode
        return text
    size = utf8_size(text)
    if size <= limit:
        return text
    marker = f"…({size} bytes)"
    room = limit - len(marker.encode())
    if room < 0:
        return "…" if limit >= 3 else ""
    # room + 1 characters hold byte ``room`` (each takes one byte at least), or are the whole text (size > room):
    # only the head is encoded, not a 100 MB error
    encoded = text[:room + 1].encode("utf-8", "surrogatepass")
    end = room
    while end and encoded[end] & 0xC0 == 0x80:  # a continuation byte: the character starts before it
        end -= 1
    return encoded[:end].decode("utf-8", "surrogatepass") + marker


_COUNT_CHARS: Final = 65_536
"""Characters :func:`utf8_size` encodes at a time (a copy of at most 256 KiB, whatever the text's length)."""


def utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (a lone surrogate 3), counted a piece at a time.

    Example:
        >>> utf8_size("a\\u00e9\\U0001F600"), utf8_size("\\ud800")
        (7, 3)
    """
    if text.isascii():  # (a flag of the string: no scan)
        return len(text)
    return sum(len(text[i:i + _COUNT_CHARS].encode("utf-8", "surrogatepass"))
               for i in range(0, len(text), _COUNT_CHARS))


def monotonic_ms() -> int:
    """Milliseconds of the monotonic clock (what the module's own timers use: a step of the wall clock moves none).

    Example:
        >>> monotonic_ms() <= monotonic_ms()
        True
    """
    return time.monotonic_ns() // 1_000_000


@dataclass(frozen=True)
class Job:
    """One accepted message. ``id`` is also the ``messageReceiptId`` (docs/protocol.md#module-improvements M2).

    ``function_id`` is ``None`` for topic-mode jobs (the subscriber is chosen at delivery). A job the in-memory store
    gives back decodes its ``data`` when it is first read.
    """

    id: str
    queue: str
    function_id: str | None
    data: Any
    lane: str
    attempts: int = 0
    created_at: int = 0

    @classmethod
    def new(cls, queue: str, function_id: str | None, data: Any, group: str | None = None) -> Job:
        """A fresh job; ``group`` (FIFO message group) selects a shared lane, else the job has its own.

        Example:
            >>> Job.new("q", "fn", 1, group="g1").lane
            'g:g1'
        """
        job_id = str(uuid.uuid4())
        return cls(job_id, queue, function_id, data, job_id if group is None else f"g:{group}", 0, now_ms())

    def to_json(self) -> str:
        """The stored form (also the ``job`` of a dead-letter entry)."""
        return dumps(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """The job as a JSON object."""
        return {
            "id": self.id,
            "queue": self.queue,
            "function_id": self.function_id,
            "data": self.data,
            "lane": self.lane,
            "attempts": self.attempts,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(loads(raw))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        """Inverse of :meth:`as_dict`."""
        return cls(d["id"], d["queue"], d["function_id"], d["data"], d["lane"], d["attempts"], d["created_at"])

    def restarted(self) -> Job:
        """The same job with its attempt count reset (used by redrive)."""
        return replace(self, attempts=0)


@dataclass(frozen=True, slots=True)
class _Text:
    """A job's ``data`` still as its JSON text in UTF-8 (see :class:`_LazyData`)."""

    raw: bytes


class _LazyData:
    """:attr:`Job.data`: a job the in-memory store gives back holds its data as JSON text until it is read, so a claim
    that never reads it (a job put off while its function is missing, looked at again every few seconds) decodes
    nothing: 300,000 empty lists take 60-90 ms to decode, and 32 MiB of such jobs kept a third of a core busy."""

    def __get__(self, job: Job | None, owner: type | None = None) -> Any:
        if job is None:
            return self
        value = job.__dict__["data"]
        if isinstance(value, _Text):
            value = job.__dict__["data"] = loads(value.raw)
        return value

    def __set__(self, job: Job, value: Any) -> None:
        job.__dict__["data"] = value


# Set once the dataclass is made: there before, it would be taken for the field's default value.
Job.data = _LazyData()


def _payload(job: Job) -> bytes:
    """``job``'s data as JSON text in UTF-8, not decoded and encoded again while it is still text."""
    value = vars(job)["data"]
    return value.raw if isinstance(value, _Text) else dumps(value).encode()


@dataclass(frozen=True)
class DeadLetter:
    """A dead-letter entry: ``{"job", "error", "failed_at"}`` as production stores it."""

    job: Job
    error: str
    failed_at: int

    def as_dict(self) -> dict[str, Any]:
        """The entry as a JSON object."""
        return {"job": self.job.as_dict(), "error": self.error, "failed_at": self.failed_at}


class QueueFull(PicklesByState, Exception):
    """A redrive stopped because the queue holds ``max_jobs`` jobs; ``moved`` letters went back before that."""

    def __init__(self, moved: int) -> None:
        super().__init__(f"the queue is full after {moved} dead letter(s) moved")
        self.moved = moved


class NotSent(Exception):
    """A store call that certainly never left the engine: the connection it needed could not be opened (refused,
    or its connect timed out) before anything was written, so the store changed nothing. Its message is the
    connection's error.

    Example:
        >>> str(NotSent("Error 111 connecting to 127.0.0.1:6379. Connection refused."))
        'Error 111 connecting to 127.0.0.1:6379. Connection refused.'
    """


class StoreFull(PicklesByState, Exception):
    """A push refused for want of room: ``bound`` says which bound it met, ``"store"`` (the in-memory store's
    ``max_bytes`` of jobs and dead letters), ``"topics"`` (:attr:`TopicShare.max_bytes`, every topic's together) or
    ``"unsubscribed"`` (:attr:`TopicShare.max_unsubscribed_bytes`, those of topics without a subscriber); ``used`` is
    what that bound counts now.

    Example:
        >>> str(StoreFull(10, 95, 100, "topics"))
        'a job of 10 bytes does not fit: topics hold 95 of their 100 bytes'
    """

    def __init__(self, size: int, used: int, limit: int, bound: str = "store") -> None:
        holder = {"store": "the store holds", "topics": "topics hold",
                  "unsubscribed": "topics without a subscriber hold"}.get(bound, f"{bound} holds")
        whose = "its" if bound == "store" else "their"
        super().__init__(f"a job of {size} bytes does not fit: {holder} {used} of {whose} {limit} bytes")
        self.size = size
        self.used = used
        self.limit = limit
        self.bound = bound


@dataclass(frozen=True)
class TopicShare:
    """What the jobs and dead letters of topic queues (store queue names starting with ``prefix``) may take of a store
    together, so that enqueues to made-up topics, which any worker may send, cannot take the room named queues need:
    ``max_bytes`` for every topic, and ``max_unsubscribed_bytes`` for the topics marked as having no subscriber
    (:meth:`QueueStore.set_unsubscribed`; the in-memory store only: engines sharing a Redis store do not know each
    other's subscribers). A push past either raises :class:`StoreFull` naming it.

    Example:
        >>> TopicShare("__topic::", 1024).max_unsubscribed_bytes is None
        True
    """

    prefix: str
    max_bytes: int
    max_unsubscribed_bytes: int | None = None


LEAD_JITTER_NS: Final = 1_000_000
"""A change of the wall clock's lead on the monotonic one the in-memory store ignores (ns): reading both clocks one
after the other moves it by less; a step of the wall clock past it is followed exactly."""

LEAD_READ_NS: Final = 50_000
"""The longest a reading of the two clocks may take to replace the kept lead (ns): one taken across a pause (the
process descheduled, another thread holding the GIL) is off by the pause."""

WALL_STEP_MS: Final = 100
"""A change of the wall clock's lead on the monotonic one past this (ms) is a step of the wall clock (an NTP step, a
VM resumed, ``date -s``): what is timed on the monotonic clock and kept on the wall clock follows it at once."""

PAST_BOUND_ERROR_BYTES: Final = 64
"""UTF-8 bytes of its error a dead letter keeps when its error would take the in-memory store past a bound (a dead
letter is never refused). Its str then takes at most 76 + 4 * 64 = 332 bytes (113 in ASCII): how far each dead
letter may pass the bound. Before, a 1,000-character error took up to 4 KB, and 3,216 jobs failing with one held
15 MB under a 2 MiB bound."""

HELD_OVERHEAD: Final = 512
"""Bytes the in-memory store takes per job or dead letter besides the JSON text of its data and the strs of its
function id, lane and error (its records, its id, its numbers, its entries in the store's dicts, its lane's list, its
place in *ready* or *delayed*), counted with them against ``max_bytes``. Measured with tracemalloc on CPython 3.11
(tests/unit/modules/test_queue_store_memory.py): 270 for a job waiting or a dead letter, 410 for a job waiting out a
retry's backoff (its entry in *delayed*), at the worst point of the dicts' growth; the rest is room for other
versions."""


@dataclass(frozen=True, slots=True)
class _HeldJob:
    """A job as the in-memory store keeps it: its data as JSON text in UTF-8, decoded only when it is read. Decoded
    JSON takes up to 20 times its text ("[]," is 3 bytes of text and a 56-byte list), so a bound counted in text while
    the decoded data was kept let the engine grow 25 times past it."""

    payload: bytes
    queue: str
    function_id: str | None
    lane: str
    attempts: int
    created_at: int

    @classmethod
    def of(cls, job: Job, queue: str) -> _HeldJob:
        # the store's str for the queue's name, shared by its jobs
        name = queue if job.queue == queue else job.queue
        return cls(_payload(job), name, job.function_id, job.lane, job.attempts, job.created_at)

    @property
    def size(self) -> int:
        """What this job counts against ``max_bytes``: what the store holds for it. Its function id and lane are
        counted as strs of their own (a str of one emoji and 1,000 ASCII letters takes 4 bytes a character), though
        jobs of one function or FIFO group often share them."""
        name = 0 if self.function_id is None else sys.getsizeof(self.function_id)
        return len(self.payload) + HELD_OVERHEAD + name + sys.getsizeof(self.lane)

    def job(self, job_id: str) -> Job:
        """The job, its data still text until read."""
        return Job(job_id, self.queue, self.function_id, _Text(self.payload), self.lane, self.attempts,
                   self.created_at)


@dataclass(frozen=True, slots=True)
class _HeldLetter:
    """A dead letter as the in-memory store keeps it."""

    job: _HeldJob
    error: str
    failed_at: int
    #: its place among letters of the same ``failed_at`` (arrival order): :meth:`_MemoryQueue.order_key`
    seq: int = 0

    @property
    def size(self) -> int:
        """What this dead letter counts against ``max_bytes``: its job's count (:data:`HELD_OVERHEAD` takes in the
        letter's own objects) and its error. Never less than the job's once redriven: a redrive needs no room."""
        return self.job.size + sys.getsizeof(self.error)

    def letter(self, job_id: str) -> DeadLetter:
        return DeadLetter(self.job.job(job_id), self.error, self.failed_at)


@dataclass(frozen=True)
class QueueCounts:
    """Sizes of one queue's parts."""

    waiting: int
    active: int
    delayed: int
    dlq: int


PUT_OFF_LOOK: Final = 128
"""Lanes one :meth:`QueueStore.claim_next` puts off at most (then it ends with ``more``): a claim on a queue holding
many jobs of missing functions costs a bounded look, and the next call goes on."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What one :meth:`QueueStore.claim_next` did: the job it took (``None``: none), the lanes it put off instead of
    taking, as ``(lane, function id, look ms)``, and ``more``: it stopped at its bound having put lanes off, and other
    lanes may be ready (call again now rather than at the next poll). ``due_known``: the claim found nothing ready
    and read the queue's first delayed due time, ``next_due_ms`` (``None``: nothing delayed), as
    :meth:`QueueStore.next_due_ms` answers it, so an idle consumer needs no second call to the store.

    Example:
        >>> Claim(None).more
        False
    """

    job: Job | None
    put_off: tuple[tuple[str, str, int], ...] = ()
    more: bool = False
    next_due_ms: int | None = None
    due_known: bool = False


class PutOff(Mapping[str, int]):
    """The functions whose jobs a consumer has its store put off (function id → next look, wall-clock ms), keeping
    the changes made since a store last took them: a store that holds the looks itself (Redis: a hash) is sent those
    changes, not the whole mapping at every claim (a thousand functions made each claim 15 times dearer).

    Example:
        >>> looks = PutOff()
        >>> looks.set("late::fn", 5000); looks.set("gone::fn", 6000); looks.drop("gone::fn")
        >>> dict(looks), looks.take_changes()
        ({'late::fn': 5000}, {'late::fn': 5000, 'gone::fn': 0})
        >>> looks.take_changes()
        {}
    """

    def __init__(self) -> None:
        self._looks: dict[str, int] = {}
        self._changes: dict[str, int] = {}  # function id -> its new look, 0 once dropped

    def __getitem__(self, function_id: str) -> int:
        return self._looks[function_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._looks)

    def __len__(self) -> int:
        return len(self._looks)

    def set(self, function_id: str, look_ms: int) -> None:
        """Put ``function_id``'s jobs off until ``look_ms``."""
        if self._looks.get(function_id) != look_ms:
            self._looks[function_id] = self._changes[function_id] = look_ms

    def drop(self, function_id: str) -> None:
        """Stop putting ``function_id``'s jobs off."""
        if self._looks.pop(function_id, None) is not None:
            self._changes[function_id] = 0

    def take_changes(self) -> dict[str, int]:
        """The changes since the last take (a dropped function: ``0``), forgotten here."""
        changes, self._changes = self._changes, {}
        return changes

    def give_back(self, changes: Mapping[str, int]) -> None:
        """Changes taken that did not reach the store: taken again next time (unless changed since)."""
        for function_id, look in changes.items():
            self._changes.setdefault(function_id, look)

    def resend(self) -> None:
        """Every look is a change again (a store that lost what it held gets all of them back)."""
        self._changes.update(self._looks)


class QueueStore(Protocol):
    """Persistence for queue jobs; every method is atomic with respect to the others."""

    async def push(self, queue: str, job: Job, *, max_jobs: int | None = None,
                   unsubscribed: bool | None = None) -> bool:
        """Store ``job`` at the tail of its lane; with ``max_jobs``, only while the queue holds fewer jobs (waiting,
        delayed or running; dead letters not counted). ``False``: the queue was full and nothing was stored. Raises
        :class:`StoreFull` when the job's bytes do not fit under a bound the store keeps (its :class:`TopicShare`'s
        for a topic queue). ``unsubscribed`` (not ``None``) marks the queue first, as :meth:`set_unsubscribed`. A
        store on a connection pool raises :class:`~iii_streams.errors.PoolExhaustedError` only before the push was
        sent (nothing stored); any other failure may come after the job was stored."""

    def set_unsubscribed(self, queue: str, unsubscribed: bool) -> None:
        """Mark topic queue ``queue`` as having no subscriber (its jobs count against
        :attr:`TopicShare.max_unsubscribed_bytes`) or one again; a store without that bound does nothing."""

    async def claim(self, queue: str, *, now_ms: int, lease_ms: int,
                    skip_functions: Collection[str] = ()) -> Job | None:
        """Promote due delayed lanes, then take the head job of the first ready lane (``None`` if none). A lane whose
        head job names one of ``skip_functions`` (served by another engine sharing the store, not by this one) goes
        to the tail of *ready* instead; a store may look past a bounded number of them per call."""

    async def claim_next(self, queue: str, *, now_ms: int, lease_ms: int, skip_functions: Collection[str] = (),
                         put_off: Mapping[str, int] | None = None) -> Claim:
        """:meth:`claim`, where a ready lane whose head job names a function of ``put_off`` is not taken but delayed
        until that function's look (wall-clock ms; a look not after ``now_ms`` puts nothing off), its job unchanged
        and no attempt counted, at most :data:`PUT_OFF_LOOK` lanes per call. The jobs of a function no worker
        serves are looked past in the store, never handed to the engine one by one: 20,000 of them in Redis kept 200
        runnable jobs of the queue waiting 90 s. Pass a :class:`PutOff` to have only its changes sent to a store that
        keeps the looks (any other mapping replaces what the store kept for ``queue``)."""

    async def ack(self, queue: str, job: Job) -> None:
        """``job`` succeeded: remove it and free its lane."""

    async def retry(self, queue: str, job: Job, *, due_ms: int) -> None:
        """``job`` failed: save it (with its new ``attempts``) and delay its lane until ``due_ms``."""

    async def dead(self, queue: str, letter: DeadLetter) -> None:
        """Move the job to the dead-letter queue and free its lane."""

    async def release(self, queue: str, job: Job) -> None:
        """Give a claimed job back unfinished (engine shutdown): its lane returns to the head of *ready*."""

    async def renew(self, queue: str, lanes: list[str], *, deadline_ms: int) -> None:
        """Extend the lease of active lanes this engine is still working on."""

    async def recover(self, queue: str, *, now_ms: int) -> int:
        """Return active lanes whose lease expired (a crashed engine's work) to *ready*; the count moved."""

    async def next_due_ms(self, queue: str) -> int | None:
        """When the earliest delayed lane becomes due."""

    async def bring_forward(self, queue: str, lanes: list[str], *, due_ms: int) -> int:
        """Make each of ``lanes`` that is delayed past ``due_ms`` due at ``due_ms`` (a lane held or ready is left as
        it is); the count moved. Jobs put off until their function registers run as soon as it does.

        Example (a job put off for a minute, then brought forward to now):
            >>> import asyncio
            >>> async def put_off_then_forward() -> tuple[int | None, int, int | None]:
            ...     store, job = MemoryQueueStore(), Job.new("q", "fn", 1)
            ...     await store.push("q", job)
            ...     claimed = await store.claim("q", now_ms=0, lease_ms=1000)
            ...     await store.retry("q", claimed, due_ms=60_000)
            ...     before = await store.next_due_ms("q")
            ...     return before, await store.bring_forward("q", [job.lane], due_ms=5), await store.next_due_ms("q")
            >>> asyncio.run(put_off_then_forward())
            (60000, 1, 5)
        """

    async def counts(self, queue: str) -> QueueCounts:
        """Current sizes."""

    async def dlq_page(self, queue: str, offset: int, limit: int) -> list[DeadLetter]:
        """Dead letters, oldest failure first."""

    async def redrive(self, queue: str, job_id: str | None, *, max_jobs: int | None = None) -> int:
        """Re-enqueue one dead letter (or all with ``None``) with attempts reset; the count moved. With
        ``max_jobs``, a letter moves only while the queue holds fewer jobs (as :meth:`push`): raises
        :class:`QueueFull` at the first that does not fit, which stays a dead letter with the rest."""

    async def discard(self, queue: str, job_id: str) -> int:
        """Delete one dead letter; 1 if it existed."""

    async def forget(self, queue: str) -> None:
        """Drop what the store keeps for ``queue`` if it holds nothing (no job of any kind, no dead letter): the
        queue module forgets idle topics, and a store must not keep a record per topic name ever seen."""

    async def set_topic_fifo(self, queue: str, fifo: bool) -> None:
        """Keep whether topic ``queue``'s subscriber asked for FIFO, for :meth:`topic_fifo`."""

    async def topic_fifo(self, queue: str) -> bool | None:
        """Whether topic ``queue``'s subscriber asked for FIFO, as kept by :meth:`set_topic_fifo` (``None``: not
        known), so an engine making the topic by an enqueue stamps its jobs as the subscriber's engine does."""

    async def prepare(self) -> None:
        """Check the store answers, at the module's start (raises, naming the store, when it does not)."""

    async def ping(self) -> None:
        """One round trip to where the jobs are kept (for ``engine::health::check``); raises when it fails."""

    async def close(self) -> None:
        """Release connections."""


_LONG_LANE: Final = 64
"""A lane's list of job ids becomes a deque past this many, and back a list at :data:`_SHORT_LANE` or fewer (apart,
so that a lane around one length does not change back and forth)."""
_SHORT_LANE: Final = 16


@dataclass
class _MemoryQueue:
    jobs: dict[str, _HeldJob] = field(default_factory=dict)
    #: lane → its job ids, the head first: a list while it is short (a standard job's lane holds that job only: 64
    #: bytes, where a deque takes 624 from its first job), a deque while it is long (a FIFO group's may hold
    #: ``max_jobs``, and taking a list's head moves every other id)
    lanes: dict[str, list[str] | deque[str]] = field(default_factory=dict)
    ready: deque[str] = field(default_factory=deque)
    active: dict[str, int] = field(default_factory=dict)
    #: (due time, seq, lane), a heap; the due times on the monotonic clock (:meth:`MemoryQueueStore._lead`)
    delayed: list[tuple[int, int, str]] = field(default_factory=list)
    dlq: dict[str, _HeldLetter] = field(default_factory=dict)
    #: the ids of ``dlq``, oldest failure first (then in arrival order): a page is a slice, not a sort of every
    #: letter (200,000 letters: 240 ms a page). Letters arrive in ``failed_at`` order but for a clock stepping back,
    #: so keeping it sorted costs an append, and removing one a search and a move of the ids after it
    dlq_order: list[str] = field(default_factory=list)
    seq: int = 0
    #: a topic's queue (its bytes count against the store's :class:`TopicShare`)
    topic: bool = False
    #: a topic marked as having no subscriber (:meth:`MemoryQueueStore.set_unsubscribed`)
    unsubscribed: bool = False
    #: what this queue's jobs and dead letters count against ``max_bytes``
    bytes: int = 0

    def order_key(self, job_id: str) -> tuple[int, int]:
        """Where dead letter ``job_id`` sorts in :attr:`dlq_order`."""
        letter = self.dlq[job_id]
        return letter.failed_at, letter.seq

    def add_letter(self, job_id: str, letter: _HeldLetter) -> None:
        """Keep ``letter`` as a dead letter, in its place by ``failed_at``."""
        self.dlq[job_id] = letter
        order = self.dlq_order
        if not order or self.order_key(order[-1]) <= (letter.failed_at, letter.seq):
            order.append(job_id)  # the usual case: no search
        else:
            bisect.insort(order, job_id, key=self.order_key)

    def pop_letter(self, job_id: str) -> _HeldLetter:
        """Take dead letter ``job_id`` out (it must be there)."""
        at = bisect.bisect_left(self.dlq_order, self.order_key(job_id), key=self.order_key)
        del self.dlq_order[at]
        return self.dlq.pop(job_id)

    def is_head(self, job: Job) -> bool:
        """Whether ``job`` heads its lane: a finishing step applies only then, as the Redis store's (a late step
        of an engine whose lease ran out must not bring back, or take the lane from, what another engine did)."""
        jobs = self.lanes.get(job.lane)
        return jobs is not None and jobs[0] == job.id

    def pop_head(self, lane: str) -> _HeldJob:
        """Take the head job out of ``lane`` (a lane's only job ends it); what the store held for that job."""
        jobs = self.lanes[lane]
        if isinstance(jobs, deque):
            gone = self.jobs.pop(jobs.popleft())
            if len(jobs) <= _SHORT_LANE:
                self.lanes[lane] = jobs = list(jobs)
        else:
            gone = self.jobs.pop(jobs.pop(0))
        held = self.active.pop(lane, None) is not None
        if jobs:
            if held:  # a lane not held is in ready or delayed already
                self.ready.append(lane)
            return gone
        del self.lanes[lane]
        if held:
            return gone
        # A late step emptied a lane that waits in ready or delayed: it leaves both. Left in ready, the next push to
        # the lane (a FIFO group's next message) listed it twice, and two claims took that message at once.
        if lane in self.ready:
            self.ready = deque(waiting for waiting in self.ready if waiting != lane)
        if self.delayed:
            self.delayed = [entry for entry in self.delayed if entry[2] != lane]
            heapq.heapify(self.delayed)
        return gone


class MemoryQueueStore:
    """Jobs in this process's memory (production's default ``BuiltinQueueAdapter``); lost on exit.

    ``max_bytes`` bounds the memory the jobs and dead letters of every queue take together: a push past it raises
    :class:`StoreFull` (``max_jobs`` alone let 100,000 jobs of up to a message's 4 MiB each in). The store keeps each
    job's data as JSON text in UTF-8, decoded when it is read, and counts that text plus :data:`HELD_OVERHEAD` per job
    or dead letter and the strs of its function id, lane and error. A job's count follows it (a retry's new data, its
    dead letter's error); those steps are never refused, so they may pass ``max_bytes`` by their growth (a dead
    letter's is its error's str, cut to :data:`PAST_BOUND_ERROR_BYTES` of UTF-8 when it would pass a bound: at most
    332 bytes), and pushes are refused until it is back under.

    ``topics`` (a :class:`TopicShare`) bounds the same count for the topic queues: every topic's together, and those
    marked unsubscribed together, each checked before ``max_bytes``.

    Example:
        >>> import asyncio
        >>> store = MemoryQueueStore(max_bytes=200)
        >>> asyncio.run(store.push("q", Job.new("q", "fn", "x" * 300)))
        Traceback (most recent call last):
        ...
        iii_engine.modules.queue.store.StoreFull: a job of 950 bytes does not fit: the store holds 0 of its 200 bytes
    """

    #: no other engine changes it: every change comes through this engine, which wakes the queue's consumer, so the
    #: module never polls an idle queue of it (a store without this attribute is taken for shared, and polled)
    shared: ClassVar[bool] = False

    def __init__(self, *, max_bytes: int | None = None, topics: TopicShare | None = None) -> None:
        self._queues: dict[str, _MemoryQueue] = {}
        self._max_bytes = max_bytes
        self._bytes = 0
        self._topics = topics
        self._topic_bytes = 0
        self._unsubscribed_bytes = 0
        self._lead_ns: int | None = None  # see _lead

    @property
    def used_bytes(self) -> int:
        """Bytes the jobs and dead letters of every queue count against ``max_bytes``."""
        return self._bytes

    @property
    def topic_bytes(self) -> tuple[int, int]:
        """Bytes the topic queues count against ``max_bytes``: every topic's, and those of the topics marked
        unsubscribed."""
        return self._topic_bytes, self._unsubscribed_bytes

    def _q(self, queue: str) -> _MemoryQueue:
        q = self._queues.get(queue)
        if q is None:
            topic = self._topics is not None and queue.startswith(self._topics.prefix)
            q = self._queues[queue] = _MemoryQueue(topic=topic)
        return q

    def _charge(self, q: _MemoryQueue, delta: int) -> None:
        """``q``'s jobs and dead letters take ``delta`` bytes more (or fewer): counted in every bound it is under."""
        self._bytes += delta
        q.bytes += delta
        if q.topic:
            self._topic_bytes += delta
            if q.unsubscribed:
                self._unsubscribed_bytes += delta

    def _lead(self) -> int:
        """The wall clock's lead on the monotonic one (ms): what a wall-clock time given to this store less it is on
        the monotonic clock. The delayed due times are kept on the monotonic clock (the store lives only in this
        process, they need not survive it), so a step of the wall clock, either way and of any size, moves no retry
        backoff or put-off look: each is converted when it comes in and when it goes out, and a claim's ``now_ms``
        when it is compared. Following the wall clock's steps on the wall clock cut backoffs instead (a retry written
        just after a step back was moved back by it too; steps under 100 ms added up unseen; a step forward and its
        correction back halved a 60 s backoff). The lead is kept while it changes by :data:`LEAD_JITTER_NS` or less
        (the two clocks read one after the other): a time given out again is then the one given in."""
        kept = self._lead_ns
        # The wall clock is read between two reads of the monotonic one: a reading taken across a pause (the process
        # descheduled, another thread holding the GIL) would be off by the pause, moving due times by milliseconds,
        # so only a tight reading may replace the kept lead (a few tries; the kept one stays otherwise).
        for _ in range(3):
            before = time.monotonic_ns()
            wall = time.time_ns()
            after = time.monotonic_ns()
            if after - before <= LEAD_READ_NS or kept is None:
                lead = wall - (before + after) // 2
                if kept is None or abs(lead - kept) > LEAD_JITTER_NS:
                    self._lead_ns = kept = lead
                if after - before <= LEAD_READ_NS:
                    break
        assert kept is not None  # the first try always sets one
        return kept // 1_000_000

    def _full(self, q: _MemoryQueue, size: int) -> StoreFull | None:
        """The first bound ``size`` more bytes of ``q`` would pass (topics' before the store's), or ``None``."""
        topics = self._topics
        if topics is not None and q.topic:
            limit = topics.max_unsubscribed_bytes
            if q.unsubscribed and limit is not None and self._unsubscribed_bytes + size > limit:
                return StoreFull(size, self._unsubscribed_bytes, limit, "unsubscribed")
            if self._topic_bytes + size > topics.max_bytes:
                return StoreFull(size, self._topic_bytes, topics.max_bytes, "topics")
        if self._max_bytes is not None and self._bytes + size > self._max_bytes:
            return StoreFull(size, self._bytes, self._max_bytes)
        return None

    def set_unsubscribed(self, queue: str, unsubscribed: bool) -> None:
        """See :class:`QueueStore`: what the topic holds moves in or out of the unsubscribed count (a queue the store
        does not hold yet is marked by its first push)."""
        q = self._queues.get(queue)
        if q is not None and q.topic and q.unsubscribed != unsubscribed:
            q.unsubscribed = unsubscribed
            self._unsubscribed_bytes += q.bytes if unsubscribed else -q.bytes

    async def push(self, queue: str, job: Job, *, max_jobs: int | None = None,
                   unsubscribed: bool | None = None) -> bool:
        """See :class:`QueueStore`; raises :class:`StoreFull` when the job's bytes do not fit under ``max_bytes``,
        or for a topic under its :class:`TopicShare`. A job already held (a job or a dead letter with its id) is not
        stored or counted again, as by Redis."""
        q = self._q(queue)
        if unsubscribed is not None:
            self.set_unsubscribed(queue, unsubscribed)
        if job.id in q.jobs or job.id in q.dlq:
            return True
        if max_jobs is not None and len(q.jobs) >= max_jobs:
            return False
        held = _HeldJob.of(job, queue)
        size = held.size
        full = self._full(q, size)
        if full is not None:
            raise full
        self._charge(q, size)
        self._put(q, job.id, held)
        return True

    @staticmethod
    def _put(q: _MemoryQueue, job_id: str, held: _HeldJob) -> None:
        q.jobs[job_id] = held
        lane = held.lane
        jobs = q.lanes.get(lane)
        if jobs is None:
            q.lanes[lane] = [job_id]
            q.ready.append(lane)
            return
        jobs.append(job_id)
        if len(jobs) > _LONG_LANE and isinstance(jobs, list):
            q.lanes[lane] = deque(jobs)

    async def claim(self, queue: str, *, now_ms: int, lease_ms: int,
                    skip_functions: Collection[str] = ()) -> Job | None:
        """See :class:`QueueStore` (each ready lane is looked past at most once per call)."""
        return (await self.claim_next(queue, now_ms=now_ms, lease_ms=lease_ms, skip_functions=skip_functions)).job

    async def claim_next(self, queue: str, *, now_ms: int, lease_ms: int, skip_functions: Collection[str] = (),
                         put_off: Mapping[str, int] | None = None) -> Claim:
        """See :class:`QueueStore`.

        Example (the job of a missing function is put off for a second, the next one is taken):
            >>> import asyncio
            >>> async def put_off_one() -> Claim:
            ...     store = MemoryQueueStore()
            ...     await store.push("q", Job.new("q", "missing", 1, group="a"))
            ...     await store.push("q", Job.new("q", "here", 2))
            ...     return await store.claim_next("q", now_ms=0, lease_ms=1000, put_off={"missing": 1000})
            >>> claim = asyncio.run(put_off_one())
            >>> claim.job.data, claim.put_off
            (2, (('g:a', 'missing', 1000),))
        """
        q = self._q(queue)
        lead = self._lead()
        now = now_ms - lead  # on the monotonic clock, as the due times
        if isinstance(put_off, PutOff):
            put_off.take_changes()  # the looks themselves are read here: their changes need not pile up
        due: list[str] = []
        while q.delayed and q.delayed[0][0] <= now:
            due.append(heapq.heappop(q.delayed)[2])
        q.ready.extendleft(reversed(due))
        looks = len(q.ready) if skip_functions else 0
        put: list[tuple[str, str, int]] = []
        while q.ready:
            lane = q.ready.popleft()
            jobs = q.lanes.get(lane)
            # else emptied while it waited (a late step finished its last job), or held already (listed twice):
            # skipped, as by Redis
            if jobs and lane not in q.active:
                function_id = q.jobs[jobs[0]].function_id
                look = put_off.get(function_id) if put_off and function_id is not None else None
                if look is not None and look > now_ms and function_id is not None:
                    q.seq += 1
                    heapq.heappush(q.delayed, (look - lead, q.seq, lane))
                    put.append((lane, function_id, look))
                    if len(put) >= PUT_OFF_LOOK:
                        return Claim(None, tuple(put), bool(q.ready))
                    continue
                if looks and function_id in skip_functions:
                    q.ready.append(lane)
                    looks -= 1
                    if not looks:
                        return Claim(None, tuple(put), bool(put))
                    continue
                q.active[lane] = now_ms + lease_ms
                return Claim(q.jobs[jobs[0]].job(jobs[0]), tuple(put))
        return Claim(None, tuple(put), next_due_ms=q.delayed[0][0] + lead if q.delayed else None, due_known=True)

    async def ack(self, queue: str, job: Job) -> None:
        """See :class:`QueueStore`."""
        q = self._q(queue)
        if q.is_head(job):
            self._charge(q, -q.pop_head(job.lane).size)

    async def retry(self, queue: str, job: Job, *, due_ms: int) -> None:
        """See :class:`QueueStore`."""
        q = self._q(queue)
        if not q.is_head(job):
            return
        # never refused, even past max_bytes: a retry the store turned down would leave its job active, to run again
        # once its lease ran out (attempts 9 → 10 is a byte more; the payload may change too)
        held = _HeldJob.of(job, queue)  # a job put off unread keeps its text: no decode, no encode
        self._charge(q, held.size - q.jobs[job.id].size)
        q.jobs[job.id] = held
        if q.active.pop(job.lane, None) is not None:  # as Redis: a lane not held stays where it is
            q.seq += 1
            heapq.heappush(q.delayed, (due_ms - self._lead(), q.seq, job.lane))

    async def dead(self, queue: str, letter: DeadLetter) -> None:
        """See :class:`QueueStore`."""
        q = self._q(queue)
        if q.is_head(letter.job):
            q.seq += 1
            # never refused (its job would stay active, to run again): past a bound, the error is cut to
            # PAST_BOUND_ERROR_BYTES, so dead letters pass it by a few hundred bytes each, not by their errors
            held = _HeldLetter(_HeldJob.of(letter.job, queue), letter.error, letter.failed_at, q.seq)
            growth = held.size - q.jobs[letter.job.id].size
            if growth > 0 and self._full(q, growth) is not None:
                held = replace(held, error=clip_utf8(letter.error, PAST_BOUND_ERROR_BYTES))
            self._charge(q, held.size - q.pop_head(letter.job.lane).size)
            q.add_letter(letter.job.id, held)

    async def release(self, queue: str, job: Job) -> None:
        """See :class:`QueueStore`."""
        q = self._q(queue)
        if q.is_head(job) and q.active.pop(job.lane, None) is not None:
            q.ready.appendleft(job.lane)

    async def renew(self, queue: str, lanes: list[str], *, deadline_ms: int) -> None:
        """See :class:`QueueStore`."""
        q = self._q(queue)
        for lane in lanes:
            if lane in q.active:
                q.active[lane] = deadline_ms

    async def recover(self, queue: str, *, now_ms: int) -> int:
        """See :class:`QueueStore`."""
        q = self._q(queue)
        expired = [lane for lane, deadline in q.active.items() if deadline <= now_ms]
        for lane in expired:
            del q.active[lane]
            q.ready.appendleft(lane)
        return len(expired)

    async def next_due_ms(self, queue: str) -> int | None:
        """See :class:`QueueStore`."""
        q = self._q(queue)
        return q.delayed[0][0] + self._lead() if q.delayed else None

    async def bring_forward(self, queue: str, lanes: list[str], *, due_ms: int) -> int:
        """See :class:`QueueStore`.

        Example (a lane due sooner than ``due_ms``, or not delayed at all, is not moved):
            >>> import asyncio
            >>> async def early_and_ready() -> tuple[int, int, int | None]:
            ...     store, early, ready = MemoryQueueStore(), Job.new("q", "fn", 1), Job.new("q", "fn", 2)
            ...     await store.push("q", early)
            ...     await store.retry("q", await store.claim("q", now_ms=0, lease_ms=1000), due_ms=3)
            ...     await store.push("q", ready)
            ...     lanes = [early.lane, ready.lane]
            ...     return (await store.bring_forward("q", lanes, due_ms=5),
            ...             await store.bring_forward("q", lanes, due_ms=1), await store.next_due_ms("q"))
            >>> asyncio.run(early_and_ready())
            (0, 1, 1)
        """
        q = self._q(queue)
        wanted, due_ms = set(lanes), due_ms - self._lead()
        moved = [(due_ms, seq, lane) for due, seq, lane in q.delayed if lane in wanted and due > due_ms]
        if moved:
            q.delayed = [entry for entry in q.delayed if not (entry[2] in wanted and entry[0] > due_ms)] + moved
            heapq.heapify(q.delayed)
        return len(moved)

    async def counts(self, queue: str) -> QueueCounts:
        """See :class:`QueueStore`."""
        return self._counts(self._q(queue))

    @staticmethod
    def _counts(q: _MemoryQueue) -> QueueCounts:
        active, delayed = len(q.active), len(q.delayed)
        return QueueCounts(len(q.jobs) - active - delayed, active, delayed, len(q.dlq))

    def held(self) -> dict[str, QueueCounts]:
        """What each queue still holds (queues holding nothing left out): what this store loses when the process
        ends, told by the queue module at its stop.

        Example:
            >>> import asyncio
            >>> store = MemoryQueueStore()
            >>> asyncio.run(store.push("q", Job.new("q", "fn", 1)))
            True
            >>> store.held()
            {'q': QueueCounts(waiting=1, active=0, delayed=0, dlq=0)}
        """
        counts = {name: self._counts(q) for name, q in self._queues.items()}
        return {name: held for name, held in counts.items() if held.waiting or held.active or held.delayed or held.dlq}

    async def dlq_page(self, queue: str, offset: int, limit: int) -> list[DeadLetter]:
        """See :class:`QueueStore`: a slice of the letters kept in order, whatever their number."""
        q = self._q(queue)
        return [q.dlq[job_id].letter(job_id) for job_id in q.dlq_order[offset : offset + limit]]

    async def redrive(self, queue: str, job_id: str | None, *, max_jobs: int | None = None) -> int:
        """See :class:`QueueStore` (all of them: oldest failure first)."""
        q = self._q(queue)
        if job_id is not None:
            if job_id not in q.dlq:
                return 0
            if max_jobs is not None and len(q.jobs) >= max_jobs:
                raise QueueFull(0)
            self._requeue(q, job_id, q.pop_letter(job_id))
            return 1
        moved = 0
        try:
            for one in q.dlq_order:
                if max_jobs is not None and len(q.jobs) >= max_jobs:
                    raise QueueFull(moved)
                self._requeue(q, one, q.dlq.pop(one))
                moved += 1
        finally:
            del q.dlq_order[:moved]  # once: taking each id off the head moved every id after it
        return moved

    def _requeue(self, q: _MemoryQueue, job_id: str, letter: _HeldLetter) -> None:
        # a job is smaller than its dead letter (no error, no failed_at, attempts 0): it never needs more room
        held = replace(letter.job, attempts=0)
        self._charge(q, held.size - letter.size)
        self._put(q, job_id, held)

    async def discard(self, queue: str, job_id: str) -> int:
        """See :class:`QueueStore`."""
        q = self._q(queue)
        if job_id not in q.dlq:
            return 0
        self._charge(q, -q.pop_letter(job_id).size)
        return 1

    async def forget(self, queue: str) -> None:
        """See :class:`QueueStore`."""
        q = self._queues.get(queue)
        if q is not None and not (q.jobs or q.lanes or q.ready or q.active or q.delayed or q.dlq):
            del self._queues[queue]

    async def set_topic_fifo(self, queue: str, fifo: bool) -> None:
        """See :class:`QueueStore`: nothing to keep (the module remembers a forgotten FIFO topic itself, and this
        store's jobs do not outlive the engine)."""

    async def topic_fifo(self, queue: str) -> bool | None:
        """See :class:`QueueStore`: never known here."""
        return None

    async def prepare(self) -> None:
        """Nothing to check: the jobs live in this process."""

    async def ping(self) -> None:
        """See :class:`QueueStore`: the jobs live in this process."""

    async def close(self) -> None:
        """Nothing to release."""
