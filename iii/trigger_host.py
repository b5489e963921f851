"""Hosts the custom trigger types this worker owns: hands each trigger the engine binds or unbinds to the
type's :class:`~iii.triggers.TriggerHandler`, and after a reconnect unbinds what the engine no longer has.

A handler hears of each trigger as the engine holds it: bound once (a ``registertrigger`` sent again for a trigger
it holds with the same function and config, as every reconnect's replay does, is answered without binding it a second
time; with a different one, the old binding is unbound first), unbound once, and the calls for one trigger id run one
after the other, in the order the engine sent them.

A binding is unbound by the handler that made it. Owning a type again with another handler (``add`` over one in
place, as ``register_trigger_type`` called again does) moves each trigger when the engine sends it again, which the
engine does for every trigger of a type it is sent a registration of: the old handler unbinds it, then the new one
binds it. Before, the new handler never heard of the triggers bound before the swap (the same one sent again was
taken as already bound), the old one kept them for good, and their unbinds went to the new handler.

Letting a type go (:meth:`TriggerTypeHost.release`) unbinds what it holds, each trigger in its turn like any other
bind or unbind of it; a trigger still waiting for that unbind when the engine sends it again (the type owned again at
once) is unbound by that bind, first. Before, the release's unbinds ran later, out of turn: the type's new bind of a
trigger ran before the release's unbind of it, which then undid it (the handler held nothing while the engine listed
the trigger), or, with another handler, the trigger was bound at both for a while.

A hook that does not finish holds nothing for good, and no hook is cancelled (but at the client's shutdown, past the
wait for the releases' unbinds: see :class:`TriggerTypeHost`). Each bind
or unbind has a deadline (the client's ``InitOptions.invocation_timeout_ms``; none when 0): past it the wait for it
ends (logged once with the handler's name and the deadline) and a bind is answered to the engine as refused
(``trigger_registration_failed``: the trigger waits, pending, for the type's next registration). Letting the type go
(:meth:`TriggerTypeHost.release`) ends the wait for its hooks running then, a bind answered as the type released.
Either way the trigger's turn (and the worker's ``max_invocations`` slot) is free at once, and the hook runs on in the
background: a bind that ends there is unbound by the same handler, in the trigger's turn (the engine was told it was
not bound); an unbind runs to its end; an error either raises there is logged (with its traceback). The same handler's
next bind or unbind of that trigger waits for it first (at most the deadline, 30 s when none, counted from when it was
left to run on). Still running then (logged once): a bind after a bind is refused (``trigger_registration_failed``,
"its previous register_trigger is still running": a retry, the type registered again or a reconnect's replay, no
longer calls a hung bind again; 201 calls ran after 200 re-registrations), an unbind waits in the background until it
has ended, and a bind after an unbind goes ahead (the one overlap left: the unbind of one binding must not keep the
trigger from being bound again). A release's unbinds (and a sweep's) run a few at once (64), not one after the other
(one hung unbind held the others), and one past its deadline (30 s when none) gives its place to the next as it runs
on: each trigger's unbind starts within about n / 64 deadlines (with no deadline, 64 unbinds that never returned kept
the release's other triggers bound for good). Before, a ``register_trigger`` that never returned held its trigger's
turn for good, even after the type was let go and owned again, and ``max_invocations`` of them held every slot, so no
trigger of any type was bound any more; and hooks cancelled at the deadline, or by the trigger's next turn, left
bindings nobody unbound (a bind finishing just past it; an unbind cut short) or one trigger bound twice (a release's
unbind cancelled by a bind of the type owned again).

Example:
    >>> import asyncio
    >>> class Hooks:
    ...     async def register_trigger(self, config): print("bound", config.id)
    ...     async def unregister_trigger(self, config): print("unbound", config.id)
    >>> host = TriggerTypeHost()
    >>> host.add("hook", Hooks())
    >>> async def demo() -> None:
    ...     await host.register("hook", "t1", "f", {}, generation=1)
    ...     await host.register("hook", "t2", "f", {}, generation=1)
    ...     await host.register("hook", "t1", "f", {}, generation=2)  # a new connection's replay: bound already
    ...     await host.sweep(2, listed=set())  # t2 was not sent again on connection 2, nor listed: gone
    >>> asyncio.run(demo())
    bound t1
    bound t2
    unbound t2
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import threading
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from .callback_set import callback_name
from .handler_runner import describe_base_exception, handler_raised
from .loss_log import BurstLog, LossLog, latest_tail
from .triggers import TriggerConfig, TriggerHandler

__all__ = ["TriggerTypeHost"]

log = logging.getLogger(__name__)

_REFUSAL_LOG_INTERVAL_S = 10.0


def _log_refusals(counts: Mapping[str, int], latest: str | None) -> None:
    log.error("%d more trigger registration(s) refused by their type's handler (it raised) since the last line%s",
              counts["refused"], latest_tail(latest))


def _log_abandoned(counts: Mapping[str, int], latest: str | None) -> None:
    log.error("%d more trigger hook(s) abandoned past their deadline since the last line%s", counts["abandoned"],
              latest_tail(latest))

_Key = tuple[str, str]  # (trigger type, trigger id)
_T = TypeVar("_T")

# How long the next hook of a trigger waits for its handler's hook of it left running in the background, when the
# client has no deadline (invocation_timeout_ms 0): not for good (a hung one would hold the trigger).
_DETACHED_WAIT_S = 30.0

# Stale (or released) triggers a sweep (or a release) unbinds at once: one after the other, 200 with a 0.2 s unbind
# took 40 s to converge; more than this many at once would only pile up on the handler. One past its deadline no
# longer counts (see _each_at_most).
_SWEEP_CONCURRENCY = 64


class _Binding(NamedTuple):
    """A trigger bound here and the handler that bound it (the one to unbind it, whichever owns the type now)."""

    trigger: TriggerConfig[Any]
    handler: TriggerHandler[Any]


class _ReleaseRun:
    """The unbinds one release owes (``keys``), and the task running them (``None``: not started yet: its coroutine
    not run, or cancelled, or closed, before its first step)."""

    __slots__ = ("keys", "task")

    def __init__(self, keys: list[_Key]) -> None:
        self.keys = keys
        self.task: asyncio.Task[None] | None = None


class _HookStopped(Exception):
    """A hook no longer waited for, running on in the background: past its deadline (``released`` False) or its
    type let go (``released`` True)."""

    def __init__(self, released: bool) -> None:
        super().__init__("released" if released else "deadline")
        self.released = released


class _HookBusy(Exception):
    """The handler's previous hook of the trigger (``name``) still runs in the background past its ``due``: a bind
    is refused rather than its hook called again (each retry called it again: 201 hung calls after 200)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"its previous {name} is still running")
        self.name = name


_GO, _RELEASED, _BUSY = "go", "released", "busy"


class _Detached:
    """A hook no longer waited for (past its deadline, or its type let go) that runs on in the background; ``due``:
    until when (loop time) the same handler's next hook of its trigger waits for it. ``owed``: an unbind a release
    owes (or a bind whose binding it would owe the unbind of), which the client's shutdown waits for; ``overdue``:
    left past its own deadline (logged then), which the shutdown names but does not wait for. ``claim``: a bind
    whose wait the client's shutdown cancelled (its hook running on), made under that owning of its type: should
    the hook bind (it returns), the binding is noted as any other while the type is owned so
    (:meth:`TriggerTypeHost._keep`), else undone as a detached bind's is, the shutdown waiting for it."""

    __slots__ = ("binds", "claim", "due", "handler", "logged", "overdue", "owed", "task", "trigger")

    def __init__(self, task: asyncio.Task[BaseException | None], handler: TriggerHandler[Any],
                 trigger: TriggerConfig[Any], binds: bool, due: float, owed: bool = False,
                 overdue: bool = False, claim: object | None = None) -> None:
        self.task = task
        self.claim = claim
        self.handler = handler
        self.trigger = trigger
        self.binds = binds
        self.due = due
        self.owed = owed
        self.overdue = overdue
        self.logged = False


class TriggerTypeHost:
    """Trigger type id → handler.

    ``on_gone(type_id, trigger_id)`` is called (on the loop, as the sweep decides it) for each trigger a sweep finds
    the engine no longer has: the client's session forgets what it kept of it (no ``unregistertrigger`` will come
    for it to do so; a provider whose 500 triggers went with each engine restart kept 500 more entries per restart).

    At the client's shutdown, the unbinds the types let go before it owe (:meth:`release`: ``unregister_trigger_type``
    called before ``shutdown()``) run to their end first, those not started yet started then, ``CANCEL_WAIT_S``
    (3 s) at most in all and each hook at most its deadline, as ever (:meth:`finish_releases`); what still runs then
    is named in one line and cancelled with the client, as its hooks running in the background are
    (:meth:`cancel_hooks`: the client's loop ends next, and with it any task left on it). Before, the release's
    unbinds were cancelled with the handlers' tasks: 0 of 5 ran. Owed by any path: a hook of the type running as it
    is let go (no longer waited for by its caller: an unbind, the engine's or a release's, or a bind, which its
    handler then unbinds) is waited for as well, and named if it still runs (before, cancelled at once without a
    word: 5 of 5 runs). A hook shutting its client down (the shutdown's caller) is neither waited for nor cancelled
    (waited for, it held the shutdown 3 s, then was cancelled in its own ``shutdown_async``). A type let go while
    the shutdown waits is unbound too; let go once the wait is over (the client's loop ends next), its triggers are
    not unbound, and a warning names them (before, nothing was run or said). The triggers of the types still owned
    are left as they are: no ``unregister_trigger`` is called for them (as the reference SDK does; the engine drops a
    worker's trigger types as it leaves, and parks their triggers for the type's next owner). Let a type go first to
    have its triggers unbound.

    A bind or unbind under way as the shutdown cancels the handlers' tasks (the engine's, a release's, a sweep's):
    an unbind, its binding taken from the table already, runs to its end within the same wait (cut short, or
    cancelled before its hook, the binding stayed for good); a bind's hook runs on in the background and is taken
    as it ends: returned (as the cancel came, or later), it bound, and is noted as bound while its type is owned as
    when it was made (its type let go during the wait: the wait waits for the bind, and its handler unbinds it);
    cancelled with the client (the ``CancelledError`` raised out of it) or failed, nothing was bound and no unbind
    is called (what a cancelled hook had done is its own to undo, as for any cancelled coroutine). Before, a bind
    ending just as its task was cancelled was never noted as bound, and one running then was cancelled at once,
    though a bind made in a thread went on: a type let go during the shutdown kept them bound for good (11 bindings
    never unbound in 5 of 20 storm runs, now 0 in 20); a hook shutting its client down from its bind got
    ``CancelledError`` out of its own ``shutdown_async``.
    """

    def __init__(self, on_gone: Callable[[str, str], None] | None = None,
                 hook_deadline: float | None = None) -> None:
        # how long a bind or unbind hook is waited for (seconds; None or 0: for ever)
        self._deadline = hook_deadline or None
        # for the hook running for each trigger now (one at a time: the trigger's turn), what release() sets to stop
        # the wait for it (a set: an undo runs within a hook's wait for the hooks before it)
        self._waits: dict[_Key, set[asyncio.Future[None]]] = {}
        # the hooks no longer waited for (past their deadline, or their type let go) that run on in the background:
        # never cancelled but at the client's shutdown (cancelled, a bind may have bound already in a thread, an
        # unbind left the binding), a bind that ends undone by its handler in its trigger's turn, and each waited for
        # by the same handler's next hook of the trigger
        self._detached: dict[_Key, list[_Detached]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._handlers: dict[str, TriggerHandler[Any]] = {}
        # what was bound here and not unbound, with the handler that bound it: told to unbind it when the type is let
        # go, when the engine unbinds it, or when the engine sends it again after the type changed handlers
        self._bound: dict[str, dict[str, _Binding]] = {}
        # one token per owning of a type (a new one after a remove): a bind that ran while its type was let go (and
        # maybe owned again) is undone at its end, as what release() unbinds never saw it
        self._claims: dict[str, object] = {}
        # Bindings of a type let go (release()) whose unbind has not run yet: taken, and unbound, by whichever comes
        # first in the trigger's turn, the release's unbinds or a new bind of the same trigger.
        self._releasing: dict[_Key, _Binding] = {}
        # the releases whose unbinds have not all ended (added on the user's thread, under _lock): each runs in a task
        # of the host's own, which the client's shutdown waits for (bounded) rather than cancelling the release's
        # caller's task with its hooks: unregister_trigger_type then shutdown() ran 0 of 5 unbinds
        self._release_runs: set[_ReleaseRun] = set()
        # the tasks running the unbinds the releases owe (loop thread): each release's run (None), and each binding's
        # unbind (its key), whoever runs it (the release, or a bind of the trigger that came first, or a bind that
        # ended after its type was let go): not cancelled with the task that started it, waited for at shutdown
        self._owed: dict[asyncio.Task[None], _Key | None] = {}
        # each hook task a bind or unbind waits for now, and what ends that wait (loop thread): the client's
        # shutdown called from a hook (its caller) ends the wait for it, or the release owing it held the shutdown
        self._hook_waits: dict[asyncio.Future[Any], asyncio.Future[None]] = {}
        # the client's shutdown (finish_releases): the loop while it waits for the releases' unbinds, a release
        # meanwhile started at once there (under _lock); _finished once that wait is over: a release after it
        # cannot be run any more, and says so; _spare: the shutdown's caller, neither waited for nor cancelled
        self._finishing: asyncio.AbstractEventLoop | None = None
        self._finished = False
        self._spare: asyncio.Future[Any] | None = None
        # release() runs on the user's thread, the binds on the loop's: what release() moves from _bound to
        # _releasing, and a bind's look at (and entry into) both, are made under this lock (never held over an await)
        self._lock = threading.Lock()
        self._on_gone = on_gone
        # Every trigger the engine sent (bound or being bound): the connection (ClientSession.generation) whose
        # engine sent its registertrigger last, with no unregistertrigger since, and that send's number; a sweep or
        # an unregister takes it away, and so does a refusal unless a newer send of the same id is queued behind it
        # (the engine sends no unregistertrigger for a trigger the owner refused: kept, 20,000 refused triggers left
        # 20,000 entries until a reconnect). Set as the frame is read, not when its bind runs: a sweep after a new
        # connection's replay must see what the replay re-sent before any of it is bound.
        self._sent: dict[_Key, tuple[int, int]] = {}
        self._sends = itertools.count()
        # The bind or unbind of a trigger now running: the next one of that trigger waits for it (an unbind
        # overtaking the bind it undoes left the trigger bound for good, with no unbind to come).
        self._busy: dict[_Key, asyncio.Future[None]] = {}
        # bindings the handler refused (it raised): a traceback each up to a burst, the rest counted (loop thread)
        self._refusals = BurstLog(10, _REFUSAL_LOG_INTERVAL_S, log.error, LossLog(_log_refusals,
                                                                                  _REFUSAL_LOG_INTERVAL_S))
        # hooks abandoned past their deadline: a line each up to a burst, the rest counted (loop thread)
        self._abandoned = BurstLog(10, _REFUSAL_LOG_INTERVAL_S, log.error, LossLog(_log_abandoned,
                                                                                   _REFUSAL_LOG_INTERVAL_S))

    @property
    def finishing(self) -> bool:
        """The client's shutdown is waiting for the hooks it owes, unbinds and binds to undo (:meth:`finish_releases`
        runs: ``CANCEL_WAIT_S`` at most); read from any thread (the interpreter's exit says what held its wait)."""
        return self._finishing is not None

    def close_logs(self) -> None:
        """The client's shutdown: refusals counted since the last line are told now (their timer is the loop's)."""
        self._refusals.losses.close()
        self._abandoned.losses.close()

    async def finish_releases(self, within: float, spare: asyncio.Future[Any] | None = None) -> None:
        """The client's shutdown (loop thread, before :meth:`cancel_hooks`): the unbinds owed by the types let go
        (:meth:`release`) are run, those not started yet started now (and those of a type let go while this waits),
        and waited for, ``within`` seconds in all (each hook at most its deadline, as ever: one past it runs on in the
        background and is not waited for); those still running then are named in one line (:meth:`cancel_hooks`
        cancels them). Owed by any path: a release's own unbinds, a hook of the type running when it was let go (left
        to run on: an unbind, or a bind whose binding is then unbound), the unbind of such a bind. ``spare``: the
        shutdown's caller (a hook shutting its client down): neither waited for (it waits for the shutdown) nor
        named. Nothing is done to the triggers of the types still owned. A release after this returned is not run,
        and says so (:meth:`release`).

        Example:
            >>> import asyncio
            >>> class Hooks:
            ...     async def register_trigger(self, config): pass
            ...     async def unregister_trigger(self, config): print("unbound", config.id)
            >>> host = TriggerTypeHost()
            >>> host.add("hook", Hooks())
            >>> async def demo() -> None:
            ...     await host.register("hook", "t1", "f", {}, generation=1)
            ...     host.release("hook").close()  # its run never started (its task cancelled first, say)
            ...     await host.finish_releases(3.0)
            >>> asyncio.run(demo())
            unbound t1
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + within
        self._spare = spare
        caller_wait = self._hook_waits.get(spare) if spare is not None else None
        if caller_wait is not None:  # (the hook shutting its client down: its unbind, waited for, held the shutdown)
            _settle(caller_wait)
        with self._lock:
            self._finishing = loop
        while True:
            with self._lock:
                fresh = [run for run in self._release_runs if run.task is None]
                waited, until = self._owed_waited(deadline)
                if loop.time() >= deadline or not (fresh or waited):
                    # (under the lock: a release before this is run, or named below; one after says it is too late)
                    self._finishing = None
                    self._finished = True
                    break
            for run in fresh:
                self._start_release(run)
            if not fresh:  # (a run may hand a binding's unbind to a task of its own meanwhile: the next round's)
                await asyncio.wait(waited, timeout=until - loop.time())
        with self._lock:  # (_lost_claim reads what release() changes from the user's thread)
            hooks = self._owed_hooks()
        # (a set: an owed unbind runs in a task within the owed task that undoes a bind, and its hook may be left
        # running on: one trigger was named twice)
        running = sorted({key for task, key in self._owed.items() if key is not None and not task.done()}
                         | {key for key, entry in hooks if not entry.binds})
        binding = sorted(key for key, entry in hooks if entry.binds)
        with self._lock:
            owed = sorted(self._releasing)
        if not (running or binding or owed):
            return
        parts = []
        if running or owed:
            parts.append(f"{len(running)} unbind(s) owed (of released trigger types, or under way at the shutdown) "
                         f"still running ({len(owed)} more not started)")
        if binding:
            parts.append(f"{len(binding)} bind(s) of released trigger types (or of triggers unregistered, or bound "
                         f"here otherwise) still running")
        # (A bind's hook is cancelled next, and its binding, should it bind after all, is not unbound: the client's
        # loop ends with the shutdown. A hook that goes on regardless, its work in a thread, was promised an unbind.)
        log.error("%s %g s into the client's shutdown's wait for them: no longer waited for, cancelled with the "
                  "client%s: %s", "; ".join(parts), round(loop.time() - started, 1),
                  " (a bind that goes on regardless, its work in a thread say, and binds after all is left bound "
                  "with nothing to unbind it: its hook has to undo it itself)" if binding else "",
                  _listed([f"{type_id}/{trigger_id}" for type_id, trigger_id in running + owed]
                          + [f"{type_id}/{trigger_id} (bind)" for type_id, trigger_id in binding]))

    def _owed_hooks(self) -> list[tuple[_Key, _Detached]]:
        """(Loop thread, under the lock.) The hooks running in the background that a release owes
        (:class:`_Detached`, or of a type no longer owned, or a bind cut whose binding would be undone:
        :meth:`_lost_claim`), the shutdown's caller excepted."""
        return [(key, entry) for key, entries in self._detached.items() for entry in entries
                if (entry.owed or key[0] not in self._handlers or self._lost_claim(key, entry))
                and not entry.task.done() and entry.task is not self._spare]

    def _owed_waited(self, deadline: float) -> tuple[set[asyncio.Future[Any]], float]:
        """(Loop thread.) What the client's shutdown waits for: the releases' runs and owed unbinds, and the hooks
        a release owes but those past their own deadline (``overdue``: logged as such then; or past their ``due``
        since: each hook at most its deadline); and until when (loop time): ``deadline``, or the first ``due``
        before it."""
        now = asyncio.get_running_loop().time()
        waited: set[asyncio.Future[Any]] = {task for task in self._owed if not task.done()}
        until = deadline
        for _, entry in self._owed_hooks():
            if not entry.overdue and entry.due > now:
                waited.add(entry.task)
                until = min(until, entry.due)
        return waited, until

    def cancel_hooks(self, spare: asyncio.Future[Any] | None = None) -> None:
        """The client's shutdown (after :meth:`finish_releases`): hooks still running in the background, and the
        releases' unbinds still running, are cancelled (loop thread), but ``spare`` (the shutdown's caller); the
        only place a hook is (the client's loop ends next, and with it every task left on it)."""
        tasks: list[asyncio.Future[Any]] = [entry.task for entries in self._detached.values() for entry in entries]
        tasks += self._background
        tasks += self._owed
        for task in tasks:
            if task is not spare:
                task.cancel()

    def add(self, type_id: str, handler: TriggerHandler[Any]) -> None:
        """Own ``type_id`` with ``handler``. Over another handler, the triggers it bound stay with it until the engine
        sends each again (it does, for the type's new registration): then the old handler unbinds it and ``handler``
        binds it; until then an unbind of one still goes to the handler that bound it.

        Example:
            >>> import asyncio
            >>> class Hooks:
            ...     def __init__(self, name): self.name = name
            ...     async def register_trigger(self, config): print(self.name, "bound", config.id)
            ...     async def unregister_trigger(self, config): print(self.name, "unbound", config.id)
            >>> host = TriggerTypeHost()
            >>> host.add("hook", Hooks("h1"))
            >>> asyncio.run(host.register("hook", "t1", "f", {}, generation=1))
            h1 bound t1
            >>> host.add("hook", Hooks("h2"))
            >>> asyncio.run(host.register("hook", "t1", "f", {}, generation=1))  # the engine sends it again
            h1 unbound t1
            h2 bound t1
        """
        self._handlers[type_id] = handler
        self._claims.setdefault(type_id, object())

    def get(self, type_id: str) -> TriggerHandler[Any] | None:
        """The handler owning ``type_id`` (``None``: not owned)."""
        return self._handlers.get(type_id)

    def remove(self, type_id: str) -> None:
        """Stop owning ``type_id``."""
        self._handlers.pop(type_id, None)
        self._claims.pop(type_id, None)
        self._bound.pop(type_id, None)
        # (called from the user's thread while the loop's may change the table: list() copies it in one step)
        for key in list(self._sent):
            if key[0] == type_id:
                self._sent.pop(key, None)

    def release(self, type_id: str) -> Coroutine[Any, Any, None] | None:
        """Stop owning ``type_id``; what unbinds (through the handler that bound it) each trigger it still holds, to
        be run on the client's loop (``None``: it holds none). The engine's ``unregistertrigger`` frames for them
        arrive once the type is no longer owned here, so they would never reach the handler. Each unbind runs in its
        trigger's turn; a bind of the same trigger that comes first (the type owned again, the engine sending it
        again) runs it first.

        Example:
            >>> import asyncio
            >>> class Hooks:
            ...     async def register_trigger(self, config): print("bound", config.id)
            ...     async def unregister_trigger(self, config): print("unbound", config.id)
            >>> host, hooks = TriggerTypeHost(), Hooks()
            >>> async def demo() -> None:
            ...     host.add("hook", hooks)
            ...     await host.register("hook", "t1", "f", {}, generation=1)
            ...     released = host.release("hook")
            ...     host.add("hook", hooks)  # owned again at once: the engine sends t1 again
            ...     await host.register("hook", "t1", "f", {}, generation=1)
            ...     await released  # (t1's was done by the bind)
            >>> asyncio.run(demo())
            bound t1
            unbound t1
            bound t1
        """
        with self._lock:
            bound = self._bound.pop(type_id, {})
            for trigger_id, binding in bound.items():
                self._releasing[(type_id, trigger_id)] = binding
            self.remove(type_id)
            # its binds and unbinds running now are no longer waited for: their turns (and the worker's slots) are
            # free at once; a hung one held them for good, the type owned again or not
            running = [detach for key, waits in self._waits.items() if key[0] == type_id for detach in waits]
            run = _ReleaseRun([(type_id, trigger_id) for trigger_id in bound]) if bound else None
            late = self._finished
            if run is not None and not late:  # (owed from now on: the client's shutdown runs it if nothing else has)
                self._release_runs.add(run)
                if self._finishing is not None:  # (the shutdown waits for the releases now: started there at once)
                    with contextlib.suppress(RuntimeError):  # (closed: the shutdown is over, and names it)
                        self._finishing.call_soon_threadsafe(self._start_release_in_shutdown, run)
        for detach in running:
            try:
                detach.get_loop().call_soon_threadsafe(_settle, detach)
            except RuntimeError:  # (the loop is closed: nothing waits for it any more)
                pass
        if run is not None and late:
            # The client's shutdown has run the releases' unbinds already (its loop ends next): closed without a
            # word, these were never unbound and nothing said so.
            log.warning("Trigger type %s let go after the client's shutdown ran the releases' unbinds: its %d "
                        "trigger(s) are not unbound (unregister_trigger not called): %s", type_id, len(run.keys),
                        _listed([trigger_id for _, trigger_id in run.keys]))
            return None
        return None if run is None else self._unbind_released(run)

    @property
    def _slot_s(self) -> float:
        """How long one trigger's run holds a place among a release's or sweep's few at once: the hook's deadline
        (past it the hook runs on in the background anyway), :data:`_DETACHED_WAIT_S` when there is none."""
        return self._deadline or _DETACHED_WAIT_S

    @property
    def holds(self) -> bool:
        """Whether the engine sent any trigger still noted here (bound or being bound): a new connection then
        has something to check."""
        return bool(self._sent)

    async def _unbind_released(self, run: _ReleaseRun) -> None:
        """Run ``run`` (:meth:`_start_release`) and wait for its end. Cancelled (the client's shutdown cancels the
        task this runs in), the run goes on: the shutdown waits for it (:meth:`finish_releases`)."""
        await asyncio.shield(self._start_release(run))

    def _start_release(self, run: _ReleaseRun) -> asyncio.Task[None]:
        """(Loop thread.) The task unbinding ``run``'s released bindings, started now if it was not."""
        if run.task is None:
            run.task = self._owe(self._unbind_keys_released(run.keys), None)

            def ended(_: object) -> None:
                with self._lock:
                    self._release_runs.discard(run)

            run.task.add_done_callback(ended)
        return run.task

    def _start_release_in_shutdown(self, run: _ReleaseRun) -> None:
        """(Loop thread.) :meth:`_start_release`, while the client's shutdown still waits for the releases (past
        it, ``run`` is named as not started, and cancelled with the client)."""
        if not self._finished:
            self._start_release(run)

    def _owe(self, unbinds: Coroutine[Any, Any, None], key: _Key | None) -> asyncio.Task[None]:
        """(Loop thread.) ``unbinds`` (a release's run, or ``key``'s unbind) in a task of the host's own, which
        the client's shutdown waits for (:meth:`finish_releases`)."""
        task = asyncio.get_running_loop().create_task(unbinds)
        if self._finished:
            # Past the shutdown's wait (named there as not started): cancelled before its first step. Started, a
            # release's run whose place freed just then started its next hook as the client ended, unwaited for.
            task.cancel()
            return task
        self._owed[task] = key
        task.add_done_callback(self._owed.pop)
        return task

    async def _owed_unbind(self, key: _Key, handler: TriggerHandler[Any], trigger: TriggerConfig[Any]) -> None:
        """(In ``key``'s turn.) :meth:`_unbind` of a binding a release owes the unbind of, in a task of its own:
        cancelled (the client's shutdown cancels the task of a bind that runs it), it runs on, and the shutdown
        waits for it."""
        await asyncio.shield(self._owe(self._unbind(key, handler, trigger, owed=True), key))

    async def _unbind_keys_released(self, keys: list[_Key]) -> None:
        """Unbind the released bindings of ``keys``, each in its trigger's turn (but those a bind took first), a few
        at once (as :meth:`sweep` does): one after the other, one hung unbind held the others (1 of 5 called 6 s
        after the release), and 40 unbinds of 0.2 s took 8 s."""
        await _each_at_most(_SWEEP_CONCURRENCY, [key for key in keys if key in self._releasing],
                            self._unbind_released_in_turn, self._slot_s)

    async def _unbind_released_in_turn(self, key: _Key) -> None:
        if key not in self._releasing:  # (a bind of it took it, without waiting for the turn)
            return
        turn = await self._turn(key)
        try:
            await self._unbind_released_one(key)
        finally:
            self._end_turn(key, turn)

    async def _unbind_released_one(self, key: _Key) -> None:
        """(In ``key``'s turn.) Unbind the released binding of ``key``, if still waiting for its unbind."""
        with self._lock:
            released = self._releasing.pop(key, None)
        if released is not None:
            await self._owed_unbind(key, released.handler, released.trigger)

    def register(self, type_id: str, trigger_id: str, function_id: str, config: Any,
                 generation: int = 0) -> Coroutine[Any, Any, dict[str, str] | None]:
        """The engine (of connection ``generation``) binds a trigger: noted now, as its frame is read; what binds it,
        returning the error body for the engine when the handler refused it (``None`` on success)."""
        key = (type_id, trigger_id)
        send = next(self._sends)
        noted = type_id in self._handlers
        if noted:
            self._sent[key] = (max(generation, self._sent.get(key, (generation, send))[0]), send)
        return self._register(key, TriggerConfig(id=trigger_id, function_id=function_id, config=config), send,
                              noted)

    async def _register(self, key: _Key, trigger: TriggerConfig[Any], send: int,
                        noted: bool = True) -> dict[str, str] | None:
        type_id = key[0]
        if type_id not in self._handlers:
            return {"code": "trigger_type_not_found", "message": "Trigger type not found"}
        turn = await self._turn(key)
        try:
            # Released before and not unbound yet: that unbind comes first (run later by the release, it undid this
            # bind, or left the trigger bound at two handlers until it ran).
            await self._unbind_released_one(key)
            if noted and key not in self._sent:
                # Unregistered, found gone after a reconnect, or the type let go while this one waited (its turn,
                # or the worker's max_invocations): the handler is not asked to bind what the engine no longer
                # holds (it was bound, then unbound at once). A send that a newer one follows still runs: its
                # answer (a refusal parks the trigger at the engine) is the engine's to weigh.
                return None
            # The type's handler now, not when the frame came: one put in place meanwhile (the type registered again
            # with another handler) is the one the engine's trigger goes to.
            with self._lock:
                handler = self._handlers.get(type_id)
                claim = self._claims.get(type_id)
                held = self._bound.get(type_id, {}).get(trigger.id)
            if handler is None:  # let go while this waited its turn
                return {"code": "trigger_type_not_found", "message": "Trigger type released while registering"}
            if held is not None:
                if (held.handler is handler and held.trigger.function_id == trigger.function_id
                        and held.trigger.config == trigger.config):
                    # Sent again as it is bound (a new connection's replay): binding it twice ran a cron or interval
                    # trigger twice per tick, for as long as the worker lived.
                    return None
                # Replaced (another function or config), or bound by the handler the type had before: the old
                # binding goes first, by the handler that made it (the new one never heard of it).
                with self._lock:
                    # (gone if the type was released meanwhile: then the release, or the next bind, unbinds it)
                    held_still = self._bound.get(type_id, {}).pop(trigger.id, None) is held
                if held_still:
                    await self._unbind(key, held.handler, held.trigger)
            try:
                await self._run_hook(key, handler, trigger, binds=True, claim=claim)
            except _HookBusy as busy:
                self._refused(key, send)
                return {"code": "trigger_registration_failed", "message": str(busy)}
            except _HookStopped as stopped:
                if stopped.released:  # (its handler unbinds it if it binds it after all: see _detach)
                    return {"code": "trigger_type_not_found", "message": "Trigger type released while registering"}
                self._refused(key, send)
                return {"code": "trigger_registration_failed",
                        "message": f"register_trigger did not finish within {self._deadline:g} s"}
            except Exception as exc:
                # an ERROR with its traceback each up to a burst, the rest counted: an engine sending thousands of
                # configs the handler refuses wrote thousands of tracebacks
                if self._refusals.take("refused", f"trigger {trigger.id:.200}: {type(exc).__name__}: {exc!s:.200}"):
                    log.exception("Error registering trigger %s", trigger.id)
                self._refused(key, send)
                return {"code": "trigger_registration_failed", "message": str(exc)}
            except BaseException as exc:
                if not handler_raised(exc):
                    raise
                # Let through, a KeyboardInterrupt or SystemExit from the handler ended the client's loop thread.
                log.exception("Error registering trigger %s", trigger.id)
                self._refused(key, send)
                return {"code": "trigger_registration_failed", "message": describe_base_exception(exc)}
            with self._lock:
                released = self._claims.get(type_id) is not claim
                gone = key not in self._sent
                if not released and not gone:
                    # (with the handler that bound it: should the type change handlers, its unbind still comes here)
                    self._bound.setdefault(type_id, {})[trigger.id] = _Binding(trigger, handler)
            if released:
                # the type was let go while the handler bound it: release() saw nothing to unbind, and the engine's
                # unregistertrigger skips a type no longer owned here, so the binding would stay for good (an
                # unbind the release owes: the client's shutdown waits for it)
                await self._owed_unbind(key, handler, trigger)
                return {"code": "trigger_type_not_found", "message": "Trigger type released while registering"}
            if gone:
                # unregistered (or found gone after a reconnect) while the handler bound it: that unbind found
                # nothing bound, so it is done here
                await self._unbind(key, handler, trigger)
            return None
        finally:
            self._end_turn(key, turn)

    def _refused(self, key: _Key, send: int) -> None:
        """The handler refused send ``send`` of ``key``: nothing of it is bound here (a replaced binding was unbound
        before the bind), and the engine parks it without an unregistertrigger to come; only a newer send keeps the
        note."""
        # (pop: release() may drop the note from the user's thread between the look and the delete)
        if self._sent.get(key, (0, -1))[1] == send:
            self._sent.pop(key, None)

    def unregister(self, type_id: str, trigger_id: str, function_id: str,
                   config: Any) -> Coroutine[Any, Any, None]:
        """The engine unbinds a trigger: noted now, as its frame is read; what unbinds it (through the handler, if
        it holds the trigger). A failing handler is logged, never raised (the engine does not wait for an answer)."""
        key = (type_id, trigger_id)
        self._sent.pop(key, None)
        return self._unregister(key)

    async def _unregister(self, key: _Key) -> None:
        if self._handlers.get(key[0]) is None:
            return
        turn = await self._turn(key)
        try:
            with self._lock:  # release() moves bindings from the user's thread under it
                held = self._bound.get(key[0], {}).pop(key[1], None)
                if held is not None and key in self._sent:  # sent again meanwhile: the register behind finds it
                    self._bound.setdefault(key[0], {})[key[1]] = held
                    held = None
            if held is not None:
                await self._unbind(key, held.handler, held.trigger)
        finally:
            self._end_turn(key, turn)

    async def sweep(self, generation: int, listed: Collection[_Key]) -> int:
        """After connection ``generation`` was opened and the engine answered a trigger listing (``listed``: the
        ``(type, id)`` of every trigger it holds) sent after the replay: unbind each trigger bound here that this
        connection's engine neither sent again nor lists (unregistered during the outage, or gone with an engine
        restart). The number bound here that it lists but has not sent yet (its registertrigger is on its way: the
        engine sends a replay a few frames at a time, and the listing may overtake it)."""
        on_the_way = 0
        stale: list[_Key] = []
        for key, (sent, _) in list(self._sent.items()):
            if sent >= generation:
                continue
            if key in listed:
                on_the_way += 1
                continue
            stale.append(key)
        # Each stale trigger is a different key (their unbinds need no order among them), so a few run at once.
        await _each_at_most(_SWEEP_CONCURRENCY, stale, lambda key: self._drop_stale(key, generation), self._slot_s)
        return on_the_way

    async def _drop_stale(self, key: _Key, generation: int) -> None:
        if self._sent.get(key, (generation, 0))[0] >= generation:  # sent again (or unregistered) meanwhile
            return
        # first: a bind of it still running sees it gone, and unbinds it at its end (pop: release() may have
        # dropped it from the user's thread since the look above)
        self._sent.pop(key, None)
        if self._on_gone is not None:
            self._on_gone(*key)
        turn = await self._turn(key)
        try:
            with self._lock:  # release() moves bindings from the user's thread under it
                held = self._bound.get(key[0], {}).get(key[1])
                if held is None or key in self._sent:  # (sent again while this waited its turn: stays)
                    return
                del self._bound[key[0]][key[1]]
            log.info("Trigger %s (type %s, function %s) unbound: the engine no longer has it after the reconnect",
                     key[1], key[0], held.trigger.function_id)
            await self._unbind(key, held.handler, held.trigger)
        finally:
            self._end_turn(key, turn)

    async def _turn(self, key: _Key) -> asyncio.Future[None]:
        """Wait until no bind or unbind of ``key`` runs; the future that says this one's end."""
        while (busy := self._busy.get(key)) is not None:
            await asyncio.shield(busy)  # (a cancelled waiter must not cancel the runner's future)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._busy[key] = mine
        return mine

    def _end_turn(self, key: _Key, turn: asyncio.Future[None]) -> None:
        if self._busy.get(key) is turn:
            del self._busy[key]
        turn.set_result(None)

    async def _unbind(self, key: _Key, handler: TriggerHandler[Any], trigger: TriggerConfig[Any],
                      owed: bool = False) -> None:
        """``handler.unregister_trigger(trigger)`` (in ``key``'s turn), a failure logged, never raised; past its
        deadline, or its type let go, no longer waited for (``owed``: a release owes it, see :meth:`_run_hook`).
        Cancelled (the client's shutdown), it runs on in the background, and the shutdown waits for it
        (:meth:`_run_hook`)."""
        try:
            await self._run_hook(key, handler, trigger, binds=False, owed=owed)
        except _HookStopped:
            pass  # (logged by _run_hook)
        except Exception:
            log.exception("Error unregistering trigger %s", trigger.id)
        except BaseException as exc:
            if not handler_raised(exc):
                raise
            log.exception("Error unregistering trigger %s", trigger.id)

    async def _run_hook(self, key: _Key, handler: TriggerHandler[Any], trigger: TriggerConfig[Any],
                        binds: bool, owed: bool = False, claim: object | None = None) -> None:
        """(In ``key``'s turn.) Run ``handler``'s bind (``binds``) or unbind hook of ``trigger``, raising what it
        raises; :class:`_HookStopped` when it is past the deadline (logged) or its type was let go meanwhile: it runs
        on in the background (:meth:`_detach`). ``handler``'s hooks of ``trigger`` left running in the background are
        waited for first (:meth:`_settle_detached`; the type let go meanwhile, this hook runs after them in the
        background). A hook that is a plain method (its ``None`` not awaitable) is served as well. Left running in
        the background, an unbind a release owes (``owed``), or a hook whose type was let go, is waited for by the
        client's shutdown (:meth:`finish_releases`). This wait cancelled (the client's shutdown cancels the bind's
        task), a bind's hook runs on in the background (cancelled with the client, :meth:`cancel_hooks`, but the
        shutdown's caller) and is taken as it ends: returned, the binding is noted under ``claim`` (the owning of
        the type the bind was made for: :meth:`_keep`), or unbound if the type was let go meanwhile (the shutdown
        waits for such a bind, and its unbind); cancelled (the ``CancelledError`` raised out of it) or failed,
        nothing was bound. An unbind cancelled so (its binding taken from the table already) runs on in the
        background, or is called there once the handler's earlier hooks of the trigger end, and the shutdown waits
        for it: cut short, or never called, the binding stayed for good. Past the shutdown's wait, the hook is
        cancelled with the task."""
        loop = asyncio.get_running_loop()
        detach: asyncio.Future[None] = loop.create_future()
        with self._lock:  # (release() looks from the user's thread)
            self._waits.setdefault(key, set()).add(detach)
        hook = handler.register_trigger if binds else handler.unregister_trigger
        try:
            try:
                settled = await self._settle_detached(key, handler, detach, binds)
            except asyncio.CancelledError:
                # (the client's shutdown) An unbind not called yet, its binding taken from the table already: called
                # in the background once the handler's earlier hooks of the trigger have ended, the shutdown waiting
                # for it; dropped here, nothing else would ever unbind the binding.
                if not binds and not self._finished:
                    self._unbind_after_earlier(key, handler, trigger, owed=True)
                raise
            if settled != _GO:
                # The type let go while this waited for the handler's hooks of the trigger before it, or one of them
                # still runs past its due: a bind is not made (answered as the type released, or refused: calling it
                # again on every retry piled up hung calls); an unbind runs in the background once they have ended
                # (never alongside them, and never dropped: the binding is unbound once, by its handler).
                if not binds:
                    before = self._unbind_after_earlier(key, handler, trigger, owed=owed or settled == _RELEASED)
                    log.info("Trigger %s (type %s): %s runs in the background once the handler's hook of the trigger "
                             "before it ends (%s)", trigger.id, key[0], callback_name(hook),
                             "its type let go while it waited" if settled == _RELEASED else "it still runs")
                    raise _HookStopped(released=settled == _RELEASED)
                if settled == _RELEASED:
                    raise _HookStopped(released=True)
                before = [entry for entry in self._detached.get(key, ()) if entry.handler is handler]
                running = next((entry for entry in before if not entry.task.done()), None)
                raise _HookBusy("register_trigger" if running is None or running.binds else "unregister_trigger")
            outcome = hook(trigger)
            if not inspect.isawaitable(outcome):  # (a plain method: done)
                return
            task = loop.create_task(_guarded(outcome))
            self._hook_waits[task] = detach
            try:
                await asyncio.wait((task, detach), timeout=self._deadline, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:  # this bind or unbind itself cancelled (the client's shutdown)
                if not binds:
                    if self._finished:  # (past the shutdown's wait: cancel_hooks, the client's loop ends next)
                        task.cancel()
                    else:  # (cut short, the binding, taken from the table, stayed for good: the shutdown waits)
                        self._detach(key, _Detached(task, handler, trigger, binds,
                                                    loop.time() + (self._deadline or _DETACHED_WAIT_S), owed=True))
                    raise
                # A bind runs on in the background, and its end decides (:meth:`_keep`). Cancelled with this wait,
                # one that ended just then (its result not seen yet) was never noted as bound, and a type let go
                # during the shutdown kept it for good (no unbind ever came); and a hook that shut its client down
                # was cancelled in its own shutdown_async.
                if self._finished:
                    task.cancel()
                    raise
                self._detach(key, _Detached(task, handler, trigger, binds,
                                            loop.time() + (self._deadline or _DETACHED_WAIT_S), owed=owed,
                                            claim=claim))
                raise
            finally:
                del self._hook_waits[task]
        finally:
            with self._lock:
                waits = self._waits.get(key)
                if waits is not None:
                    waits.discard(detach)
                    if not waits:
                        del self._waits[key]
        if task.done():
            raised = task.result()  # (a cancellation of the hook's task from outside is raised as one)
            if raised is not None:
                raise raised
            return
        self._detach(key, _Detached(task, handler, trigger, binds, loop.time() + (self._deadline or _DETACHED_WAIT_S),
                                    owed=owed or detach.done(), overdue=not detach.done()))
        if detach.done():
            log.info("Trigger %s (type %s): %s no longer waited for, %s; it runs on in the background%s", trigger.id,
                     key[0], callback_name(hook),
                     "it shuts its client down" if task is self._spare else "its type let go",
                     " (should it bind the trigger, its handler unbinds it)" if binds else "")
            raise _HookStopped(released=True)
        if self._abandoned.take("abandoned", f"trigger {trigger.id:.200}: {callback_name(hook)}"):
            log.error("Trigger %s (type %s): %s did not finish within %g s (InitOptions.invocation_timeout_ms): no "
                      "longer waited for, it runs on in the background; %s", trigger.id, key[0], callback_name(hook),
                      self._deadline,
                      "the registration is answered to the engine as refused (trigger_registration_failed), and "
                      "should the hook still bind the trigger, its handler unbinds it" if binds
                      else "the trigger's next bind or unbind by this handler waits for it (at most as long again)")
        raise _HookStopped(released=False)

    def _unbind_after_earlier(self, key: _Key, handler: TriggerHandler[Any], trigger: TriggerConfig[Any],
                              owed: bool) -> list[_Detached]:
        """(Loop thread.) ``handler`` unbinds ``trigger`` in the background once its hooks of ``key`` left running
        there have ended (:meth:`_unbind_later`), as a detached hook (``owed``: the shutdown waits for it); those
        hooks."""
        loop = asyncio.get_running_loop()
        before = [entry for entry in self._detached.get(key, ()) if entry.handler is handler]
        task = loop.create_task(_guarded(self._unbind_later(before, handler, trigger)))
        self._detach(key, _Detached(task, handler, trigger, False, loop.time() + (self._deadline or _DETACHED_WAIT_S),
                                    owed=owed))
        return before

    @staticmethod
    async def _unbind_later(before: list[_Detached], handler: TriggerHandler[Any], trigger: TriggerConfig[Any]) -> None:
        """(In the background.) ``handler`` unbinds ``trigger`` once its hooks of it ``before`` have ended (never
        alongside them; cancelled, as they are, at the client's shutdown)."""
        running = [entry.task for entry in before if not entry.task.done()]
        if running:
            await asyncio.wait(running)
        outcome = handler.unregister_trigger(trigger)
        if inspect.isawaitable(outcome):
            await outcome

    def _detach(self, key: _Key, entry: _Detached) -> None:
        """``entry``'s hook of ``key`` runs on in the background. An unbind (or a bind that failed) that ends is
        forgotten; a bind that ends is undone by its handler in ``key``'s turn (:meth:`_settle_detached`)."""
        self._detached.setdefault(key, []).append(entry)
        loop = entry.task.get_loop()

        def ended(done: asyncio.Task[BaseException | None]) -> None:
            if self._keep(key, entry):
                return
            if entry.binds and not done.cancelled() and done.result() is None:
                log.info("Trigger %s (type %s): %s finished after the wait for it ended: unbound by its handler "
                         "(%s)", entry.trigger.id, key[0], callback_name(entry.handler.register_trigger),
                         "the engine was told it was not bound" if entry.claim is None
                         else "its type let go, or the trigger unregistered, during the client's shutdown")
                if entry.owed or entry.claim is not None or key[0] not in self._handlers:
                    # (a release owes it, or the shutdown cut its bind: the shutdown waits for it)
                    self._owe(self._undo_detached(key), key)
                    return
                undo = loop.create_task(self._undo_detached(key))
                self._background.add(undo)
                undo.add_done_callback(self._background.discard)
                return
            raised = None if done.cancelled() else done.result()
            if raised is not None:
                name = callback_name(entry.handler.register_trigger if entry.binds
                                     else entry.handler.unregister_trigger)
                if self._abandoned.take("abandoned", f"trigger {entry.trigger.id:.200}: {name} raised "
                                        f"{type(raised).__name__}: {raised!s:.200}"):
                    log.error("Trigger %s (type %s): %s, no longer waited for, raised%s", entry.trigger.id, key[0],
                              name, " (nothing was bound)" if entry.binds else "",
                              exc_info=(type(raised), raised, raised.__traceback__))
            self._forget_detached(key, entry)

        entry.task.add_done_callback(ended)

    def _keep(self, key: _Key, entry: _Detached) -> bool:
        """A bind cut short by the client's shutdown (``entry.claim``) that bound after all, its type owned as when it
        was made, the trigger still the engine's and bound nowhere else here: noted as bound (unbound when its type
        is let go, as any other), forgotten as a detached hook. ``False``: not such a bind, or its binding is to be
        undone (its type let go, or the trigger gone, meanwhile), or handled already."""
        entries = self._detached.get(key, [])
        if (entry.claim is None or entry not in entries or not entry.task.done() or entry.task.cancelled()
                or entry.task.result() is not None):
            return False
        with self._lock:  # (release() moves bindings from the user's thread under it)
            if self._lost_claim(key, entry):
                return False
            self._bound.setdefault(key[0], {})[key[1]] = _Binding(entry.trigger, entry.handler)
        self._forget_detached(key, entry)
        return True

    def _lost_claim(self, key: _Key, entry: _Detached) -> bool:
        """(Loop thread, under the lock: release() changes what it reads from the user's thread.) ``entry`` is a bind
        cut short by the client's shutdown whose binding, should it bind, is not to be kept but unbound
        (:meth:`_keep`): its type let go (or owned anew) since, the trigger unregistered (the engine's unbind queued
        behind the bind found nothing bound yet), or bound here otherwise. The shutdown waits for such a bind as owed
        (until its ``due`` at most): its type still owned, it was left out, cancelled with the client, and a bind in
        a thread bound with no unbind to come."""
        return entry.claim is not None and (self._claims.get(key[0]) is not entry.claim or key not in self._sent
                                            or key[1] in self._bound.get(key[0], {}))

    def _forget_detached(self, key: _Key, entry: _Detached) -> None:
        entries = self._detached.get(key)
        if entries is not None and entry in entries:
            entries.remove(entry)
            if not entries:
                del self._detached[key]

    async def _settle_detached(self, key: _Key, handler: TriggerHandler[Any] | None,
                               detach: asyncio.Future[None] | None = None, binds: bool = False) -> str:
        """(In ``key``'s turn.) Each bind of ``key`` left running in the background that has ended is unbound by
        its handler, once; ``handler``'s hooks of ``key`` still running there are waited for, each until its ``due``.
        ``_GO`` when none runs any more; ``_RELEASED`` when ``detach`` (the type let go) ended the wait; ``_BUSY``
        when one still runs past its ``due`` (logged once): the handler's next hook is not called alongside it (a
        bind is refused, an unbind runs once it ends), but for a bind (``binds``) after a hung unbind: it goes ahead
        (the unbind of one binding must not keep the trigger from being bound again)."""
        loop = asyncio.get_running_loop()
        while True:
            entries = self._detached.get(key, [])
            finished = next((entry for entry in entries if entry.task.done()), None)
            if finished is not None:
                if self._keep(key, finished):
                    continue
                self._forget_detached(key, finished)
                if finished.binds and not finished.task.cancelled() and finished.task.result() is None:
                    if finished.owed or key[0] not in self._handlers:
                        # (a release owes it: run to its end even when the turn's task is cancelled at shutdown)
                        await self._owed_unbind(key, finished.handler, finished.trigger)
                    else:
                        await self._unbind(key, finished.handler, finished.trigger)
                continue
            if handler is None:
                return _GO
            if detach is not None and detach.done():
                return _RELEASED
            # (for a bind, an unbind found still running past its due is passed over: see below)
            pending = next((entry for entry in entries
                            if entry.handler is handler and not (binds and not entry.binds and entry.logged)), None)
            if pending is None:
                return _GO
            left = pending.due - loop.time()
            if left > 0:
                await asyncio.wait((pending.task, detach) if detach is not None else (pending.task,), timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
            if not pending.task.done() and loop.time() >= pending.due:
                if not pending.logged:
                    pending.logged = True
                    name = callback_name(handler.register_trigger if pending.binds else handler.unregister_trigger)
                    if self._abandoned.take("abandoned", f"trigger {key[1]:.200}: {name}"):
                        log.error("Trigger %s (type %s): %s, no longer waited for, still runs; %s", key[1], key[0],
                                  name, "the handler's binds of the trigger are refused and its unbinds wait until "
                                  "it ends" if pending.binds else "the handler's next unbind of the trigger waits "
                                  "until it ends, its next bind goes ahead")
                if binds and not pending.binds:
                    continue
                return _BUSY

    async def _undo_detached(self, key: _Key) -> None:
        """A bind left running in the background ended: its handler unbinds it, in ``key``'s turn (unless a turn of
        ``key`` did already)."""
        turn = await self._turn(key)
        try:
            await self._settle_detached(key, None)
        finally:
            self._end_turn(key, turn)


async def _each_at_most(limit: int, items: Iterable[_T], run: Callable[[_T], Coroutine[Any, Any, None]],
                        hold_s: float) -> None:
    """``run(item)`` for each of ``items``, each in a task of its own started in order, at most ``limit`` of them
    holding a place at once; one still running ``hold_s`` seconds after its start gives its place to the next item
    and runs on. Returns once every run has ended (the first error raised by one is raised then, each further one
    logged: it was dropped); cancelled, it cancels the runs still going.

    A run past ``hold_s`` no longer holds a place: 64 unbinds that never returned (no deadline) held every place,
    and the release's other triggers were never unbound. How many run on past ``hold_s`` at once is bounded by the
    number of items only: a cap on them would stall the rest again once that many hang.

    Example:
        >>> import asyncio
        >>> async def demo() -> None:
        ...     gate = asyncio.Event()
        ...     async def run(item: str) -> None:
        ...         if item == "hung":
        ...             await gate.wait()  # runs past hold_s: "b" starts in its place
        ...         else:
        ...             print("ran", item)
        ...             gate.set()
        ...     await _each_at_most(1, ["hung", "b"], run, hold_s=0.01)
        >>> asyncio.run(demo())
        ran b
    """
    loop = asyncio.get_running_loop()
    places = asyncio.Semaphore(limit)
    running: set[asyncio.Task[None]] = set()
    ended: list[asyncio.Task[None]] = []

    def hold_place(task: asyncio.Task[None]) -> None:
        held = True

        def give_back(_: object = None) -> None:
            nonlocal held
            if held:
                held = False
                places.release()

        timer = loop.call_later(hold_s, give_back)

        def done(_: object) -> None:
            timer.cancel()
            give_back()
            running.discard(task)
            if not task.cancelled() and task.exception() is not None:
                ended.append(task)

        task.add_done_callback(done)

    try:
        for item in items:
            await places.acquire()
            task = loop.create_task(run(item))
            running.add(task)
            hold_place(task)
        while running:
            await asyncio.wait(set(running))
    except BaseException:
        for task in running:
            task.cancel()
        if running:  # (each ends at its next step: a run's hook is cancelled with it, as its own wait is)
            await asyncio.wait(set(running))
        raise
    errors = [error for task in ended if (error := task.exception()) is not None]
    for error in errors[1:]:
        log.error("A further run of the same batch raised (the first is raised): %s: %.200s", type(error).__name__,
                  error, exc_info=(type(error), error, error.__traceback__))
    if errors:
        raise errors[0]


def _listed(names: list[str], limit: int = 500) -> str:
    """``names`` for a log line: joined, each cut at 200 characters, whole ones only as long as the line stays
    within about ``limit`` characters, then how many more (cut at ``limit``, the last name was cut mid-way and the
    rest not counted: 11 of 464 shown).

    Example:
        >>> _listed(["gone/a", "gone/b", "gone/c"], limit=14)
        'gone/a, gone/b, and 1 more'
        >>> _listed(["x" * 300])[-5:], _listed([])
        ('xxxx…', '')
    """
    shown: list[str] = []
    length = 0
    for name in names:
        name = name if len(name) <= 200 else name[:200] + "…"
        if shown and length + 2 + len(name) > limit:
            break
        shown.append(name)
        length += len(name) + (2 if len(shown) > 1 else 0)
    more = len(names) - len(shown)
    return ", ".join(shown) + (f", and {more} more" if more else "")


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _guarded(outcome: Any) -> BaseException | None:
    """Await a hook's ``outcome`` (in a task of its own): what it raised, returned (a KeyboardInterrupt raised out
    of a task ends the client's loop), or ``None``; a cancellation of this task is raised."""
    try:
        await outcome
    except BaseException as exc:
        if not handler_raised(exc):
            raise
        return exc
    return None
