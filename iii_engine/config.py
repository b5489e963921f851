"""Engine configuration: the production engine's YAML format plus a few keys of our own.

Production keys: top-level ``port`` and a ``modules:`` list of ``{class, config}`` entries naming production
module classes (an entry may also set our ``start_timeout_ms``: how long the engine waits for that module's start,
see :class:`~iii_engine.modules.base.ModuleSpec`). Strings may contain ``${VAR}`` or ``${VAR:default}``, expanded
from the environment once the YAML is parsed (quoted or not, the placeholder is a string); each field converts the
expanded text to its own type (see :func:`expand_env`). A key written twice in one mapping is refused, as production
refuses it, a second ``<<:`` too (a key a ``<<:`` merge gives is not: the mapping's own wins, then the first merged
mapping with what it merges). Every pair a merge reads counts against :data:`MAX_CONFIG_VALUES`.
Our keys (all optional): ``host``, ``invocation_timeout_ms`` (docs/protocol.md#engine-improvements E7),
``max_message_size`` (control
socket, default 4 MiB), ``max_outbox_bytes`` (unread bytes per worker, default 16 MiB), ``max_workers``
(connected workers, default 10,000), ``max_handshakes`` (connections to the engine's port that have not sent their
whole upgrade request, counted from their accept; with that many the port stops accepting until one sends it or
closes; default a quarter of the open-file limit, at most 1,024), ``max_registrations_per_worker`` (functions,
trigger types and triggers one worker holds, default 100,000), ``max_registration_bytes_per_worker`` (what
those keep, estimated from their frames, default 512 MiB), ``max_registration_bytes`` (what every worker's keep
together, default 2 GiB), ``max_services`` (services kept, default 100,000),
``max_service_bytes`` (what they keep, default 64 MiB),
``max_fired_calls`` (trigger-fired calls in flight engine-wide, default 10,000), ``max_fired_calls_per_worker`` (those
in flight to one callee worker, default a quarter of ``max_fired_calls``), ``fire_wait_timeout_ms`` (how long a
producer that is itself a call waits for room among them, default 10,000), ``max_fired_bytes`` (payload bytes those
calls hold, default 256 MiB), ``max_calls_per_worker`` (calls one worker has in flight through the engine, default
10,000), ``max_call_bytes_per_worker`` (bytes one worker's calls and the fired calls they set off hold, default
64 MiB), ``void_grace_ms`` (how long a void call of a function no worker serves waits for a worker to register it,
default 60,000; 0 drops it at once, as production does),
``functions_available_debounce_ms`` (E8), ``allow_degraded`` (start even when a configured module cannot; see
:class:`EngineConfig`) and ``channels: {production_mode, attach_timeout_ms, max_message_size, max_channel_bytes,
max_queued_bytes}`` (see :class:`ChannelSettings`). Unknown top-level keys are ignored, as production does (a near-miss
of a known one, ``prot:`` for ``port:``, with a warning naming the closest).

Every value is checked by a typed model (:mod:`iii_engine.settings`); a bad one raises :class:`ConfigError`
naming its path. Each module's ``config`` is checked by that module's own settings model when the engine starts
it, and its errors name the path from the top of the file (``modules[2].config.port: …``).

Example:
    >>> cfg = parse_config("port: ${PORT:5000}\\nmodules:\\n  - class: modules::queue::QueueModule\\n", env={})
    >>> cfg.port, [m.class_name for m in cfg.modules or []]
    (5000, ['modules::queue::QueueModule'])
    >>> parse_config("channels: {max_queued_bytes: 0}", env={})
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: channels.max_queued_bytes: must be >= 1, got 0
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import field_validator

from .channels import (
    DEFAULT_MAX_HELD_BYTES,
    DEFAULT_MAX_HELD_BYTES_PER_WORKER,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_OPEN_CHANNELS,
    DEFAULT_MAX_OPEN_PER_WORKER,
    DEFAULT_MAX_QUEUED_BYTES,
)
from .event_loop import DEFAULT_EVENT_LOOP, EventLoopName
from .modules.base import ModuleSpec
from .modules.catalogue import DEFAULT_MODULES
from .settings import (
    MAX_TIMEOUT_MS,
    MAX_TIMEOUT_S,
    ConfigError,
    Field,
    Settings,
    UnknownKeys,
    YamlFlag,
    YamlFloat,
    YamlInt,
    from_env,
    join_path,
)

__all__ = ["ChannelSettings", "ConfigError", "EngineConfig", "config_from_mapping", "expand_env", "load_config",
           "parse_config"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 49134
MAX_PORT = 65535
# Control-socket frames are parsed whole on the event loop: 4 MiB bounds what one frame costs every other worker
# (bulk data belongs in channels). The outbound bound is per worker connection (close code 1008 past it).
DEFAULT_CONTROL_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
DEFAULT_MAX_OUTBOX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_WORKERS = 10_000
DEFAULT_MAX_REGISTRATIONS_PER_WORKER = 100_000
DEFAULT_MAX_SERVICES = 100_000
# Counts alone let one worker's 100,000 registrations of up to 4 MiB each (a trigger's config, a function's formats)
# hold 400 GB while it stays connected: 600 triggers of 3 MB took an engine from 66 to 1,788 MB. What a
# registration holds is iii_engine.limits.retained_estimate (~10x its frame for a pydantic-made JSON schema, whose
# memory it overstates ~1.8x): 512 MiB is ~13,000 functions with such request and response schemas (256 MiB refused
# 3,481 of 10,000 an SDK registered), and at most ~1.3 MB of memory per MiB for the shapes measured.
DEFAULT_MAX_REGISTRATION_BYTES_PER_WORKER = 512 * 1024 * 1024
# Every worker's together: the per-worker bound alone let one client hold 512 MiB per connection it opened (an attack:
# the engine grew by ~255 MB per connection, linear in connections, up to max_workers). Four workers' worth: ~52,000
# functions with pydantic-made schemas, ~1.1 GB of memory at most.
DEFAULT_MAX_REGISTRATION_BYTES = 4 * DEFAULT_MAX_REGISTRATION_BYTES_PER_WORKER
# Explicit services outlive their worker: a byte bound for all of them together, as max_services bounds their count.
DEFAULT_MAX_SERVICE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_FIRED_CALLS = 10_000
DEFAULT_FIRE_WAIT_TIMEOUT_MS = 10_000
DEFAULT_MAX_CALLS_PER_WORKER = 10_000
DEFAULT_ATTACH_TIMEOUT_MS = 300_000
# Counts alone let 10,000 fired calls of 4 MiB frames hold 40 GB. A quarter of the engine-wide budget per worker:
# one publisher faster than its subscribers is refused before it holds everyone's room.
DEFAULT_MAX_FIRED_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_CALL_BYTES_PER_WORKER = 64 * 1024 * 1024
# After an engine restart a caller's backlog of void calls may arrive before its callee's worker has registered
# again: workers reconnect with jittered backoff (± 30 % of 1, 2, 4 ... s, at most 30 s), so after a long outage two
# of them reconnect up to about 40 s apart (the SDK's own backoff, modelled: more than 10 s apart in half the cases).
DEFAULT_VOID_GRACE_MS = 60_000
# A configuration is a few kilobytes; these bound what a wrong file (a log, a dump) or a hostile one costs to read.
# YAML aliases let a small file name a huge tree (each alias of an alias multiplies it), so the values are counted
# as expanded, and nesting is bounded (a self-referencing alias is infinitely deep).
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONFIG_DEPTH = 64
MAX_CONFIG_VALUES = 100_000

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


class ChannelSettings(Settings):
    """Settings handed to the channel relay (``channels:`` in the configuration file).

    ``attach_timeout_ms``: how long a created channel waits for an end to attach (default 300 000; the older
    ``attach_timeout_s`` in seconds is still read). ``max_message_size``: largest message a writer may send
    (64 MiB). ``max_channel_bytes``: total payload bytes a writer may send over one channel; past it the writer is
    closed with 1009 and the reader with 4001 (``None``, the default: unlimited; ``engine::channels::create`` may
    set a per-channel value). ``max_queued_bytes``: payload bytes one channel may hold waiting for its reader
    before the relay stops reading the writer (default 16 MiB). ``max_open``: channels the engine keeps at once
    (default 100,000); ``engine::channels::create`` past it fails with ``channel_limit``, as it does past
    ``max_open_per_worker`` (channels one worker created and keeps open, default 20,000). ``max_held_bytes``:
    payload bytes the queues of all channels hold together before writers are not read (default ``None``: no
    engine-wide bound, as a full one makes every worker's streams written ahead of their reader wait; a channel
    whose reader is attached still moves, one message at a time), ``max_held_bytes_per_worker`` the same for the
    channels one worker created (default 64 MiB). ``max_sockets``: channel sockets attached at once (default
    ``None``: a quarter of the open-file limit), ``max_sockets_per_worker`` those of the channels one worker created
    (``None``: a quarter of ``max_sockets``); an upgrade past either is answered HTTP 503.

    Example:
        >>> ChannelSettings(max_channel_bytes=1 << 30).max_channel_bytes
        1073741824
        >>> ChannelSettings.parse({"attach_timeout_s": 5}).attach_timeout_ms
        5000
    """

    label: ClassVar[str] = "channels"

    production_mode: bool = False
    attach_timeout_ms: int = Field(DEFAULT_ATTACH_TIMEOUT_MS, ge=1)
    max_message_size: int = Field(DEFAULT_MAX_MESSAGE_SIZE, ge=1)
    max_channel_bytes: int | None = Field(None, ge=0)
    max_queued_bytes: int = Field(DEFAULT_MAX_QUEUED_BYTES, ge=1)
    max_open: int = Field(DEFAULT_MAX_OPEN_CHANNELS, ge=1)
    max_open_per_worker: int = Field(DEFAULT_MAX_OPEN_PER_WORKER, ge=1)
    max_held_bytes: int | None = Field(DEFAULT_MAX_HELD_BYTES, ge=1)
    max_held_bytes_per_worker: int = Field(DEFAULT_MAX_HELD_BYTES_PER_WORKER, ge=1)
    max_sockets: int | None = Field(None, ge=1)
    max_sockets_per_worker: int | None = Field(None, ge=1)

    @property
    def attach_timeout_s(self) -> float:
        """``attach_timeout_ms`` in seconds (what the relay takes)."""
        return self.attach_timeout_ms / 1000

    @classmethod
    def _rename(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        if "attach_timeout_s" not in data:
            return data
        seconds = data["attach_timeout_s"]
        if "attach_timeout_ms" in data:
            raise ConfigError("give attach_timeout_ms or attach_timeout_s, not both", "attach_timeout_s")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise ConfigError(f"must be a number > 0, got {seconds!r:.80}", "attach_timeout_s")
        if not seconds <= MAX_TIMEOUT_S:  # .inf raised OverflowError from round(); 10**400 made a 403-digit ms value
            raise ConfigError(f"must be <= {MAX_TIMEOUT_S}, got {seconds!r:.80}", "attach_timeout_s")
        rest = {key: value for key, value in data.items() if key != "attach_timeout_s"}
        return {**rest, "attach_timeout_ms": max(1, round(seconds * 1000))}


class EngineConfig(Settings):
    """Everything the engine is configured with.

    ``modules`` is ``None`` for "the default module set" (as production does without a ``modules:`` list) and
    a list (possibly empty) for exactly those modules. The worker module is always loaded.

    A configured module that cannot start (bad settings, store unreachable, port taken, not implemented by this
    engine) stops the start-up with :class:`~iii_engine.modules.base.ModuleStartError`; ``allow_degraded=True``
    starts without it instead (logged as a warning, listed in ``Engine.unavailable_modules``).

    Example:
        >>> EngineConfig(port=0, modules=[]).with_overrides(host="0.0.0.0").host
        '0.0.0.0'
        >>> EngineConfig(port=70000)
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: port: must be <= 65535, got 70000
    """

    unknown_keys: ClassVar[UnknownKeys] = "ignore"  # production ignores top-level keys it does not know
    label: ClassVar[str] = "the configuration's top level"

    host: str = Field(DEFAULT_HOST, min_length=1)
    port: int = Field(DEFAULT_PORT, ge=0, le=MAX_PORT)
    modules: list[ModuleSpec] | None = None
    invocation_timeout_ms: int | None = Field(None, ge=0, le=MAX_TIMEOUT_MS)
    max_message_size: int = Field(DEFAULT_CONTROL_MAX_MESSAGE_SIZE, ge=1)
    max_outbox_bytes: int = Field(DEFAULT_MAX_OUTBOX_BYTES, ge=1)
    #: count bounds (see :mod:`iii_engine.limits`): connected workers, what one worker may register, services kept
    max_workers: int = Field(DEFAULT_MAX_WORKERS, ge=1)
    max_handshakes: int | None = Field(None, ge=1)
    max_registrations_per_worker: int = Field(DEFAULT_MAX_REGISTRATIONS_PER_WORKER, ge=1)
    max_services: int = Field(DEFAULT_MAX_SERVICES, ge=1)
    #: the bytes one worker's registrations make the engine keep, and every explicit service together, each
    #: estimated from its frame (see :func:`iii_engine.limits.retained_estimate`)
    max_registration_bytes_per_worker: int = Field(DEFAULT_MAX_REGISTRATION_BYTES_PER_WORKER, ge=1)
    #: the bytes every worker's registrations make the engine keep together (one client opening many connections)
    max_registration_bytes: int = Field(DEFAULT_MAX_REGISTRATION_BYTES, ge=1)
    max_service_bytes: int = Field(DEFAULT_MAX_SERVICE_BYTES, ge=1)
    #: trigger-fired calls in flight engine-wide, and how long a producer that can wait does (see
    #: :class:`iii_engine.limits.FiredCalls`)
    max_fired_calls: int = Field(DEFAULT_MAX_FIRED_CALLS, ge=1)
    #: of those, the calls in flight to one callee worker (``None``: a quarter of ``max_fired_calls``), so that one
    #: worker that never answers cannot hold every slot
    max_fired_calls_per_worker: int | None = Field(None, ge=1)
    fire_wait_timeout_ms: int = Field(DEFAULT_FIRE_WAIT_TIMEOUT_MS, ge=1, le=MAX_TIMEOUT_MS)
    max_fired_bytes: int = Field(DEFAULT_MAX_FIRED_BYTES, ge=1)
    #: calls one worker has started through the engine and that are not over, and the bytes they (and the
    #: trigger-fired calls they set off) hold (see :class:`iii_engine.limits.WorkerCalls`)
    max_calls_per_worker: int = Field(DEFAULT_MAX_CALLS_PER_WORKER, ge=1)
    functions_available_debounce_ms: int = Field(150, ge=0)
    max_call_bytes_per_worker: int = Field(DEFAULT_MAX_CALL_BYTES_PER_WORKER, ge=1)
    #: how long a void call of a function no worker serves waits for one to register it (see
    #: :meth:`iii_engine.invocations.Invocations.start_invoke`); 0 drops it at once, as production does
    void_grace_ms: int = Field(DEFAULT_VOID_GRACE_MS, ge=0, le=MAX_TIMEOUT_MS)
    channels: ChannelSettings = Field(default_factory=ChannelSettings)
    allow_degraded: bool = False
    #: the event loop ``iii-engine`` runs on (ours); an embedded engine runs on its caller's loop
    #: (``iii_engine.event_loop.run`` picks one)
    event_loop: EventLoopName = DEFAULT_EVENT_LOOP

    @field_validator("modules")
    @classmethod
    def _each_class_once(cls, modules: list[ModuleSpec] | None) -> list[ModuleSpec] | None:
        # The engine keeps one module per name: a second entry of a class replaced the first, which then ran on
        # unseen (its port still open after the engine stopped) while its triggers went to the second.
        first: dict[str, int] = {}
        for index, spec in enumerate(modules or ()):
            if spec.class_name in first:
                raise ValueError(f"{spec.class_name} is configured twice (modules[{first[spec.class_name]}] and "
                                 f"modules[{index}]); merge the two entries")
            first[spec.class_name] = index
        return modules

    def defaults_left_out(self) -> list[str]:
        """The default modules a ``modules:`` list leaves out (none without a list): the list replaces the default
        set, as production's does, so a file naming only the module it adds runs without the others.

        Example:
            >>> left = EngineConfig(modules=[ModuleSpec("modules::stream::StreamModule")]).defaults_left_out()
            >>> print(", ".join(left[:2]))
            modules::state::StateModule, modules::queue::QueueModule
            >>> len(EngineConfig().defaults_left_out())
            0
        """
        if self.modules is None:
            return []
        listed = {spec.class_name for spec in self.modules}
        return [name for name in DEFAULT_MODULES if name not in listed]

    def with_overrides(self, *, host: str | None = None, port: int | None = None,
                       allow_degraded: bool | None = None, modules: list[ModuleSpec] | None = None,
                       event_loop: EventLoopName | None = None) -> EngineConfig:
        """A validated copy with the given values replaced (flags win over the file)."""
        updates = {key: value for key, value in
                   (("host", host), ("port", port), ("allow_degraded", allow_degraded), ("modules", modules),
                    ("event_loop", event_loop))
                   if value is not None}
        return self if not updates else EngineConfig(**{**dict(self), **updates})


def expand_env(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Expand ``${VAR}`` / ``${VAR:default}`` in every string of ``value``, mapping keys included (production
    expands the file's whole text before it parses it). A key that expands to another key of the same mapping is
    a :class:`ConfigError` naming both, unless one of them a YAML merge (``<<:``) gives: the mapping's own key wins,
    as it does for keys equal as written.

    An expanded string stays the text it expands to (:func:`~iii_engine.settings.from_env`), a number only when it
    is one in base 10; the settings field it lands in converts it to the field's type: ``port: ${PORT}`` is 10 for
    ``PORT=010`` (YAML 1.1 read it as octal 8), ``key_prefix: ${PREFIX}`` is the string ``"12345"``, and a version
    ``1.10`` stays ``"1.10"``.

    Example:
        >>> expanded = expand_env({"p": "${X:3112}", "u": "redis://${H:localhost}/0", "v": "${V}"},
        ...                       env={"H": "db", "V": "010"})
        >>> expanded
        {'p': 3112, 'u': 'redis://db/0', 'v': 10}
        >>> expanded["v"].text
        '010'
        >>> expand_env({"${K:port}": 1, "port": 2}, env={})
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: keys '${K:port}' and 'port' are both 'port' once expanded
    """
    return _expand(value, os.environ if env is None else env, 0, [MAX_CONFIG_VALUES], "")


def _expand(value: Any, source: Mapping[str, str], depth: int, left: list[int], path: str) -> Any:
    """:func:`expand_env` within :data:`MAX_CONFIG_DEPTH` levels and :data:`MAX_CONFIG_VALUES` values in all
    (``left`` counts down the values still allowed); ``path`` is where ``value`` sits, for errors."""
    left[0] -= 1
    if left[0] < 0:
        raise ConfigError(f"the configuration has more than {MAX_CONFIG_VALUES} values (counting every value a "
                          f"YAML alias repeats)")
    if depth > MAX_CONFIG_DEPTH:
        raise ConfigError(f"the configuration is nested deeper than {MAX_CONFIG_DEPTH} levels (or a YAML alias "
                          f"refers to itself)")
    if isinstance(value, str):
        expanded, placeholders = _substitute(value, source)
        return from_env(expanded) if placeholders else value
    if isinstance(value, list):
        return [_expand(v, source, depth + 1, left, join_path(path, i)) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return _expand_mapping(value, source, depth, left, path)
    return value


def _substitute(text: str, source: Mapping[str, str]) -> tuple[str, int]:
    """``text`` with its placeholders replaced, and how many there were."""
    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in source:
            return source[name]
        if default is None:
            raise ConfigError(f"environment variable {name} is not set and {match.group(0)} has no default")
        return default

    return _VAR.subn(sub, text)


def _expand_mapping(value: dict[Any, Any], source: Mapping[str, str], depth: int, left: list[int],
                    path: str) -> dict[Any, Any]:
    """A mapping with its keys and values expanded; a key stays text (a key is a name, never a number)."""
    out: dict[Any, Any] = {}
    written: dict[Any, tuple[Any, int]] = {}  # expanded key -> the key as the file has it, its rank
    ranks = value.ranks if isinstance(value, _Merged) else {}
    for key, item in value.items():
        new_key = _substitute(key, source)[0] if isinstance(key, str) else key
        rank = ranks.get(key, 0)
        if new_key in written:
            earlier, earlier_rank = written[new_key]
            if earlier_rank == rank:
                # Kept silently, the later value replaced the earlier one: production's parse refuses the duplicate.
                raise ConfigError(f"keys {earlier!r} and {key!r} are both {new_key!r} once expanded", path)
            if earlier_rank < rank:
                continue  # the merge's order, as for keys equal as written: a key written in the mapping wins
        written[new_key] = (key, rank)
        out[new_key] = _expand(item, source, depth + 1, left, join_path(path, str(new_key)))
    return out


_MERGE_TAG = "tag:yaml.org,2002:merge"
# Plain scalars YAML 1.1 reads as a flag or a date where YAML 1.2 (production's) reads the text: tags of our own
# so that a field can still read them as written (see :meth:`_Loader.resolve`).
_FLAG_TAG = "tag:iii-engine,2026:yaml11-flag"
_TEXT_TAG = "tag:iii-engine,2026:yaml11-text"
# One instance per word (a flag costs no more than the bool it was)
_FLAG_WORDS = {word: YamlFlag(word) for stem in ("yes", "no", "on", "off")
               for word in (stem, stem.capitalize(), stem.upper())}
# A key, its value, and its rank: 0 for a key the mapping writes itself, i for one the i-th mapping its merges
# (``<<:``) reach gives, counted in the order YAML's merge reads them (each mapping's own keys, then the mappings it
# merges, in order, depth first). The lowest rank wins, as YAML's merge says.
_Pair = tuple[yaml.Node, yaml.Node, int]


class _Merged(dict[Any, Any]):
    """A mapping that merges others (``<<:``); ``ranks`` holds the rank of each key a merged mapping gave (a key
    not in it the mapping writes itself), so that keys equal only once expanded still follow the merge's order."""

    ranks: dict[Any, int]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader whose plain numbers keep the text they were written as (see :func:`_number`), as do
    its plain ``on`` / ``yes`` / ``off`` / ``no`` and dates (see :meth:`resolve`), which refuses a key written
    twice in one mapping (production's serde_yaml does: "duplicate entry with key"; PyYAML kept the last value)
    and which records where merged keys come from (see :class:`_Merged`)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # Keys and values read, merged ones included, and every pair a merge looked at (the bound on what a file
        # costs: merges repeat mappings as aliases do)
        self._values = 0
        # Where a key that is an alias is written, by (id of its mapping node, index of the pair): the alias's
        # node is the anchored one, whose mark is the anchor's.
        self._alias_keys: dict[tuple[int, int], Any] = {}  # a yaml.Mark

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """PyYAML's node, noting where a mapping key that is an alias is written (see :meth:`_twice`)."""
        if index is None and isinstance(parent, yaml.MappingNode) and self.check_event(yaml.AliasEvent):
            event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
            if event.start_mark is not None:
                self._alias_keys[(id(parent), len(parent.value))] = event.start_mark
        node: yaml.Node | None = super().compose_node(parent, index)
        return node

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        """YAML 1.1's tag for a scalar, except for a plain one YAML 1.2 reads as text: ``on``, ``yes``, ``off``,
        ``no`` (a :class:`~iii_engine.settings.YamlFlag`) and a date or time (``2001-12-14``, kept as text). One
        written with a tag (``!!bool on``, ``!!timestamp 2001-12-14``) is read as the tag says."""
        tag: str = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]  # untyped in the stubs
        if kind is yaml.ScalarNode and implicit[0]:  # plain, no tag
            if tag == "tag:yaml.org,2002:bool" and value in _FLAG_WORDS:
                return _FLAG_TAG
            if tag == "tag:yaml.org,2002:timestamp":
                return _TEXT_TAG
        return tag

    def construct_yaml_map(self, node: yaml.MappingNode) -> Any:
        data: dict[Any, Any] = _Merged() if any(key.tag == _MERGE_TAG for key, _ in node.value) else {}
        yield data  # before the values: a value may be an alias of this very mapping
        ranks: dict[Any, int] = {}
        for key_node, value_node, rank in self._pairs(node):
            key = self.construct_object(key_node)
            data[key] = self.construct_object(value_node)
            if rank:
                ranks[key] = rank
        if isinstance(data, _Merged):
            data.ranks = ranks

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # PyYAML's merge rewrote the node in place (a node merged twice then read its merged keys as its own) and
        # let a later merged mapping win over an earlier one; this one follows the order of the merge.
        if not isinstance(node, yaml.MappingNode):
            return super().construct_mapping(node, deep=deep)  # PyYAML's error for a node that is not a mapping
        mapping: dict[Any, Any] = {}
        for key_node, value_node, _ in self._pairs(node):
            key = self.construct_object(key_node, deep=deep)
            if key not in mapping:
                mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def _pairs(self, node: yaml.MappingNode) -> list[_Pair]:
        """The pairs ``node`` holds, merged ones included, lowest rank first, one per key.

        Each mapping its merges reach is read once, in YAML's merge order (its own keys, then the mappings it
        merges, depth first); a mapping reached again gives nothing: every key it has came before. So the work is
        linear in the pairs the merges reach, and each of them counts against :data:`MAX_CONFIG_VALUES`.
        """
        own, sources = self._own(node)
        pairs: list[_Pair] = [(key_node, value_node, 0) for key_node, value_node, _ in own]
        if not sources:
            return pairs
        seen = {key for _, _, key in own}
        reached = {id(node)}
        # The mappings whose merges are being read, innermost last (a set as well: a chain may be long), for a
        # merge that reaches the mapping it is in
        path, on_path = [id(node)], {id(node)}
        stack = [iter(sources)]
        while stack:
            source = next(stack[-1], None)
            if source is None:
                stack.pop()
                on_path.discard(path.pop())
                continue
            if id(source) in on_path:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "found a merge (<<) that reaches the mapping it is in", source.start_mark)
            if id(source) in reached:
                continue
            reached.add(id(source))
            source_own, source_sources = self._own(source)
            rank = len(reached) - 1
            for key_node, value_node, key in source_own:
                if key not in seen:
                    seen.add(key)
                    pairs.append((key_node, value_node, rank))
            stack.append(iter(source_sources))
            path.append(id(source))
            on_path.add(id(source))
        return pairs

    def _own(self, node: yaml.MappingNode) -> tuple[list[tuple[yaml.Node, yaml.Node, Any]], list[yaml.MappingNode]]:
        """The pairs ``node`` writes itself, with their keys, and the mappings it merges, in order; counted
        against :data:`MAX_CONFIG_VALUES`. A key written twice (``<<`` included) is refused."""
        self._count(len(node.value))
        own: list[tuple[yaml.Node, yaml.Node, Any]] = []
        merged: list[yaml.MappingNode] = []
        first: dict[Any, int] = {}  # key -> index of its pair in node.value
        merge_at: int | None = None
        for index, (key_node, value_node) in enumerate(node.value):
            if key_node.tag == _MERGE_TAG:
                if merge_at is not None:  # the second merge was dropped; serde_yaml refuses it
                    self._twice(node, key_node, merge_at, index)
                merge_at = index
                merged.extend(self._merged(node, value_node))
                continue
            if key_node.tag == "tag:yaml.org,2002:value":
                key_node.tag = "tag:yaml.org,2002:str"  # as PyYAML reads a "=" key
            key = self.construct_object(key_node)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        "found unhashable key", key_node.start_mark)
            if key in first:
                self._twice(node, key_node, first[key], index)
            first[key] = index
            own.append((key_node, value_node, key))
        self._count(len(merged))
        return own, merged

    def _count(self, n: int) -> None:
        """Count ``n`` more values read; past :data:`MAX_CONFIG_VALUES` the file is refused."""
        self._values += n
        if self._values > MAX_CONFIG_VALUES:
            raise ConfigError(f"the configuration has more than {MAX_CONFIG_VALUES} values (counting every value a "
                              f"YAML alias or merge repeats)")

    def _twice(self, node: yaml.MappingNode, key_node: yaml.Node, earlier: int, later: int) -> None:
        """Refuse a key ``node`` writes twice (pairs ``earlier`` and ``later``), naming where it is written: an
        alias key's node is the anchored one, so its own place comes from :meth:`compose_node`."""
        was, now = (self._alias_keys.get((id(node), index), node.value[index][0].start_mark)
                    for index in (earlier, later))
        where = f"line {was.line + 1}, columns {was.column + 1} and {now.column + 1}" \
            if was.line == now.line else f"lines {was.line + 1} and {now.line + 1}"
        raise yaml.constructor.ConstructorError(
            None, None, f"key {_shown_key(key_node)} is given twice in one mapping ({where}); keep one", now)

    @staticmethod
    def _merged(node: yaml.MappingNode, value_node: yaml.Node) -> list[yaml.MappingNode]:
        """The mappings a ``<<:`` names (one, or a list of them), in the order they rank."""
        if isinstance(value_node, yaml.MappingNode):
            return [value_node]
        if not isinstance(value_node, yaml.SequenceNode):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                "expected a mapping or list of mappings for merging, but found a scalar",
                value_node.start_mark)
        for item in value_node.value:
            if not isinstance(item, yaml.MappingNode):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "expected a mapping for merging, but found "
                    f"{'a list' if isinstance(item, yaml.SequenceNode) else 'a scalar'}", item.start_mark)
        return list(value_node.value)


def _shown_key(key_node: yaml.Node) -> str:
    """A key as the file writes it, cut short (a key may be long)."""
    text = key_node.value if isinstance(key_node, yaml.ScalarNode) else f"<{type(key_node).__name__}>"
    return repr(text) if len(text) <= 80 else f"{text[:80]!r}…"


def _number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> YamlInt | YamlFloat:
    """A YAML 1.1 number with its source text: an integer or float field reads the number as before, a string
    field the text as written.

    Why: ``service_version: 1.10`` became the float 1.1 and so the string "1.1", ``010`` became 8 and ``1:20`` 80.

    Example (a :class:`YamlInt` or :class:`YamlFloat` is the number, and ``text`` is what the file wrote):
        >>> loaded = yaml.load("version: 1.10\\nport: 010\\nrate: 0.5", Loader=_Loader)
        >>> type(loaded["version"]).__name__, loaded["version"], loaded["version"].text
        ('YamlFloat', 1.1, '1.10')
        >>> type(loaded["port"]).__name__, loaded["port"] + 1, loaded["port"].text, loaded["rate"].text
        ('YamlInt', 9, '010', '0.5')
    """
    number: YamlInt | YamlFloat
    if node.tag.endswith(":int"):
        number = YamlInt(loader.construct_yaml_int(node))
    else:
        number = YamlFloat(loader.construct_yaml_float(node))
    number.text = node.value
    return number


_Loader.add_constructor("tag:yaml.org,2002:int", _number)
_Loader.add_constructor("tag:yaml.org,2002:float", _number)
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)
_Loader.add_constructor(_FLAG_TAG, lambda _, node: _FLAG_WORDS[node.value])
_Loader.add_constructor(_TEXT_TAG, lambda _, node: str(node.value))


def config_from_mapping(raw: Mapping[str, Any]) -> EngineConfig:
    """Build an :class:`EngineConfig` from an already expanded mapping.

    Example:
        >>> config_from_mapping({"port": 1, "invocation_timeout_ms": 500}).invocation_timeout_ms
        500
    """
    return EngineConfig.parse(raw)


def parse_config(text: str, env: Mapping[str, str] | None = None, *, source: str = "the configuration") -> EngineConfig:
    """Parse YAML text (an empty document is the default configuration); ``source`` names it in errors.

    Example:
        >>> parse_config("port: [1\\n", env={})
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: invalid YAML in the configuration, line 2, column 1: expected ',' or ']', \
but got '<stream end>' (while parsing a flow sequence, line 1, column 7)
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the configuration is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        raw = yaml.load(text, Loader=_Loader)  # a SafeLoader (see _Loader for how it differs)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(exc, source)) from None
    except RecursionError:  # the YAML parser recurses once per level of nesting
        raise ConfigError(f"the configuration is nested deeper than {MAX_CONFIG_DEPTH} levels") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"the configuration must be a mapping, got {type(raw).__name__}")
    return config_from_mapping(expand_env(raw, env))


def _yaml_error(exc: yaml.YAMLError, source: str) -> str:
    """One line naming the file and the place (PyYAML's own text names a "<unicode string>" over several lines)."""
    def where(mark: Any) -> str:
        return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        context = f" ({exc.context}{where(exc.context_mark)})" if exc.context else ""
        return f"invalid YAML in {source}{where(exc.problem_mark)}: {exc.problem}{context}"
    return f"invalid YAML in {source}: {' '.join(str(exc).split())}"


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> EngineConfig:
    """Read and parse a configuration file.

    Example:
        >>> load_config("/nonexistent.yaml")
        Traceback (most recent call last):
        ...
        iii_engine.settings.ConfigError: cannot read configuration file /nonexistent.yaml: No such file or directory
    """
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)  # never more: the file may be huge, or endless (a pipe)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"configuration file {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    return parse_config(text, env, source=f"configuration file {path}")
