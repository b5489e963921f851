"""Count bounds on what workers make the engine hold: connections, registrations per worker, services.

Why: a control frame is bounded in bytes (``max_message_size``) and a worker's unread output too
(``max_outbox_bytes``), but without counts a worker that loops on ``register_function`` or reconnects without end
(a bug as often as an attack) grows the engine until it runs out of memory and takes every other worker with it.

- ``max_workers``: a connection past it is closed at once with 1013 ("try again later") and a reason naming the
  setting; SDKs reconnect with back-off, so a worker gets in once another leaves.
- ``max_registrations_per_worker``: functions, trigger types and triggers one connection holds at once.
  Registrations are never acknowledged on the wire, so a refused one is logged by the engine (the first refusal
  of a connection names the item and the setting; the total is logged when it disconnects) and a call to a
  refused function fails with ``function_not_found``. Re-registering what the worker already holds is never refused.
- ``max_registration_bytes_per_worker``: the bytes one connection's registrations make the engine keep, each
  estimated from its frame (:func:`retained_estimate`; the entry keeps it in ``size``, the registry keeps the
  books where every table changes). The count bound alone let one worker hold 100,000 registrations of 4 MiB. A
  re-registration is refused only when it grows past it.
- ``max_services`` and ``max_service_bytes``: the count and the estimated bytes of explicit (``registerservice``)
  services the engine keeps; they outlive their worker and their functions. Implicit ones (a function id's prefix)
  come and go with functions, which are bounded above, and do not count. A new explicit service past either is
  refused the same way.
- ``max_fired_calls``: trigger-fired calls in flight engine-wide (pub/sub deliveries, stream and state triggers,
  cron ticks, log and alert triggers, worker and function events), each counted from dispatch until its
  handler's outcome is back; see :class:`FiredCalls`. ``max_fired_bytes`` bounds the payload bytes they hold the
  same way (a fired call set off by a worker's call holds that call's frame size, :class:`CallCharge`).
  ``max_fired_calls_per_worker`` (default a quarter of ``max_fired_calls``) bounds those in flight to one callee
  worker: past it a call to that worker is not made (counted, logged, its producer's caller told), so one worker
  that never answers holds a quarter of the room, not all of it (:class:`CalleeCall`).
- ``max_calls_per_worker``: calls one worker has started through the engine and that are not over, bounded for
  each kind apart: its calls of worker functions (answered or void), and its built-in calls and enqueue actions;
  past it a call is refused at once (``too_many_calls``, or counted and logged when no reply was asked for); see
  :class:`WorkerCalls`.
  ``max_call_bytes_per_worker`` bounds, the same way, the bytes one worker makes the engine hold: the frames of
  its built-in calls and enqueue actions while they run, and the trigger-fired calls they set off (a fan-out that
  would take it past its share fails with ``fire_limit``, none of it made).

Example:
    >>> from iii_engine.config import EngineConfig
    >>> limits = CountLimits(EngineConfig(max_workers=2))
    >>> limits.connection_refusal(1) is None, limits.connection_refusal(2)
    (True, 'too many workers connected (max_workers 2)')
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Coroutine, Iterable, Mapping
from contextvars import ContextVar
from typing import Any

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.loss_log import LossLog, latest_tail

from .config import (
    DEFAULT_FIRE_WAIT_TIMEOUT_MS,
    DEFAULT_MAX_CALL_BYTES_PER_WORKER,
    DEFAULT_MAX_CALLS_PER_WORKER,
    DEFAULT_MAX_FIRED_BYTES,
    DEFAULT_MAX_FIRED_CALLS,
    EngineConfig,
)
from .modules.base import EngineError, FiredSlots
from .registry import Registry
from .workers import WorkerConnection

log = logging.getLogger(__name__)

TRY_AGAIN_LATER = 1013
"""Close code for a connection past ``max_workers`` (RFC 6455 "Try Again Later")."""

FIRE_LIMIT = "fire_limit"
"""Error code of a call whose trigger-fired calls found no room under ``max_fired_calls`` in time."""

TOO_MANY_CALLS = "too_many_calls"
"""Error code of a worker's call refused because that worker has ``max_calls_per_worker`` calls in flight."""
ENGINE_OWN = "(engine)"
"""The id :attr:`FiredCalls.engine_own` goes by in messages (no worker's id has parentheses)."""

SKIP_LOG_INTERVAL_S = 10.0
"""At most one warning per this many seconds about calls skipped or refused for want of room (with their count)."""

DEGRADED_WINDOW_S = 60.0
"""``engine::health::check`` reports a bound degraded while it skipped or refused a call this recently."""

BUSIEST_REFRESH_S = 1.0
"""How long the callee worker holding the most trigger-fired calls, as refusals and warnings at ``max_fired_calls``
name it, is reused."""

_PLAIN_CACHED = 64
"""Holds of no bytes of up to this many slots are kept and shared (:meth:`FiredCalls.plain`); larger fan-outs are
rare enough to allocate theirs."""

REGISTRATION_OVERHEAD = 1024
"""What any registration costs the engine beyond its values (its entry, index slots, info dict, a listing's copy):
measured ~700 bytes for a pending trigger, so a flood of tiny registrations is not free of charge."""


def retained_estimate(frame: bytes | bytearray | str) -> int:
    """What the engine keeps, in bytes, for a registration read from the JSON ``frame``: an estimate from the text,
    counted at C speed (no walk of the parsed values), that errs high.

    Why not the frame's size: the engine keeps parsed Python objects, and JSON's smallest values are its most
    expensive ones. ``[{},{},…]`` is 3 bytes of frame and ~72 bytes of memory per element; a budget of frame bytes
    let one worker's 64 MiB hold ~1.5 GB. So: the text twice (its parsed strings, and the listing's JSON copy; 3 or
    8 times with characters past Latin-1 or past the BMP, below), an object's cost per ``{`` (a dict with keys is
    ~200 bytes), a list's per ``[``, a value's or key's per ``,`` or ``:``, and :data:`REGISTRATION_OVERHEAD`.
    Characters inside strings count too: it errs high, never low (the tests measure ten shapes of frame against
    it).

    Example:
        >>> retained_estimate(b'{"config": "' + b"x" * 1000 + b'"}') < 4_000
        True
        >>> retained_estimate(b"[" + b"{}," * 1000 + b"{}]") > 100_000  # 3 KB of frame, ~72 KB of objects
        True
    """
    text = frame.encode() if isinstance(frame, str) else frame
    items = text.count(b",") + text.count(b":")
    base = 192 * text.count(b"{") + 64 * text.count(b"[") + 56 * items + REGISTRATION_OVERHEAD
    # One character past Latin-1 makes CPython keep its whole string at 2 bytes a character, one past the BMP at 4
    # (an emoji before 400 KB of ASCII: 1.6 MB); the frame's other strings may stay compact, but which string
    # holds it is not known without parsing: the whole text is counted at that width (with the JSON copy), and
    # each string a little more (short non-ASCII strings cost more than their bytes). An em dash in one
    # description of a schema-heavy frame costs ~1.5x, not 4x the whole frame (a first cut at 8x refused 1,661
    # of 10,000 such SDK functions).
    if any(escape in text for escape in _SURROGATE_ESCAPES) or text.translate(None, _BELOW_ASTRAL):
        return 8 * len(text) + 16 * text.count(b'"') + base
    if not text.isascii() and text.translate(None, _LATIN1_OR_ASCII):
        return 3 * len(text) + 12 * text.count(b'"') + base  # 2 bytes a character, and the JSON copy's 1
    return 2 * len(text) + base


# UTF-8 lead bytes of characters past the BMP (0xF0-0xF4), and JSON escapes of their surrogates (\ud800-\udbff)
_BELOW_ASTRAL = bytes(range(0xF0))
_SURROGATE_ESCAPES = tuple(f"\\u{c}".encode() for c in ("d8", "d9", "da", "db", "D8", "D9", "DA", "DB"))
# bytes of ASCII and of Latin-1 characters (lead bytes 0xC2, 0xC3 and continuation bytes): what is left of a frame
# without them is the lead byte of a character past Latin-1
_LATIN1_OR_ASCII = bytes(range(0x80)) + bytes(range(0x80, 0xC0)) + b"\xc2\xc3"


class CountLimits:
    """The engine's count bounds, checked where the engine adds a connection, a registration or a service."""

    def __init__(self, config: EngineConfig) -> None:
        self.max_workers = config.max_workers
        self.max_registrations = config.max_registrations_per_worker
        self.max_registration_bytes = config.max_registration_bytes_per_worker
        self.max_total_registration_bytes = config.max_registration_bytes
        self.max_services = config.max_services
        self.max_service_bytes = config.max_service_bytes

    def connection_refusal(self, connected: int) -> str | None:
        """The close reason for one more connection while ``connected`` workers are, or ``None`` to accept it."""
        if connected < self.max_workers:
            return None
        return f"too many workers connected (max_workers {self.max_workers})"

    @staticmethod
    def held(worker: WorkerConnection, registry: Registry) -> int:
        """The registrations ``worker`` makes the engine hold: its functions (current, and overwritten ones kept
        to be restored when their overwriter leaves, E5), trigger types and stored or pending triggers."""
        return (len(worker.functions) + len(worker.external_functions) + registry.shadowed_count(worker.id)
                + len(worker.trigger_types) + registry.trigger_count(worker.id))

    def admit_registration(self, worker: WorkerConnection, registry: Registry, kind: str, item_id: str,
                           held: bool, size: int = 0, replaces: int = 0) -> bool:
        """May ``worker`` register ``item_id`` (a ``kind``: function, trigger type, trigger) from a frame of ``size``
        bytes? ``held``: it already holds that id (a re-registration, which never counts twice, and is refused only
        when it is larger than the registration it replaces and the difference does not fit)."""
        if not held:
            count = self.held(worker, registry)
            if count >= self.max_registrations:
                return self._refuse(worker, f"{kind} {item_id!r}", f"it holds {count} registrations "
                                    f"(max_registrations_per_worker {self.max_registrations})")
        holding = registry.bytes_held(worker.id)
        growth = size - (registry.held_size(worker.id, kind, item_id) if held else 0)
        if growth <= 0:
            return True
        if holding + growth > self.max_registration_bytes:
            return self._refuse(worker, f"{kind} {item_id!r} ({size} bytes)", f"its registrations hold {holding} "
                                f"bytes (max_registration_bytes_per_worker {self.max_registration_bytes})")
        # ``replaces``: bytes of another worker's entry this one takes the place of (a trigger type taken over),
        # freed as it is made: near a full budget, a takeover of the same size fits
        if registry.worker_bytes + growth - replaces > self.max_total_registration_bytes:
            return self._refuse(worker, f"{kind} {item_id!r} ({size} bytes)", f"every worker's registrations hold "
                                f"{registry.worker_bytes} bytes (max_registration_bytes "
                                f"{self.max_total_registration_bytes})")
        return True

    def admit_service(self, worker: WorkerConnection, registry: Registry, name: str, size: int = 0) -> bool:
        """May ``worker`` add the explicit service ``name`` from a frame of ``size`` bytes? Replacing an explicit
        one always may when it is no larger; making an implicit one (a function's prefix) explicit adds one, as it
        then outlives its functions."""
        known = registry.services.get(name)
        replaces = known is not None and known.explicit
        if not replaces and registry.explicit_services >= self.max_services:
            return self._refuse(worker, f"service {name!r}", f"the engine keeps {registry.explicit_services} "
                                f"explicit services (max_services {self.max_services})")
        growth = size - (known.size if known is not None and replaces else 0)
        if growth <= 0 or registry.explicit_service_bytes + growth <= self.max_service_bytes:
            return True
        return self._refuse(worker, f"service {name!r} ({size} bytes)", f"the engine's explicit services hold "
                            f"{registry.explicit_service_bytes} bytes (max_service_bytes {self.max_service_bytes})")

    @staticmethod
    def report(worker: WorkerConnection) -> None:
        """Log how many registrations ``worker`` had refused (called when it disconnects)."""
        if worker.refused_registrations > 1:
            log.warning("worker %s: %d registrations were refused over the engine's count limits",
                        worker.id, worker.refused_registrations)

    @staticmethod
    def _refuse(worker: WorkerConnection, what: str, why: str) -> bool:
        worker.refused_registrations += 1
        if worker.refused_registrations == 1:  # one line per connection, not one per frame of a flood
            log.warning("worker %s: %s refused: %s; later refusals are counted and logged when it disconnects",
                        worker.id, what, why)
        return False


class CallCharge:
    """What one call a worker started holds of that worker's ``max_calls_per_worker`` and
    ``max_call_bytes_per_worker``: one call, and ``size`` bytes (its frame's), until it is over.

    Why bytes: a worker's frames are bounded in size, its calls in count, but a built-in call's payload stays in
    the engine while it runs, and every trigger-fired call it sets off (a ``publish``'s deliveries, a state or
    stream write's triggers) holds that payload again until its handler's outcome is in. 10,000 fired calls of
    4 MiB frames is 40 GB: void publishes of 200 KB into a slow subscriber grew the engine by 750 MiB in 15 s.

    A built-in call's task runs with its charge in :data:`CALL_CHARGE`; :class:`FiredCalls` reads it there at the
    take, so a fired call set off from that task (or a task it spawned) holds ``size`` bytes of ``max_fired_bytes``
    and of its worker's share until its :class:`FiredHold` is released, after the call itself is over. Only while
    the call runs: a task it started that outlives it (a queue topic's consumer, made by the first ``enqueue`` on
    the topic) inherits the charge, and before, every fan-out that task set off later charged that first caller,
    with its frame's size.
    Once :meth:`give_back` ran, :attr:`over` is set and the charge takes no more.

    Example:
        >>> worker = WorkerConnection.__new__(WorkerConnection)
        >>> worker.calls, worker.builtin_calls, worker.call_bytes = 1, 1, 200_000
        >>> charge = CallCharge(worker, 200_000)
        >>> charge.give_back(); worker.calls, worker.builtin_calls, worker.call_bytes, charge.over
        (0, 0, 0, True)
    """

    __slots__ = ("over", "size", "unreached", "unreached_why", "worker")

    def __init__(self, worker: WorkerConnection, size: int) -> None:
        self.worker = worker
        self.size = size
        #: the call is over (:meth:`give_back` ran): fired calls taken from here on hold none of its bytes
        self.over = False
        #: fired calls it set off that were not made, their callee worker at its ``max_fired_calls_per_worker``
        #: (the others were): its answer says so (:meth:`FiredCalls.unreached`), and why the first was not
        self.unreached = 0
        self.unreached_why = ""

    def give_back(self) -> None:
        """The call is over: its count and its frame's bytes go back to its worker."""
        self.over = True
        worker = self.worker
        worker.calls -= 1
        worker.builtin_calls -= 1  # only built-in calls and enqueue actions hold a charge
        worker.call_bytes -= self.size


CALL_CHARGE: ContextVar[CallCharge | None] = ContextVar("iii_engine_call_charge", default=None)
"""The worker's call the running task serves (``None``: the engine's own work: cron ticks, log records, worker
events, messages from Redis); see :class:`CallCharge`."""

def _payload_account(account_id: str) -> WorkerConnection:
    """What holds the payload bytes of the engine's own fan-outs (:attr:`FiredCalls.engine_own`, and one per callee
    worker): only its ``id`` and ``call_bytes`` are used, as a :class:`CallCharge`'s worker."""
    account = WorkerConnection.__new__(WorkerConnection)
    account.id, account.call_bytes = account_id, 0
    return account


def _live_charge() -> CallCharge | None:
    """The charge a fired call taken now holds: the running call's, unless that call is over (:attr:`CallCharge.over`:
    a task it started outlived it)."""
    charge = CALL_CHARGE.get()
    return None if charge is None or charge.over else charge


class FiredHold:
    """``n`` slots of a :class:`FiredCalls` taken for ``charge`` (``None``: no bytes), as a take returned them:
    whoever holds them gives back exactly these, from any task or context (a fired call's own task, a stop's
    :meth:`HeldTasks.close` of a task that never ran).

    Why not a record in the context: code run inline in the task holding the slots (a built-in called from a fired
    call, which takes fired calls of its own) overwrote it, and the release gave back what that later take charged:
    each chained publish kept its frame's bytes on its worker's share and on ``max_fired_bytes`` for good.

    A hold never changes: one that holds no bytes is shared (:meth:`FiredCalls.try_take` hands out the same one for
    the same ``n``, up to ``_PLAIN_CACHED`` = 64 slots; a bigger one is new each time), and the holder counts what it
    gave back of it.

    Example:
        >>> fired = FiredCalls(4)
        >>> hold = fired.try_take(3)
        >>> hold.n, fired.in_flight
        (3, 3)
        >>> hold.release(1); hold.one().release(); fired.in_flight
        1
        >>> hold.release(1); fired.in_flight
        0
    """

    __slots__ = ("_one", "charge", "fired", "n")

    def __init__(self, fired: FiredCalls, n: int, charge: CallCharge | None) -> None:
        self.fired = fired
        self.n = n
        self.charge = charge
        self._one: FiredHold | None = None

    def release(self, n: int | None = None) -> None:
        """Give back ``n`` of these slots (all of them by default) and the bytes they hold; waiters that now fit
        get theirs, in order.

        Raises:
            ValueError: ``n`` is not between 1 and the slots held.
        """
        if n is None:
            n = self.n
        elif not 0 < n <= self.n:
            raise ValueError(f"release of {n} fired-call slots from a hold of {self.n}")
        self.fired.give(n, self.charge)

    def one(self) -> FiredHold:
        """A hold of one of these slots, with its bytes: for the call a fan-out hands it to (``fire(...,
        taken=hold.one())``); the slot is that call's to give back then, not this hold's. The same object each
        time (holds never change): no allocation per fired call."""
        if self.n == 1:
            return self
        one = self._one
        if one is None:
            one = self._one = self.fired.hold_of(1, self.charge)
        return one


class _Callee:
    """The trigger-fired calls in flight to one callee worker: how many, and how many to each of its functions."""

    __slots__ = ("functions", "n", "worker_id")

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.n = 0
        self.functions: dict[str, int] = {}

    def busiest(self) -> tuple[str, int]:
        """The function with the most calls in flight, and that many."""
        return max(self.functions.items(), key=lambda item: item[1])


class CalleeCall:
    """A trigger-fired call to a worker's function, in flight: it holds its slot of ``max_fired_calls`` (``slot``,
    as the take returned it) and one of its callee worker's ``max_fired_calls_per_worker``, both given back by
    :meth:`release`.

    Why per callee: nothing ends a fired call its callee never answers (with no ``invocation_timeout_ms``) but the
    callee's disconnect; a subscriber that read its frames and never answered held all 10,000 slots after 10,500
    publishes, and every other worker's cron ticks and publishes to other topics failed for as long as it stayed.

    Example:
        >>> fired = FiredCalls(8, max_fired_calls_per_worker=1)
        >>> call = fired.to_callee(fired.try_take(), "w1", "hung::sub")
        >>> fired.to_callee(fired.try_take(), "w1", "hung::sub"), fired.in_flight, fired.skipped_callee_share
        (None, 1, 1)
        >>> call.release(); fired.in_flight, fired.stats()["busiest_callee"]
        (0, 0)
    """

    __slots__ = ("callee", "fired", "function_id", "slot")

    def __init__(self, fired: FiredCalls, slot: FiredSlots, callee: _Callee, function_id: str) -> None:
        self.fired = fired
        self.slot = slot
        self.callee = callee
        self.function_id = function_id

    def release(self, n: int | None = None) -> None:
        """The call is over: its slot (with its bytes) and its place in its callee's share are given back."""
        self.slot.release()  # first: its callee's payload bytes (see FiredCalls.to_callee) are back when it leaves
        self.fired.callee_left(self.callee, self.function_id)

    def one(self) -> CalleeCall:
        """This call (it holds one slot)."""
        return self


class CalleePlace:
    """A condition call's place in its callee worker's ``max_fired_calls_per_worker``, held while the condition runs
    (:meth:`FiredCalls.condition_place`): its trigger's slot of ``max_fired_calls`` is held by the trigger, not here.

    Example:
        >>> fired = FiredCalls(8, max_fired_calls_per_worker=1)
        >>> place = fired.condition_place("w1", "cond::hung")
        >>> fired.condition_place("w1", "cond::hung"), fired.skipped_callee_share
        (None, 1)
        >>> place.release(); fired.stats()["busiest_callee"]
        0
    """

    __slots__ = ("callee", "fired", "function_id")

    def __init__(self, fired: FiredCalls, callee: _Callee, function_id: str) -> None:
        self.fired = fired
        self.callee = callee
        self.function_id = function_id

    def release(self) -> None:
        """The condition answered (or failed, or was cancelled): its place goes back."""
        self.fired.callee_left(self.callee, self.function_id)


class _WaitExpired(Exception):
    """A producer's wait for room ran out (set on its future by :meth:`FiredCalls._expire`)."""


class FiredCalls:
    """The engine-wide bound on trigger-fired calls in flight (``max_fired_calls``).

    Why: a fired call is a task the producer does not wait for; a publisher faster than a slow subscriber would
    otherwise pile up tasks (each waiting for room in the subscriber's outbound queue) until the engine dies.

    A call holds its slot from dispatch until its handler's result (or failure, or timeout) is back. A producer
    that is itself a call (a worker's ``publish``, a ``state::set`` with triggers) :meth:`take` s all the slots its
    fan-out needs at once (never half-delivered), waiting its turn in FIFO order for at most
    ``fire_wait_timeout_ms``; when the wait runs out its call fails with ``fire_limit``. That deadline also ends
    the deadlock of fired handlers that publish while every slot is held by such handlers. Producers with nobody
    to wait (cron ticks, log records, worker events) :meth:`try_take` and, when that fails, :meth:`skip`: counted
    in :attr:`skipped`. Skipped and refused calls are logged: the first time, then at most every
    ``SKIP_LOG_INTERVAL_S`` with their counts.
    Waiting producers are bounded too: at most ``max_fired_calls`` of them, asking for at most ``max_fired_bytes``,
    wait at once; a further one fails at once. Waiters go first: :meth:`try_take` fails while any producer waits.

    Bytes (``max_fired_bytes``) are bounded the same way: a fired call set off by a worker's call holds that call's
    frame size (:data:`CALL_CHARGE`, while that call runs; the engine's own producers hold none), here and on that
    worker's ``max_call_bytes_per_worker`` share, from the take to the release of what it returned. A take returns
    what it took (a :class:`FiredHold`: the slots and the charge), and whoever holds it gives back exactly that
    (:meth:`FiredHold.release`, in parts as the calls end, or a part of one slot handed on: :meth:`FiredHold.one`),
    whatever :data:`CALL_CHARGE` says by then and whatever else the holding task took meanwhile. A fan-out bigger
    than the whole budget gets in alone, once no other fired call holds bytes, rather than never.

    The worker's share bounds its fan-outs too: what it holds (its calls' frames, their fired calls, the bytes
    its waiting producers ask for) plus the whole new fan-out must fit ``max_call_bytes_per_worker``, or the
    fan-out is refused at once (:meth:`take`: ``fire_limit`` naming the setting and the bytes; :meth:`try_take`:
    ``None``), none of it delivered. Why: checked only before the call, one publish of a 3 MB frame to 3
    subscribers held 9 MB under a 1 MiB share and a 1 MiB ``max_fired_bytes``, and every other worker's publish
    waited, then failed. Why at once rather than wait: the share is the worker's own, refused as at
    :class:`WorkerCalls` (a wait would stand in the queue in front of other workers' producers), and a fan-out
    bigger than the share with nothing else held never fits. A waiting producer's bytes count on its share
    while it waits (given back when it leaves unserved), so one worker's waiters ask for at most its share.

    Callees have a share too (``max_fired_calls_per_worker``, default a quarter of ``max_fired_calls``): a fired call
    of a worker's function holds one of that worker's from dispatch until its outcome is in (:meth:`to_callee`,
    :class:`CalleeCall`). Past it a call to that worker is not made, at once, whoever the producer: counted in
    :attr:`skipped` and :attr:`skipped_callee_share`, logged rate-limited naming the worker and the function, and,
    when the producer is a worker's call that asked for an answer, that answer is ``fire_limit`` saying how many of
    the calls it set off were not made and why (:meth:`unreached`); the other calls of the same fan-out are made.
    Why not wait, as for the engine's room: the share is one callee's, and a producer waiting for a callee that
    never answers would hold its slots for the other callees of its fan-out, and its place in the queue, the
    whole ``fire_wait_timeout_ms``, every time. The price: a slow but healthy worker with that many calls
    unanswered loses the further ones of a burst instead of slowing their producer down.
    The refusals at the engine's bound and their warnings name the callee worker holding the most of the room,
    and its function with the most of them.

    Example:
        >>> fired = FiredCalls(2, 1000)
        >>> hold = fired.try_take(2)
        >>> hold.n, fired.try_take(), fired.in_flight
        (2, None, 2)
        >>> hold.release(); fired.in_flight
        0
    """

    def __init__(self, max_fired_calls: int = DEFAULT_MAX_FIRED_CALLS,
                 wait_timeout_ms: int = DEFAULT_FIRE_WAIT_TIMEOUT_MS,
                 max_fired_bytes: int = DEFAULT_MAX_FIRED_BYTES,
                 max_call_bytes_per_worker: int = DEFAULT_MAX_CALL_BYTES_PER_WORKER, *,
                 max_fired_calls_per_worker: int | None = None) -> None:
        self.limit = max_fired_calls
        #: the calls in flight to one callee worker (``max_fired_calls_per_worker``; see the class)
        self.callee_limit = min(max_fired_calls, max_fired_calls_per_worker or max(1, max_fired_calls // 4))
        self.wait_timeout_ms = wait_timeout_ms
        self.byte_limit = max_fired_bytes
        #: a worker's share (``max_call_bytes_per_worker``), which its fan-outs must fit as well (see the class)
        self.worker_byte_limit = max_call_bytes_per_worker
        self.in_flight = 0
        #: payload bytes the calls in flight hold (see the class)
        self.bytes_in_flight = 0
        #: the most ever in flight at once (never above ``limit``)
        self.peak = 0
        #: calls skipped while full by producers with nobody to wait
        self.skipped = 0
        #: calls not made because their producer's wait ran out (or too many producers waited): it failed
        self.refused = 0
        #: of :attr:`skipped`, calls not made because their callee worker had ``max_fired_calls_per_worker``
        self.skipped_callee_share = 0
        # the calls in flight to each callee worker, by worker id (ids are per connection): a worker with none has
        # no entry
        self._callees: dict[str, _Callee] = {}
        self._callee_losses = LossLog(self._log_callee_share, SKIP_LOG_INTERVAL_S)
        # the latest call not made: its callee, its function, and why when its payload's bytes were (else its count)
        self._callee_latest: tuple[_Callee, str, str | None] | None = None
        # the payload bytes of the engine's own fan-outs (try_take's size) each callee worker holds, by worker id:
        # one max_call_bytes_per_worker each, so a callee that never answers holds up its own calls only
        self._own_bytes: dict[str, WorkerConnection] = {}
        # the busiest callee as refusals name it, and when (time.monotonic()) that was worked out (see _busiest)
        self._busiest_named: tuple[float, str] = (float("-inf"), "")
        # each waiter's future, the slots and bytes it asks for, whose share the bytes are and its deadline (loop
        # time), in arrival order; a dict so that one leaving (cancelled) is removed in O(1) wherever it stands
        self._waiters: OrderedDict[asyncio.Future[None], tuple[int, int, CallCharge | None, float]] = OrderedDict()
        self._deadline_timer: asyncio.TimerHandle | None = None  # for the oldest waiter (see _expire)
        self._waiting = 0  # slots the waiters ask for
        self._waiting_bytes = 0  # and their bytes
        self._losses = LossLog(self._log_lost, SKIP_LOG_INTERVAL_S)
        # Fan-outs not made for being past their worker's share are logged apart, naming that setting: with the
        # engine's room free, "no room under max_fired_calls" sent operators after the wrong bound.
        self._share_losses = LossLog(self._log_over_share, SKIP_LOG_INTERVAL_S)
        # why the latest try_take failed when it was its worker's share: (n, size, charge) for skip() to name it
        self._over_share: tuple[int, int, CallCharge] | None = None
        # the holds of no bytes, one per size up to _PLAIN_CACHED: shared (holds never change), so the engine's
        # own producers and callers with no charge allocate none per take
        self._plain: dict[int, FiredHold] = {}
        #: whose share the bytes of the engine's own sized fan-outs are (try_take's ``size``): no worker's call set
        #: them off, and they share one max_call_bytes_per_worker between them
        self.engine_own = _payload_account(ENGINE_OWN)

    @property
    def waiting(self) -> int:
        """Slots producers are waiting for."""
        return self._waiting

    def stats(self) -> dict[str, int]:
        """The counters, as ``engine::metrics::list`` and ``engine::health::check`` report them."""
        return {"in_flight": self.in_flight, "max_fired_calls": self.limit, "peak": self.peak,
                "waiting": self._waiting, "skipped": self.skipped, "refused": self.refused,
                "bytes_in_flight": self.bytes_in_flight, "max_fired_bytes": self.byte_limit,
                "max_fired_calls_per_worker": self.callee_limit,
                "busiest_callee": max((callee.n for callee in self._callees.values()), default=0),
                "skipped_callee_share": self.skipped_callee_share}

    def degraded(self) -> bool:
        """Whether a call was skipped or refused within the last :data:`DEGRADED_WINDOW_S`."""
        return (self._losses.recent(DEGRADED_WINDOW_S) or self._share_losses.recent(DEGRADED_WINDOW_S)
                or self._callee_losses.recent(DEGRADED_WINDOW_S))

    def to_callee(self, slot: FiredSlots, worker_id: str, function_id: str, *,
                  tell_producer: bool = True) -> CalleeCall | None:
        """Hand ``slot`` (one, taken for a call of ``function_id``, a function of worker ``worker_id``) to that call,
        with a place in its callee's ``max_fired_calls_per_worker``: what the call holds, for it to release. ``None``
        when the worker has its share in flight: the call is not to be made; ``slot`` is given back, the loss
        counted and logged, and noted for the answer of the worker's call that set it off (see the class) unless
        ``tell_producer`` is false (a state or stream write's triggers: the write is made whatever they do)."""
        callee = self._callee_with_room(worker_id, function_id, tell_producer=tell_producer)
        if callee is None:
            slot.release()
            return None
        if isinstance(slot, FiredHold) and slot.charge is not None and slot.charge.worker is self.engine_own:
            moved = self._own_to_callee(slot.charge.size, worker_id, callee, function_id)
            if moved is None:
                slot.release()
                if not callee.n:
                    del self._callees[worker_id]
                return None
            slot = moved
        callee.n += 1
        functions = callee.functions
        functions[function_id] = functions.get(function_id, 0) + 1
        return CalleeCall(self, slot, callee, function_id)

    def condition_place(self, worker_id: str, function_id: str) -> CalleePlace | None:
        """A place in worker ``worker_id``'s ``max_fired_calls_per_worker`` for a call of ``function_id``, a trigger's
        condition, for as long as it runs; ``None`` when that worker has its share in flight: the condition is not
        asked and its trigger is skipped (counted in :attr:`skipped` and :attr:`skipped_callee_share`, logged as
        another call to that worker not made). Why: a condition ran in its trigger's slot but on no callee's share,
        and a condition worker that never answered held every slot of the engine (ten every-second cron triggers
        with ``max_fired_calls`` 40: all 40 within 4 s, and other workers' publishes failed ``fire_limit``)."""
        callee = self._callee_with_room(worker_id, function_id, tell_producer=False)
        if callee is None:
            return None
        callee.n += 1
        functions = callee.functions
        functions[function_id] = functions.get(function_id, 0) + 1
        return CalleePlace(self, callee, function_id)

    def _callee_with_room(self, worker_id: str, function_id: str, *, tell_producer: bool) -> _Callee | None:
        """``worker_id``'s count of calls in flight when it has room for one more, else ``None`` (the call to
        ``function_id`` not made: counted and logged)."""
        callee = self._callees.get(worker_id)
        if callee is None:
            callee = self._callees[worker_id] = _Callee(worker_id)
        elif callee.n >= self.callee_limit:
            self._over_callee(callee, function_id, tell_producer=tell_producer)
            return None
        return callee

    def _own_to_callee(self, size: int, worker_id: str, callee: _Callee, function_id: str) -> FiredHold | None:
        """The hold of one call of the engine's own fan-out, its payload's ``size`` bytes moved from
        :attr:`engine_own` to what ``worker_id`` holds of such payloads (at most ``max_call_bytes_per_worker``, one
        payload alone always fits); ``None`` past it (counted and logged as a call not made). Why per callee: with one
        share for all of them, a log trigger whose handler never answered held it whole, and every other worker's
        log trigger got nothing (19 of 100 records, then none)."""
        own = self._own_bytes.get(worker_id)
        if own is None:
            own = self._own_bytes[worker_id] = _payload_account(worker_id)
        if own.call_bytes and own.call_bytes + size > self.worker_byte_limit:
            self._over_callee(callee, function_id, f"worker {worker_id} holds {own.call_bytes} bytes of the payloads "
                                                   f"of log trigger calls it has not answered, and this one is {size} "
                                                   f"more (max_call_bytes_per_worker {self.worker_byte_limit})")
            return None
        self.engine_own.call_bytes -= size
        own.call_bytes += size
        return FiredHold(self, 1, CallCharge(own, size))

    def callee_left(self, callee: _Callee, function_id: str) -> None:
        """A call of ``function_id`` to ``callee`` is over (:meth:`CalleeCall.release`)."""
        callee.n -= 1
        functions = callee.functions
        left = functions[function_id] - 1
        if left:
            functions[function_id] = left
        else:
            del functions[function_id]
        if not callee.n and self._callees.get(callee.worker_id) is callee:
            del self._callees[callee.worker_id]
            self._own_bytes.pop(callee.worker_id, None)  # (none held: its calls' slots went back before this)

    def _over_callee(self, callee: _Callee, function_id: str, why: str | None = None, *,
                     tell_producer: bool = True) -> None:
        self.skipped += 1
        self.skipped_callee_share += 1
        self._callee_latest = (callee, function_id, why)
        self._callee_losses.lost("skipped", function_id)
        charge = _live_charge() if tell_producer else None
        if charge is not None:
            charge.unreached += 1
            if charge.unreached == 1:
                charge.unreached_why = f"the call of {function_id}: {why or self._callee_full(callee)}"

    def _callee_full(self, callee: _Callee) -> str:
        """Why a call to ``callee`` is not made: its share is in flight, and to which function the most of it."""
        function_id, n = callee.busiest()
        return (f"worker {callee.worker_id} has {callee.n} trigger-fired calls in flight (max_fired_calls_per_worker "
                f"{self.callee_limit}), {n} of them to {function_id}: a call counts until its handler answers or "
                f"its worker disconnects")

    def unreached(self, charge: CallCharge, what: str) -> str | None:
        """The ``fire_limit`` message for the answer of ``what``, a worker's call, when fired calls it set off were
        not made for their callee's share (:attr:`CallCharge.unreached`), else ``None``.

        Example:
            >>> worker = WorkerConnection.__new__(WorkerConnection)
            >>> charge = CallCharge(worker, 0)
            >>> charge.unreached, charge.unreached_why = 2, "the call of a::b: ..."
            >>> FiredCalls(8).unreached(charge, "publish")
            'publish: 2 of the trigger-fired calls it set off not made (the others were): the call of a::b: ...'
        """
        if not charge.unreached:
            return None
        return (f"{what}: {charge.unreached} of the trigger-fired calls it set off not made (the others were): "
                f"{charge.unreached_why}")

    def _busiest(self) -> str:
        """The callee worker holding the most of the room, for a refusal or a warning at the engine's bound (worked
        out at most once per :data:`BUSIEST_REFRESH_S`: a flood refused at the bound must not scan every callee per
        refusal)."""
        now = time.monotonic()
        at, named = self._busiest_named
        if now - at < BUSIEST_REFRESH_S:
            return named
        named = ""
        if self._callees:
            callee = max(self._callees.values(), key=lambda callee: callee.n)
            function_id, n = callee.busiest()
            named = (f", {callee.n} of them to worker {callee.worker_id} (max_fired_calls_per_worker "
                     f"{self.callee_limit}), {n} to {function_id}")
        self._busiest_named = (now, named)
        return named

    def try_take(self, n: int = 1, size: int = 0) -> FiredHold | None:
        """Take ``n`` slots (and their bytes) if they are free now and nobody waits: what was taken, for its holder
        to release; ``None`` (nothing taken) otherwise.

        The bytes are those of the call running now (its :class:`CallCharge`), each slot holding its frame's size.
        Outside any call, ``size``: the bytes each slot's payload keeps alive, which a producer of the engine's own
        names (a log trigger's entry). They hold ``max_fired_bytes`` (:attr:`engine_own` holds them until each call
        is handed to its callee), and each call's bytes then hold one ``max_call_bytes_per_worker`` of its callee
        worker's, for such payloads only (:meth:`to_callee`). Before, such calls held no bytes: a log trigger whose
        handler never answered kept 1 GB of 1 MB entries alive in 25 s, the log store holding 67 MB.

        Example:
            >>> fired = FiredCalls(8, max_fired_bytes=1000, max_call_bytes_per_worker=300)
            >>> hold = fired.try_take(2, size=400)
            >>> fired.bytes_in_flight, fired.engine_own.call_bytes, fired.try_take(2, size=400) is None
            (800, 800, True)
            >>> hold.release(); fired.bytes_in_flight
            0
        """
        charge = _live_charge()
        if charge is None and size > 0:
            charge = CallCharge(self.engine_own, size)
        if not self._try_take(n, n * charge.size if charge is not None else 0, charge):
            return None
        return self.hold_of(n, charge)

    def hold_of(self, n: int, charge: CallCharge | None) -> FiredHold:
        """The hold of ``n`` slots taken for ``charge``: the shared one of :meth:`plain` when they hold no bytes."""
        return self.plain(n) if charge is None else FiredHold(self, n, charge)

    def plain(self, n: int) -> FiredHold:
        """A hold of ``n`` slots that hold no bytes (not a take: the caller took them).

        Example:
            >>> fired = FiredCalls(4)
            >>> fired.plain(2) is fired.plain(2), fired.plain(2).charge, fired.in_flight
            (True, None, 0)
        """
        hold = self._plain.get(n)
        if hold is None:
            hold = FiredHold(self, n, None)
            if n <= _PLAIN_CACHED:
                self._plain[n] = hold
        return hold

    def _try_take(self, n: int, size: int, charge: CallCharge | None) -> bool:
        if self._past_share(size, charge):  # named first: it is refused however much room the engine has
            assert charge is not None
            self._over_share = (n, size, charge)
            return False
        if self._waiters or not self._fits(n, size):
            self._over_share = None
            return False
        self._hold(n, size)
        if size:
            assert charge is not None
            charge.worker.call_bytes += size
        return True

    def _past_share(self, size: int, charge: CallCharge | None) -> bool:
        """Whether ``size`` more bytes would take ``charge``'s worker past its ``max_call_bytes_per_worker`` (the
        engine's own fan-outs have none: each of their calls is held to its callee's, :meth:`to_callee`)."""
        return (size > 0 and charge is not None and charge.worker is not self.engine_own
                and charge.worker.call_bytes + size > self.worker_byte_limit)

    def _fits(self, n: int, size: int) -> bool:
        held = self.bytes_in_flight
        return self.in_flight + n <= self.limit and (held + size <= self.byte_limit or held == 0)

    def _hold(self, n: int, size: int) -> None:
        """Count ``n`` calls and ``size`` bytes in flight (their worker's share holds the bytes already)."""
        in_flight = self.in_flight = self.in_flight + n
        if in_flight > self.peak:
            self.peak = in_flight
        self.bytes_in_flight += size

    def _full(self, size: int) -> str:
        """What is full, for a refusal: the calls in flight, and their bytes when those are what ``size`` more
        does not fit."""
        full = f"{self.in_flight} trigger-fired calls in flight (max_fired_calls {self.limit}){self._busiest()}"
        if self.bytes_in_flight + size > self.byte_limit:
            full += f" holding {self.bytes_in_flight} bytes (max_fired_bytes {self.byte_limit})"
        return full

    async def take(self, n: int, what: str, targets: str = "calls") -> FiredHold:
        """Take ``n`` slots, all at once, waiting in turn for at most ``fire_wait_timeout_ms``: what was taken, for
        its holder to release.

        ``what`` names the producer and ``targets`` what it fires (``"subscribers"``) in the error.

        Raises:
            EngineError: ``fire_limit`` when the wait runs out, or when ``n`` could never fit or too many
                producers wait already; nothing is taken then.
        """
        charge = _live_charge()
        size = n * charge.size if charge is not None else 0
        if self._try_take(n, size, charge):
            return self.hold_of(n, charge)
        if self._past_share(size, charge):
            assert charge is not None
            self._over_share = None  # kept for skip() only: it held the charge, and through it the worker, alive
            raise self._refuse(n, f"{what}: none of its {n} {targets} reached: {self._past(n, size, charge)}",
                               self._share_losses)
        if n > self.limit:
            raise self._refuse(n, f"{what}: none of its {n} {targets} reached: more than max_fired_calls "
                               f"{self.limit} trigger-fired calls at once")
        waiting_bytes = bool(self._waiters) and self._waiting_bytes + size > self.byte_limit
        if len(self._waiters) >= self.limit or waiting_bytes:
            # each waiter holds its payload too (its producer's call): they are bounded like those in flight
            asked = f" for {self._waiting_bytes} bytes (max_fired_bytes {self.byte_limit})" if waiting_bytes else ""
            raise self._refuse(n, f"{what}: none of its {n} {targets} reached: {self._full(size)} and "
                               f"{len(self._waiters)} producers already waiting for room{asked}")
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()
        deadline = loop.time() + self.wait_timeout_ms / 1000
        self._waiters[granted] = (n, size, charge, deadline)
        self._waiting += n
        self._waiting_bytes += size
        if size:
            # on its worker's share while it waits: one worker's waiters ask for at most its share
            assert charge is not None
            charge.worker.call_bytes += size
        if self._deadline_timer is None:
            self._deadline_timer = loop.call_at(deadline, self._expire)
        try:
            await granted
        except _WaitExpired:
            raise self._refuse(n, f"{what}: none of its {n} {targets} reached: no room within "
                               f"{self.wait_timeout_ms} ms (fire_wait_timeout_ms): {self._full(size)}") from None
        except BaseException:
            if granted.done() and not granted.cancelled():
                if granted.exception() is None:
                    self.give(n, charge)  # cancelled as they were granted: given back
                raise  # (or as its deadline came: nothing was taken)
            granted.cancel()
            # still queued unless a release in the turn it was cancelled passed it by (see _grant)
            if self._waiters.pop(granted, None) is not None:
                self._left(n, size, charge)
                self._grant()  # the head may have left: those behind it may fit now
            raise
        return self.hold_of(n, charge)

    def _expire(self) -> None:
        """The deadline timer: waiters whose ``fire_wait_timeout_ms`` is over leave with :class:`_WaitExpired`.

        Every waiter waits the same time and they are queued in arrival order, so deadlines come in queue order:
        one timer, armed for the oldest waiter, serves them all (an ``asyncio.timeout`` per waiter cost a timer,
        its cancellation and a context manager per wait).
        """
        self._deadline_timer = None
        waiters = self._waiters
        loop = asyncio.get_running_loop()
        now = loop.time()
        left = False
        while waiters:
            granted, (n, size, charge, deadline) = next(iter(waiters.items()))
            if not granted.done() and deadline > now:
                self._deadline_timer = loop.call_at(deadline, self._expire)
                break
            # expired, or cancelled and not yet back to clean up (it finds itself gone and grants nothing)
            del waiters[granted]
            self._left(n, size, charge)
            left = True
            if not granted.done():
                granted.set_exception(_WaitExpired())
        if left:
            self._grant()  # a large head gone: smaller ones behind it may fit now

    def release(self, n: int = 1) -> None:
        """Give back ``n`` slots known to hold no bytes (taken where no worker's call was charged, as a test or a tool
        outside any call takes them). The engine's producers give back through the :class:`FiredHold` their take
        returned: only it knows what that take charged."""
        self.give(n, None)

    def give(self, n: int, charge: CallCharge | None) -> None:
        """Give back ``n`` slots taken for ``charge`` (``None``: they hold no bytes); waiters that now fit get
        theirs, in order."""
        self.in_flight -= n
        if charge is not None and charge.size:
            size = n * charge.size
            self.bytes_in_flight -= size
            charge.worker.call_bytes -= size
        if self._waiters:
            self._grant()

    def _grant(self) -> None:
        waiters = self._waiters
        while waiters:
            granted, (n, size, charge, _) = next(iter(waiters.items()))
            if granted.done():
                # cancelled (its task was, or its deadline came) and not yet back to clean up: it gets nothing,
                # the slots go on down the line
                del waiters[granted]
                self._left(n, size, charge)
                continue
            if not self._fits(n, size):
                return  # FIFO: nobody overtakes the head, so a large fan-out is never starved by small ones
            del waiters[granted]
            self._left(n, size)
            self._hold(n, size)  # its worker's share holds the bytes since it began to wait
            granted.set_result(None)

    def _left(self, n: int, size: int, unserved: CallCharge | None = None) -> None:
        """A waiter asking for ``n`` slots and ``size`` bytes left the queue; ``unserved``: its charge, when it
        leaves without them (its bytes go back to its worker's share)."""
        self._waiting -= n
        self._waiting_bytes -= size
        if unserved is not None:
            unserved.worker.call_bytes -= size

    def _past(self, n: int, size: int, charge: CallCharge) -> str:
        """Why a fan-out of ``n`` calls, ``size`` bytes in all, does not fit ``charge``'s worker's share."""
        worker, limit = charge.worker, self.worker_byte_limit
        if charge.size + size > limit:  # not even with nothing else held
            return (f"they would hold {size} bytes ({charge.size} each, its frame's size), more with the frame "
                    f"itself than worker {worker.id} may hold (max_call_bytes_per_worker {limit})")
        return (f"worker {worker.id} holds {worker.call_bytes} bytes in calls in flight and the trigger-fired calls "
                f"they set off, and these would hold {size} more (max_call_bytes_per_worker {limit})")

    def skip(self, what: str, n: int = 1) -> None:
        """Count ``n`` calls of ``what`` skipped for want of room (after :meth:`try_take` failed), and warn
        (rate-limited, never silent), naming the bound that refused them: ``max_fired_calls`` and
        ``max_fired_bytes``, or the share of the worker whose call set them off."""
        self.skipped += n
        over, self._over_share = self._over_share, None
        if over is not None and over[0] == n:
            self._share_losses.lost("skipped", f"{what}: {self._past(*over)}", n)
        else:
            self._losses.lost("skipped", what, n)

    def _refuse(self, n: int, message: str, losses: LossLog | None = None) -> EngineError:
        """Count ``n`` calls refused to a waiting producer and warn (rate-limited: a void call's producer hears of
        it from nobody else) in ``losses`` (the engine's room by default); the error for the producer."""
        self.refused += n
        (losses or self._losses).lost("refused", message, n)
        return EngineError(FIRE_LIMIT, message)

    def _log_lost(self, counts: Mapping[str, int], what: str | None) -> None:
        latest = latest_tail(what)
        log.warning("trigger-fired calls not made, no room under max_fired_calls %d: %d skipped (nobody to wait), "
                    "%d refused (their producer failed with fire_limit) since the last warning; %d skipped, "
                    "%d refused in all, %d in flight%s%s", self.limit, counts.get("skipped", 0),
                    counts.get("refused", 0), self.skipped, self.refused, self.in_flight, self._busiest(), latest)

    def _log_callee_share(self, counts: Mapping[str, int], what: str | None) -> None:
        latest = self._callee_latest
        assert latest is not None
        callee, function_id, why = latest
        # the callee's calls as they are now (none: its calls ended, or it left, since)
        now = why or (self._callee_full(callee) if callee.n else f"worker {callee.worker_id} has none in flight now")
        # (past max_call_bytes_per_worker of the engine's own payloads instead, the latest says so)
        log.warning("trigger-fired calls not made, their callee worker at max_fired_calls_per_worker %d: %d since the "
                    "last warning (counted in skipped and skipped_callee_share), %d in all; latest: a call of %s: %s",
                    self.callee_limit, counts["skipped"], self.skipped_callee_share, function_id, now)

    def _log_over_share(self, counts: Mapping[str, int], what: str | None) -> None:
        latest = latest_tail(what)
        log.warning("trigger-fired calls not made, past the share of the worker whose call set them off "
                    "(max_call_bytes_per_worker %d): %d skipped (nobody to wait), %d refused (their producer failed "
                    "with fire_limit) since the last warning (counted in skipped and refused); %d in flight%s",
                    self.worker_byte_limit, counts.get("skipped", 0), counts.get("refused", 0), self.in_flight,
                    latest)

    def close(self) -> None:
        """Engine shutdown: stop the deadline timer (an engine started again arms a new one on its loop) and the
        pending warning timer (its count is logged now)."""
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._losses.close()
        self._share_losses.close()
        self._callee_losses.close()


class WorkerCalls:
    """The bound on the calls one worker has in flight through the engine (``max_calls_per_worker``).

    Why: a worker's frames are bounded in bytes, not in count. Each call it starts holds something in the engine
    until it is over: a task per built-in call or enqueue action, a pending-table entry per call of a worker
    function (a void one too, until its callee answers). A worker calling faster than its callees answer (or a
    callee that never answers, with no ``invocation_timeout_ms``) grew the engine without end.

    The same goes for bytes (``max_call_bytes_per_worker``): a worker's count of 10,000 void ``publish`` calls of
    4 MiB, or the deliveries they left in flight, is 40 GB. A worker's built-in call or enqueue action holds its
    frame's size while it runs, and each trigger-fired call it sets off holds it again until that one is over
    (:class:`CallCharge`): a publisher faster than its subscribers is refused before its share is past, long before
    the engine-wide ``max_fired_bytes``, so the other workers' publishes still get room. A call is refused while
    the worker holds its share or more (so a frame bigger than the share still gets in alone); a fan-out it sets
    off that would take the worker past its share is refused at once, none of it delivered (``fire_limit``, see
    :class:`FiredCalls`): a publish's frame times its subscribers, plus the frame itself, must fit the share.

    The count is bounded for each kind of call apart: calls of worker functions, and built-in calls and enqueue
    actions (each up to ``max_calls_per_worker``). Why: with no ``invocation_timeout_ms`` a call a callee never
    answers counts until the callee answers or a side disconnects (the wire has no cancel: a caller's own timeout
    or cancellation does not end it). Counted together, 10,000 calls of a hung function left the worker unable to
    list functions, open a channel or call any built-in until it reconnected; the built-ins end on their own.
    The refusal of a call of a worker function names the function holding the most of them (:meth:`refuse`'s
    ``held``), so the hung callee shows.

    The counts live on the worker (:attr:`WorkerConnection.calls`, of which :attr:`WorkerConnection.builtin_calls`,
    and :attr:`WorkerConnection.call_bytes`); :class:`~iii_engine.invocations.Invocations` takes and gives back, and
    calls :meth:`refuse` for a call past either bound: an answered one gets a ``too_many_calls`` error, a void one
    is dropped; both are counted and logged (rate-limited, never silent).

    Example:
        >>> calls = WorkerCalls(2, 1024)
        >>> calls.stats([])  # doctest: +NORMALIZE_WHITESPACE
        {'max_calls_per_worker': 2, 'in_flight': 0, 'busiest_worker': 0, 'refused': 0, 'refused_void': 0,
         'max_call_bytes_per_worker': 1024, 'bytes_in_flight': 0, 'busiest_worker_bytes': 0}
    """

    def __init__(self, max_calls_per_worker: int = DEFAULT_MAX_CALLS_PER_WORKER,
                 max_call_bytes_per_worker: int = DEFAULT_MAX_CALL_BYTES_PER_WORKER) -> None:
        self.limit = max_calls_per_worker
        self.byte_limit = max_call_bytes_per_worker
        #: calls refused with ``too_many_calls``
        self.refused = 0
        #: void calls (no reply asked for) not made
        self.refused_void = 0
        self._losses = LossLog(self._log_refused, SKIP_LOG_INTERVAL_S)

    def refuse(self, worker: WorkerConnection, function_id: str, answered: bool, *, builtin: bool = False,
               held: str = "") -> str:
        """Count a call of ``function_id`` by ``worker`` refused at the bound (``answered``: it gets the error;
        ``builtin``: a built-in call or enqueue action, else a call of a worker function; ``held``: what holds
        the worker's calls of worker functions, appended to their refusal); the error message.

        Example:
            >>> worker = WorkerConnection.__new__(WorkerConnection)
            >>> worker.id, worker.calls, worker.builtin_calls = "w1", 3, 1
            >>> WorkerCalls(2).refuse(worker, "f", True, held=", 2 of them to slow::f")
            'worker w1 has 2 calls of worker functions in flight (max_calls_per_worker 2), 2 of them to slow::f'
        """
        builtin_calls = worker.builtin_calls
        if builtin and builtin_calls >= self.limit:
            message = (f"worker {worker.id} has {builtin_calls} built-in calls and enqueue actions in flight "
                       f"(max_calls_per_worker {self.limit})")
        elif not builtin and worker.calls - builtin_calls >= self.limit:
            message = (f"worker {worker.id} has {worker.calls - builtin_calls} calls of worker functions in flight "
                       f"(max_calls_per_worker {self.limit}){held}")
        else:
            message = (f"worker {worker.id} holds {worker.call_bytes} bytes in calls in flight and the "
                       f"trigger-fired calls they set off (max_call_bytes_per_worker {self.byte_limit})")
        if answered:
            self.refused += 1
        else:
            self.refused_void += 1
        self._losses.lost("answered" if answered else "void",
                          f"{'call' if answered else 'void call'} of {function_id}: {message}")
        return message

    def stats(self, workers: Iterable[WorkerConnection]) -> dict[str, int]:
        """The counters, as ``engine::metrics::list`` and ``engine::health::check`` report them: ``in_flight``
        sums every worker's calls, ``busiest_worker`` is the most one worker has (of both kinds: up to twice
        ``max_calls_per_worker``); the same for their bytes."""
        workers = list(workers)
        counts = [worker.calls for worker in workers]
        sizes = [worker.call_bytes for worker in workers]
        return {"max_calls_per_worker": self.limit, "in_flight": sum(counts), "busiest_worker": max(counts, default=0),
                "refused": self.refused, "refused_void": self.refused_void,
                "max_call_bytes_per_worker": self.byte_limit, "bytes_in_flight": sum(sizes),
                "busiest_worker_bytes": max(sizes, default=0)}

    def degraded(self) -> bool:
        """Whether a call was refused within the last :data:`DEGRADED_WINDOW_S`."""
        return self._losses.recent(DEGRADED_WINDOW_S)

    def _log_refused(self, counts: Mapping[str, int], what: str | None) -> None:
        latest = latest_tail(what)
        log.warning("worker calls refused over max_calls_per_worker %d or max_call_bytes_per_worker %d: %d answered "
                    "with too_many_calls, %d void (no reply asked for, dropped) since the last warning; %d and %d in "
                    "all%s", self.limit, self.byte_limit, counts.get("answered", 0), counts.get("void", 0),
                    self.refused, self.refused_void, latest)

    def close(self) -> None:
        """Engine shutdown: a pending warning is logged now."""
        self._losses.close()


Held = CallCharge | FiredSlots | CalleeCall | None
"""What a task of :class:`HeldTasks` holds until it ends: one call of a worker's ``max_calls_per_worker`` count and
its bytes (a :class:`CallCharge`), slots of ``max_fired_calls`` and the bytes they hold (what the take returned: a
:class:`FiredHold`), or nothing."""


def _give_back(held: Held) -> None:
    if type(held) is FiredHold:  # a fired call's slot, the most frequent: FiredHold.release without its frame
        held.fired.give(held.n, held.charge)
    elif isinstance(held, CallCharge):
        held.give_back()
    elif held is not None:
        held.release()


def _never_ran(task: asyncio.Task[Any]) -> bool:
    coro = task.get_coro()
    return inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED


class HeldTasks(dict[asyncio.Task[Any], Held]):
    """Tasks that each hold part of a count bound until they end, mapped to what they hold.

    A task gives back what it holds itself, in a ``finally``, and leaves the map: by its own ``del`` (the call
    path: no done callback to schedule per call) or by :meth:`spawn`'s done callback. Why this class: a coroutine
    cancelled before its first step never enters its ``try``, so that ``finally`` never runs; :meth:`close`
    cancels every task and gives back what such ones hold (before, a stop leaked them: a restarted engine had
    that many ``max_fired_calls`` slots fewer, for good). A dict, so the call path adds and removes its tasks by
    plain item assignment. Only :meth:`close` may cancel a task that holds something: one cancelled elsewhere
    before it ran would leave the map (done callback) with what it holds.

    Example:
        >>> async def demo() -> int:
        ...     fired = FiredCalls(2)
        ...     tasks = HeldTasks()
        ...     hold = fired.try_take()
        ...     tasks.spawn(asyncio.sleep(1), hold)  # cancelled before it ever ran: its slot comes back
        ...     await tasks.close()
        ...     return fired.in_flight
        >>> asyncio.run(demo())
        0
    """

    def spawn(self, coro: Coroutine[Any, Any, Any], held: Held, name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` in a task (named ``name``) holding ``held``, which ``coro`` gives back itself when it
        ends; it leaves the map when it is done (:meth:`close` gives back what one that never ran holds)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self[task] = held
        task.add_done_callback(self._forget)
        return task

    def leave(self, task: asyncio.Task[Any]) -> None:
        """``task`` ends (called from its ``finally``, on the call path that maps it itself: :meth:`spawn`'s done
        callback would have taken it out): it gives back exactly what it was mapped to and leaves.

        Why what it is mapped to: that is what was taken for it, whatever code the task ran inline took since.

        Example:
            >>> async def demo() -> tuple[int, int]:
            ...     fired, tasks = FiredCalls(2), HeldTasks()
            ...     async def call() -> None:
            ...         tasks.leave(asyncio.current_task())
            ...     hold = fired.try_take()
            ...     task = asyncio.get_running_loop().create_task(call())
            ...     tasks[task] = hold  # the call path: no done callback
            ...     await task
            ...     return fired.in_flight, len(tasks)
            >>> asyncio.run(demo())
            (0, 0)
        """
        _give_back(self.pop(task))

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self.pop(task, None)

    async def close(self) -> None:
        """Cancel every task and wait for them; gives back what those that never ran hold."""
        # Until none is left: a task may be added while we wait for the cancelled ones (a frame read meanwhile).
        # Each round removes exactly the tasks it cancelled: a later one must stay tracked (a blanket clear()
        # would leave it running, unawaited).
        while self:
            tasks = list(self.items())
            # Checked before the cancel: one whose coroutine never started skips its ``finally`` (any cancel
            # before its first step, this one or an earlier one, e.g. an abandoned call's).
            unstarted = [held for task, held in tasks if held is not None and _never_ran(task)]
            for task, _ in tasks:
                task.cancel()
            await asyncio.gather(*(task for task, _ in tasks), return_exceptions=True)
            for task, _ in tasks:
                self.pop(task, None)
            for held in unstarted:
                _give_back(held)


class Slots:
    """``n`` slots taken first come, first served; a free one is taken without a coroutine (:meth:`try_take`).

    Why not ``asyncio.Semaphore``: its ``acquire`` on a free semaphore cost about 1 % of a whole REST request's CPU
    (a coroutine and two scans of its waiters), and taking its fast path by hand means reading its private fields.

    Example:
        >>> slots = Slots(1)
        >>> slots.try_take(), slots.try_take(), slots.free
        (True, False, 0)
        >>> slots.release(); slots.free
        1
    """

    __slots__ = ("_waiters", "free")

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    def locked(self) -> bool:
        """Whether a taker would wait now."""
        return self.free <= 0 or bool(self._waiters)

    def try_take(self) -> bool:
        """Take a slot now if one is free and nobody waits (a request never passes one that waits)."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting in turn; a cancelled wait takes nothing (a slot handed over as it was cancelled
        goes to the next waiter)."""
        if self.try_take():
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            await granted
        except BaseException:
            if granted.done() and not granted.cancelled():
                self.release()  # handed over in the turn it was cancelled: passed on
            else:
                granted.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(granted)
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter, else to the free count."""
        while self._waiters:
            granted = self._waiters.popleft()
            if not granted.done():
                granted.set_result(None)
                return
        self.free += 1
