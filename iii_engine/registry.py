"""What the engine knows: functions, services, trigger types and triggers. Pure data, no I/O.

Ownership rules (docs/protocol.md#messages, docs/protocol.md#messages, docs/protocol.md#engine-improvements E2/E5):

- function ids are global and the last registrant wins; the overwritten registrant is remembered and restored
  when the current owner disconnects (E5), but an explicit ``unregisterfunction`` removes the id outright;
- every worker function id ``a::b`` belongs to the implicit service ``a`` (function ``b``); a service whose
  function set becomes empty is dropped;
- triggers are keyed by id; a trigger whose type is unknown is kept *pending* (E2) until the type appears;
- the wire listings (``engine::functions::list``, ``engine::triggers::list``) are built once per change of their
  table, from info dicts each entry builds once: listing 10,000 functions costs a list copy, not 10,000 new dicts.

Example:
    >>> reg = Registry()
    >>> reg.add_function(FunctionEntry("math::add", owner="w1"))
    >>> sorted(reg.services["math"].functions)
    ['add']
    >>> reg.add_function(FunctionEntry("math::add", owner="w2")).owner
    'w1'
    >>> reg.drop_owned_function("math::add", "w2").owner  # w2 leaves: w1's registration comes back
    'w1'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.wire import dumps

from .modules.base import BuiltinFunction, TriggerTypeHandler

#: Function ids of the engine's own built-ins; listings leave them (and triggers calling them) out by default.
INTERNAL_PREFIX = "engine::"


@dataclass
class FunctionEntry:
    """One registered function; ``owner`` is a worker id, ``None`` for engine built-ins. ``gone``: a stopped module's
    function for the rest of the engine's stop (its calls fail with a retry-safe error); not listed."""

    id: str
    owner: str | None = None
    description: str | None = None
    request_format: Any = None
    response_format: Any = None
    metadata: Any = None
    builtin: BuiltinFunction | None = None
    external: bool = False
    gone: bool = False
    #: bytes it holds of its owner's ``max_registration_bytes_per_worker`` (estimated from its frame)
    size: int = field(default=0, compare=False)
    _info: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def info(self) -> dict[str, Any]:
        """The wire ``FunctionInfo`` (every key present, docs/protocol.md#built-in-functions).

        Built once and shared (a registration never changes an entry, it replaces it): read it, never modify it.
        """
        if self._info is None:
            self._info = {
                "function_id": self.id,
                "description": self.description,
                "request_format": self.request_format,
                "response_format": self.response_format,
                "metadata": self.metadata,
            }
        return self._info


@dataclass
class ServiceEntry:
    """A service, keyed by its effective name."""

    id: str
    name: str
    parent_service_id: str | None = None
    functions: set[str] = field(default_factory=set)
    explicit: bool = False
    #: bytes it holds of ``max_service_bytes`` while explicit (estimated from its frame)
    size: int = field(default=0, compare=False)


@dataclass
class TriggerTypeEntry:
    """A trigger type: worker-owned (``owner`` set) or built into an engine module (``handler`` set);
    ``taken_from``: the worker that owned it before ``owner`` took it over."""

    id: str
    description: str
    owner: str | None = None
    handler: TriggerTypeHandler | None = None
    taken_from: str | None = None
    #: bytes it holds of its owner's ``max_registration_bytes_per_worker`` (estimated from its frame)
    size: int = field(default=0, compare=False)
    #: the workers it was taken over from, latest first: when its owner leaves or lets it go, the first of them
    #: still connected gets it back (at most :data:`MAX_EARLIER_OWNERS`, each once; ids only: an earlier owner's
    #: description kept here would be memory charged to nobody, and it gets the type back as it is now)
    earlier: tuple[str, ...] = field(default=(), compare=False)


MAX_EARLIER_OWNERS = 8
"""Earlier owners a trigger type remembers (owners taking it from each other in turn stay bounded)."""


@dataclass
class TriggerEntry:
    """A stored trigger; ``registrant`` is the worker that registered it (``None`` for the engine)."""

    id: str
    trigger_type: str
    function_id: str
    config: Any
    registrant: str | None = None
    #: bytes it holds of its registrant's ``max_registration_bytes_per_worker`` (estimated from its frame)
    size: int = field(default=0, compare=False)
    _info: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def info(self) -> dict[str, Any]:
        """The wire ``TriggerInfo``; built once and shared like :meth:`FunctionEntry.info`."""
        if self._info is None:
            self._info = {"id": self.id, "trigger_type": self.trigger_type, "function_id": self.function_id,
                          "config": self.config}
        return self._info


class Registry:
    """The engine's tables. Callers (the engine) do the messaging; this class only keeps the books."""

    def __init__(self) -> None:
        self.functions: dict[str, FunctionEntry] = {}
        self.services: dict[str, ServiceEntry] = {}
        #: how many of ``services`` are explicit (``registerservice``): those outlive every function and worker, so
        #: they are what ``max_services`` bounds (implicit ones are bounded through the functions that make them)
        self.explicit_services = 0
        #: the (estimated) bytes of the explicit services, bounded by ``max_service_bytes``
        self.explicit_service_bytes = 0
        # Read it freely; change it only through put_trigger_type / drop_trigger_type, which keep the byte books.
        self.trigger_types: dict[str, TriggerTypeEntry] = {}
        # The (estimated) bytes of what each owner's registrations make the engine keep: current functions,
        # overwritten ones kept to be restored (E5), trigger types, stored and pending triggers and replaced ones kept
        # (E12), all of which the count bound counts too. Kept here, where every table changes, so that no path can
        # add or drop an entry without its bytes; audit_bytes() recounts them from the tables.
        self._bytes: dict[str | None, int] = {}
        #: the bytes every worker's registrations hold together (``max_registration_bytes``)
        self.worker_bytes = 0
        # Read them freely; change them only through store_trigger / park_trigger / discard_trigger, which keep
        # the indexes below (so a worker's connect or disconnect costs its own triggers, not everyone's).
        self.triggers: dict[str, TriggerEntry] = {}
        self.pending_triggers: dict[str, TriggerEntry] = {}
        self._active_of_type: dict[str, dict[str, TriggerEntry]] = {}
        self._pending_of_type: dict[str, dict[str, TriggerEntry]] = {}
        self._of_registrant: dict[str | None, dict[str, TriggerEntry]] = {}
        # Triggers another registrant's registration of their id replaced, by id then registrant (oldest first, one
        # each), kept to come back when the replacement goes (E12, as E5 for functions); indexed by registrant too.
        self._shadowed_triggers: dict[str, dict[str | None, TriggerEntry]] = {}
        self._trigger_shadowing: dict[str | None, set[str]] = {}
        # Earlier registrants of an overwritten id by owner, oldest first (one each: an owner's new registration
        # replaces its old one); only entries of live owners are kept. Indexed by owner as well, so that N
        # replicas registering the same ids cost N, not N squared, to come and go.
        self._shadowed: dict[str, dict[str | None, FunctionEntry]] = {}
        self._shadowing: dict[str | None, set[str]] = {}
        self.version = 0  # bumped on every change of the function id set
        # The listings, by include_internal, until their table changes (see function_infos / trigger_infos).
        self._function_listing: dict[bool, list[dict[str, Any]]] = {}
        self._trigger_listing: dict[bool, list[dict[str, Any]]] = {}
        # Their JSON replies, each with the listing it encodes: valid while that very list is the cached listing
        # (a change of the table drops the listing, so no other place has to drop these).
        self._function_json: dict[bool, tuple[list[dict[str, Any]], str]] = {}
        self._trigger_json: dict[bool, tuple[list[dict[str, Any]], str]] = {}

    # -- functions -------------------------------------------------------------------------------------------

    def add_function(self, entry: FunctionEntry) -> FunctionEntry | None:
        """Register ``entry`` (last writer wins); returns the entry it replaced, if any."""
        previous = self.functions.get(entry.id)
        owner = entry.owner
        self._unshadow(entry.id, owner)
        if previous is not None:
            if previous.owner != owner:
                self._keep_function(previous, charged=True)  # its bytes stay its owner's, kept instead of current
            else:
                self._charge(owner, -previous.size)
        self.functions[entry.id] = entry
        self._charge(owner, entry.size)
        self._function_listing.clear()
        if previous is None:
            self.version += 1
        if owner is not None:
            self._service_add(entry.id)
        return previous

    def remove_function(self, function_id: str) -> FunctionEntry | None:
        """Remove ``function_id`` whoever owns it, forgetting earlier registrants too."""
        for owner in list(self._shadowed.get(function_id, ())):
            self._unshadow(function_id, owner)
        entry = self.functions.pop(function_id, None)
        if entry is not None:
            self._charge(entry.owner, -entry.size)
            self._function_listing.clear()
            self.version += 1
            self._service_remove(function_id)
        return entry

    def drop_owned_function(self, function_id: str, owner: str | None) -> FunctionEntry | None:
        """``owner`` is gone (``None``: the engine's built-in goes): remove its registration of ``function_id`` (E5).

        Returns the restored earlier registration when there is one, else ``None``.
        """
        self._unshadow(function_id, owner)
        current = self.functions.get(function_id)
        if current is None or current.owner != owner:
            return None
        self._function_listing.clear()
        self._charge(owner, -current.size)
        stack = self._shadowed.get(function_id)
        if stack:
            restored_owner = next(reversed(stack))  # the latest earlier registrant
            restored = stack.pop(restored_owner)  # current again: its bytes stay on its owner's books
            if not stack:
                del self._shadowed[function_id]
            self._forget_kept_id(restored_owner, function_id)
            self.functions[function_id] = restored
            return restored
        del self.functions[function_id]
        self.version += 1
        self._service_remove(function_id)
        return None

    def restore_later(self, entry: FunctionEntry) -> None:
        """Keep ``entry`` as its owner's earlier registration of its id, which another owner holds now: it comes back
        when that owner goes, as an overwritten registration does (E5).

        Example:
            >>> reg = Registry()
            >>> reg.add_function(FunctionEntry("a::f", owner="w1"))
            >>> reg.restore_later(FunctionEntry("a::f", owner=None, description="the engine's"))
            >>> reg.drop_owned_function("a::f", "w1").description
            "the engine's"
        """
        self._keep_function(entry)

    def _keep_function(self, entry: FunctionEntry, charged: bool = False) -> None:
        """Keep ``entry`` to be restored (E5), in place of its owner's earlier kept registration of its id;
        ``charged``: its bytes are on its owner's books already (it was current until now)."""
        owner = entry.owner
        self._unshadow(entry.id, owner)
        self._shadowed.setdefault(entry.id, {})[owner] = entry
        self._shadowing.setdefault(owner, set()).add(entry.id)
        if not charged:
            self._charge(owner, entry.size)

    def forget_owner(self, owner: str) -> None:
        """Drop ``owner``'s overwritten registrations everywhere, so they are never restored."""
        for function_id in list(self._shadowing.get(owner, ())):
            self._unshadow(function_id, owner)

    def _unshadow(self, function_id: str, owner: str | None) -> None:
        """Forget ``owner``'s earlier registration of ``function_id``, if it has one."""
        stack = self._shadowed.get(function_id)
        kept = None if stack is None else stack.pop(owner, None)
        if kept is None:
            return
        self._charge(owner, -kept.size)
        if not stack:
            del self._shadowed[function_id]
        self._forget_kept_id(owner, function_id)

    def _forget_kept_id(self, owner: str | None, function_id: str) -> None:
        ids = self._shadowing[owner]
        ids.discard(function_id)
        if not ids:
            del self._shadowing[owner]

    def shadowed_count(self, owner: str) -> int:
        """How many overwritten registrations of ``owner`` are kept to be restored (E5)."""
        return len(self._shadowing.get(owner, ()))

    def shadowed_entries(self, *, owner: str | None = None, function_id: str | None = None) -> list[FunctionEntry]:
        """Overwritten registrations kept to be restored (E5): ``owner``'s, or those of ``function_id``, or the one of
        both."""
        if function_id is not None:
            stack = self._shadowed.get(function_id, {})
            return [e for o, e in stack.items() if owner is None or o == owner]
        return [self._shadowed[fid][owner] for fid in self._shadowing.get(owner, ())]

    def shadows(self, owner: str, function_id: str) -> bool:
        """Whether ``owner``'s overwritten registration of ``function_id`` is kept to be restored (E5)."""
        return function_id in self._shadowing.get(owner, ())

    def function_infos(self, include_internal: bool) -> list[dict[str, Any]]:
        """The ``FunctionInfo`` of every function, sorted by id; ``engine::*`` ones only with ``include_internal``.

        A new list of shared dicts (:meth:`FunctionEntry.info`); kept until the function table changes.
        """
        listing = self._function_listing.get(include_internal)
        if listing is None:
            listing = self._function_listing[include_internal] = [
                self.functions[fid].info() for fid in sorted(self.functions)
                if (include_internal or not fid.startswith(INTERNAL_PREFIX)) and not self.functions[fid].gone]
        return list(listing)

    def function_listing_json(self, include_internal: bool) -> str | None:
        """``{"functions": function_infos(include_internal)}`` as JSON text (the ``engine::functions::list`` reply),
        encoded once per change of the function table; ``None`` when it has no JSON form (the caller then encodes
        it as usual and reports the error).

        Example:
            >>> reg = Registry()
            >>> reg.add_function(FunctionEntry("a::f", "w1"))
            >>> reg.function_listing_json(False) is reg.function_listing_json(False)
            True
        """
        self.function_infos(include_internal)  # builds the listing if the table changed
        return _encoded(self._function_json, self._function_listing[include_internal], include_internal,
                        "functions")

    def owned_functions(self, owner: str) -> list[str]:
        """Ids whose *current* registrant is ``owner``."""
        return [fid for fid, e in self.functions.items() if e.owner == owner]

    # -- services --------------------------------------------------------------------------------------------

    def register_service(self, service_id: str, name: str, parent_service_id: str | None,
                         size: int = 0) -> ServiceEntry | None:
        """Explicit ``registerservice`` (``size``: what it holds); returns the same-name service it replaced (its
        function set is reset)."""
        effective = name or service_id
        previous = self.services.get(effective)
        self.services[effective] = ServiceEntry(service_id, effective, parent_service_id, explicit=True, size=size)
        if previous is None or not previous.explicit:
            self.explicit_services += 1
        else:
            self.explicit_service_bytes -= previous.size
        self.explicit_service_bytes += size
        return previous

    def _service_add(self, function_id: str) -> None:
        head, sep, rest = function_id.partition("::")
        if not sep:
            return
        service = self.services.get(head)
        if service is None:
            service = self.services[head] = ServiceEntry(head, head)
        service.functions.add(rest)

    def _service_remove(self, function_id: str) -> None:
        head, sep, rest = function_id.partition("::")
        service = self.services.get(head) if sep else None
        if service is None or rest not in service.functions:
            return
        service.functions.discard(rest)
        if not service.functions:
            del self.services[head]
            if service.explicit:
                self.explicit_services -= 1
                self.explicit_service_bytes -= service.size

    # -- trigger types and triggers --------------------------------------------------------------------------

    def put_trigger_type(self, entry: TriggerTypeEntry) -> None:
        """Make ``entry`` the trigger type of its id (the one it replaces no longer counts for its owner)."""
        self.drop_trigger_type(entry.id)
        self.trigger_types[entry.id] = entry
        self._charge(entry.owner, entry.size)

    def drop_trigger_type(self, type_id: str, entry: TriggerTypeEntry | None = None) -> None:
        """Forget the trigger type ``type_id`` (only if it is ``entry``, when given)."""
        current = self.trigger_types.get(type_id)
        if current is not None and (entry is None or current is entry):
            del self.trigger_types[type_id]
            self._charge(current.owner, -current.size)

    def store_trigger(self, entry: TriggerEntry) -> None:
        """Make ``entry`` the active trigger of its id (replacing a pending or active one of that id; another
        registrant's is kept to come back, E12)."""
        self._keep_replaced(entry)
        self.discard_trigger(entry.id)
        self.triggers[entry.id] = entry
        self._trigger_listing.clear()
        self._index(self._active_of_type, entry)

    def park_trigger(self, entry: TriggerEntry) -> None:
        """Keep ``entry`` pending until its trigger type appears (E2), replacing any trigger of that id (another
        registrant's is kept to come back, E12)."""
        self._keep_replaced(entry)
        self.discard_trigger(entry.id)
        self.pending_triggers[entry.id] = entry
        self._index(self._pending_of_type, entry)

    def _keep_replaced(self, entry: TriggerEntry) -> None:
        self._unshadow_trigger(entry.id, entry.registrant)
        previous = self.find_trigger(entry.id)
        if previous is not None and previous.registrant != entry.registrant:
            self._shadow(previous)

    def keep_replaced_trigger(self, entry: TriggerEntry) -> None:
        """Keep ``entry``, which a later registration of its id replaced at its type before ``entry`` was stored, to
        come back when that one goes (E12), as :meth:`store_trigger` keeps a stored one it replaces; not when its
        own registrant made the id's current one.

        Example:
            >>> registry = Registry()
            >>> registry.store_trigger(TriggerEntry("t", "cron", "f::b", None, "b"))
            >>> registry.keep_replaced_trigger(TriggerEntry("t", "cron", "f::a", None, "a"))
            >>> registry.restore_trigger("t").registrant
            'a'
        """
        current = self.find_trigger(entry.id)
        if current is None or current.registrant != entry.registrant:
            self._shadow(entry)

    def _shadow(self, entry: TriggerEntry) -> None:
        self._unshadow_trigger(entry.id, entry.registrant)
        self._shadowed_triggers.setdefault(entry.id, {})[entry.registrant] = entry
        self._trigger_shadowing.setdefault(entry.registrant, set()).add(entry.id)
        self._charge(entry.registrant, entry.size)

    def _unshadow_trigger(self, trigger_id: str, registrant: str | None) -> bool:
        """Forget ``registrant``'s replaced registration of ``trigger_id``; whether it had one."""
        kept = self._shadowed_triggers.get(trigger_id)
        entry = None if kept is None else kept.pop(registrant, None)
        if entry is None:
            return False
        self._charge(registrant, -entry.size)
        if not kept:
            del self._shadowed_triggers[trigger_id]
        ids = self._trigger_shadowing[registrant]
        ids.discard(trigger_id)
        if not ids:
            del self._trigger_shadowing[registrant]
        return True

    def drop_replaced_trigger(self, trigger_id: str, registrant: str | None) -> bool:
        """``registrant`` takes back its replaced registration of ``trigger_id`` (the replacement stays); whether
        it had one."""
        return self._unshadow_trigger(trigger_id, registrant)

    def restore_trigger(self, trigger_id: str) -> TriggerEntry | None:
        """The latest replaced registration of ``trigger_id``, no longer kept: the caller makes it current again
        (its replacement is gone)."""
        kept = self._shadowed_triggers.get(trigger_id)
        if not kept:
            return None
        entry = kept[next(reversed(kept))]
        self._unshadow_trigger(trigger_id, entry.registrant)
        return entry

    def forget_replaced_triggers(self, *, registrant: str | None = None, trigger_id: str | None = None) -> None:
        """Never restore ``registrant``'s replaced triggers (it is gone), or any of ``trigger_id``."""
        if trigger_id is not None:
            for owner in list(self._shadowed_triggers.get(trigger_id, ())):
                self._unshadow_trigger(trigger_id, owner)
        else:
            for tid in list(self._trigger_shadowing.get(registrant, ())):
                self._unshadow_trigger(tid, registrant)

    def _index(self, by_type: dict[str, dict[str, TriggerEntry]], entry: TriggerEntry) -> None:
        by_type.setdefault(entry.trigger_type, {})[entry.id] = entry
        self._of_registrant.setdefault(entry.registrant, {})[entry.id] = entry
        self._charge(entry.registrant, entry.size)

    @staticmethod
    def _unindex(index: dict[Any, dict[str, TriggerEntry]], key: Any, trigger_id: str) -> None:
        bucket = index.get(key)
        if bucket is not None:
            bucket.pop(trigger_id, None)
            if not bucket:
                del index[key]

    def triggers_of_type(self, trigger_type: str) -> list[TriggerEntry]:
        """Stored (active) triggers of a type."""
        return list(self._active_of_type.get(trigger_type, {}).values())

    def triggers_of_registrant(self, registrant: str | None) -> list[TriggerEntry]:
        """Stored and pending triggers registered by ``registrant``."""
        return list(self._of_registrant.get(registrant, {}).values())

    def trigger_count(self, registrant: str | None) -> int:
        """How many stored and pending triggers ``registrant`` registered, replaced ones kept to come back too."""
        return len(self._of_registrant.get(registrant, ())) + len(self._trigger_shadowing.get(registrant, ()))

    def has_trigger_of(self, registrant: str | None, trigger_id: str) -> bool:
        """Whether ``registrant`` registered the (stored, pending, or replaced and kept) trigger ``trigger_id``."""
        return trigger_id in self._of_registrant.get(registrant, ()) or \
            trigger_id in self._trigger_shadowing.get(registrant, ())

    def take_pending(self, trigger_type: str) -> list[TriggerEntry]:
        """Remove and return the pending triggers waiting for ``trigger_type`` (E2)."""
        ready = list(self._pending_of_type.get(trigger_type, {}).values())
        for t in ready:
            self.discard_trigger(t.id)
        return ready

    def find_trigger(self, trigger_id: str) -> TriggerEntry | None:
        """A stored or pending trigger by id."""
        return self.triggers.get(trigger_id) or self.pending_triggers.get(trigger_id)

    def discard_trigger(self, trigger_id: str) -> TriggerEntry | None:
        """Forget a trigger (stored or pending)."""
        active = self.triggers.pop(trigger_id, None)
        pending = self.pending_triggers.pop(trigger_id, None)
        if active is not None:
            self._trigger_listing.clear()
        for entry, by_type in ((active, self._active_of_type), (pending, self._pending_of_type)):
            if entry is not None:
                self._unindex(by_type, entry.trigger_type, trigger_id)
                self._unindex(self._of_registrant, entry.registrant, trigger_id)
                self._charge(entry.registrant, -entry.size)
        return active or pending

    def trigger_listing_json(self, include_internal: bool) -> str | None:
        """``{"triggers": trigger_infos(include_internal)}`` as JSON text, encoded once per change of the trigger
        table (see :meth:`function_listing_json`)."""
        self.trigger_infos(include_internal)
        return _encoded(self._trigger_json, self._trigger_listing[include_internal], include_internal, "triggers")

    def trigger_infos(self, include_internal: bool) -> list[dict[str, Any]]:
        """The ``TriggerInfo`` of every stored trigger in registration order; triggers calling ``engine::*``
        functions only with ``include_internal``. A new list of shared dicts, kept until the table changes."""
        listing = self._trigger_listing.get(include_internal)
        if listing is None:
            listing = self._trigger_listing[include_internal] = [
                t.info() for t in self.triggers.values()
                if include_internal or not t.function_id.startswith(INTERNAL_PREFIX)]
        return list(listing)


    # -- byte books ------------------------------------------------------------------------------------------

    def bytes_held(self, owner: str | None) -> int:
        """The bytes of what ``owner``'s registrations make the engine keep (see ``_bytes``).

        Example:
            >>> reg = Registry()
            >>> reg.add_function(FunctionEntry("a::f", owner="w1", size=120))
            >>> reg.add_function(FunctionEntry("a::f", owner="w2", size=80))  # w1's is kept to be restored (E5)
            FunctionEntry(id='a::f', owner='w1', ...)
            >>> reg.bytes_held("w1"), reg.bytes_held("w2")
            (120, 80)
        """
        return self._bytes.get(owner, 0)

    def held_size(self, owner: str | None, kind: str, item_id: str) -> int:
        """The bytes ``owner``'s own registration of ``item_id`` (a ``kind``: function, trigger type, trigger)
        holds now, current or kept to be restored; 0 when it holds none."""
        found: FunctionEntry | TriggerTypeEntry | TriggerEntry | None
        if kind == "function":
            found = self.functions.get(item_id)
            if found is None or found.owner != owner:
                found = self._shadowed.get(item_id, {}).get(owner)
        elif kind == "trigger type":
            found = self.trigger_types.get(item_id)
            if found is not None and found.owner != owner:
                found = None
        else:
            found = self._of_registrant.get(owner, {}).get(item_id) or \
                self._shadowed_triggers.get(item_id, {}).get(owner)
        return 0 if found is None else found.size

    def audit_bytes(self) -> dict[str | None, int]:
        """The byte books counted again from the tables (tests compare it with what was kept as they went)."""
        books: dict[str | None, int] = {}
        kept: list[FunctionEntry | TriggerTypeEntry | TriggerEntry] = [
            *self.functions.values(), *(e for stack in self._shadowed.values() for e in stack.values()),
            *self.trigger_types.values(), *self.triggers.values(), *self.pending_triggers.values(),
            *(e for stack in self._shadowed_triggers.values() for e in stack.values())]
        for entry in kept:
            owner = entry.registrant if isinstance(entry, TriggerEntry) else entry.owner
            if entry.size:
                books[owner] = books.get(owner, 0) + entry.size
        return books

    def _charge(self, owner: str | None, delta: int) -> None:
        if delta and owner is not None:
            self.worker_bytes += delta
        if delta:
            total = self._bytes.get(owner, 0) + delta
            if total:
                self._bytes[owner] = total
            else:
                del self._bytes[owner]


def _encoded(cache: dict[bool, tuple[list[dict[str, Any]], str]], listing: list[dict[str, Any]],
             include_internal: bool, key: str) -> str | None:
    """The cached JSON of ``{key: listing}``, encoded again only when ``listing`` is a new list (the cache holds the
    old one, so a new list can never reuse its identity)."""
    cached = cache.get(include_internal)
    if cached is not None and cached[0] is listing:
        return cached[1]
    try:
        text = dumps({key: listing})
    except (TypeError, ValueError):
        return None
    cache[include_internal] = (listing, text)
    return text
