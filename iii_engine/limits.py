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
- ``max_services``: explicit (``registerservice``) services the engine keeps; they outlive their worker and their
  functions. Implicit ones (a function id's prefix) come and go with functions, which are bounded above, and do not
  count. A new explicit service past it is refused the same way.

Example:
    >>> from iii_engine.config import EngineConfig
    >>> limits = CountLimits(EngineConfig(max_workers=2))
    >>> limits.connection_refusal(1) is None, limits.connection_refusal(2)
    (True, 'too many workers connected (max_workers 2)')
"""

from __future__ import annotations

import logging

from .config import EngineConfig
from .registry import Registry
from .workers import WorkerConnection

log = logging.getLogger(__name__)

TRY_AGAIN_LATER = 1013
"""Close code for a connection past ``max_workers`` (RFC 6455 "Try Again Later")."""


class CountLimits:
    """The engine's count bounds, checked where the engine adds a connection, a registration or a service."""

    def __init__(self, config: EngineConfig) -> None:
        self.max_workers = config.max_workers
        self.max_registrations = config.max_registrations_per_worker
        self.max_services = config.max_services

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
                           held: bool) -> bool:
        """May ``worker`` register ``item_id`` (a ``kind``: function, trigger type, trigger)? ``held``: it already
        holds that id (a re-registration, which never counts twice)."""
        if held:
            return True
        count = self.held(worker, registry)
        if count < self.max_registrations:
            return True
        return self._refuse(worker, f"{kind} {item_id!r}",
                            f"it holds {count} registrations (max_registrations_per_worker {self.max_registrations})")

    def admit_service(self, worker: WorkerConnection, registry: Registry, name: str) -> bool:
        """May ``worker`` add the explicit service ``name``? Replacing an explicit one always may; making an
        implicit one (a function's prefix) explicit adds one, as it then outlives its functions."""
        known = registry.services.get(name)
        if (known is not None and known.explicit) or registry.explicit_services < self.max_services:
            return True
        return self._refuse(worker, f"service {name!r}", f"the engine keeps {registry.explicit_services} "
                            f"explicit services (max_services {self.max_services})")

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
