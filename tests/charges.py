"""A worker's built-in call as the engine charges it (``iii_engine.limits.CallCharge``), for tests of the byte bounds
on trigger-fired calls (``max_fired_bytes``, ``max_call_bytes_per_worker``)."""

from __future__ import annotations

import contextvars

from iii_engine.limits import CALL_CHARGE, CallCharge
from iii_engine.workers import WorkerConnection


def worker_call(worker: WorkerConnection, size: int) -> tuple[CallCharge, contextvars.Context]:
    """A call of ``worker`` with a ``size``-byte frame, counted on the worker as the engine counts it, and a context
    as its task runs in (``CALL_CHARGE`` set): run a take in it to charge the call.

    Example:
        >>> worker = WorkerConnection.__new__(WorkerConnection)
        >>> worker.calls, worker.builtin_calls, worker.call_bytes = 0, 0, 0
        >>> charge, inside = worker_call(worker, 300)
        >>> worker.call_bytes, inside.run(CALL_CHARGE.get) is charge
        (300, True)
    """
    worker.calls += 1
    worker.builtin_calls += 1
    worker.call_bytes += size
    charge = CallCharge(worker, size)
    context = contextvars.copy_context()
    context.run(CALL_CHARGE.set, charge)
    return charge, context
