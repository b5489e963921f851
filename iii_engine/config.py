"""Engine configuration: the production engine's YAML format plus a few keys of our own.

Production keys: top-level ``port`` and a ``modules:`` list of ``{class, config}`` entries naming production
module classes (an entry may also set our ``start_timeout_ms``: how long the engine waits for that module's start,
see :class:`~iii_engine.modules.base.ModuleSpec`). Strings may contain ``${VAR}`` or ``${VAR:default}``, expanded
from the environment.
Our keys (all optional): ``host``, ``invocation_timeout_ms`` (docs/protocol.md#engine-improvements E7),
``max_message_size`` (control
socket, default 4 MiB), ``max_outbox_bytes`` (unread bytes per worker, default 16 MiB), ``max_workers``
(connected workers, default 10,000), ``max_registrations_per_worker`` (functions, trigger types and triggers one
worker holds, default 100,000), ``max_services`` (services kept, default 100,000), ``max_fired_calls``
(trigger-fired calls in flight engine-wide, default 10,000), ``fire_wait_timeout_ms`` (how long a producer
that is itself a call waits for room among them, default 10,000), ``max_calls_per_worker`` (calls one worker has
in flight through the engine, default 10,000),
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import field_validator

from .channels import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_OPEN_CHANNELS,
    DEFAULT_MAX_OPEN_PER_WORKER,
    DEFAULT_MAX_QUEUED_BYTES,
)
from .event_loop import DEFAULT_EVENT_LOOP, EventLoopName
from .modules.base import ModuleSpec
from .settings import MAX_TIMEOUT_MS, ConfigError, Field, Settings, UnknownKeys

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
DEFAULT_MAX_FIRED_CALLS = 10_000
DEFAULT_FIRE_WAIT_TIMEOUT_MS = 10_000
DEFAULT_MAX_CALLS_PER_WORKER = 10_000
DEFAULT_ATTACH_TIMEOUT_MS = 300_000
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
    ``max_open_per_worker`` (channels one worker created and keeps open, default 20,000).

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
            raise ConfigError(f"must be a number > 0, got {seconds!r}", "attach_timeout_s")
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
    max_registrations_per_worker: int = Field(DEFAULT_MAX_REGISTRATIONS_PER_WORKER, ge=1)
    max_services: int = Field(DEFAULT_MAX_SERVICES, ge=1)
    #: trigger-fired calls in flight engine-wide, and how long a producer that can wait does (see
    #: :class:`iii_engine.limits.FiredCalls`)
    max_fired_calls: int = Field(DEFAULT_MAX_FIRED_CALLS, ge=1)
    fire_wait_timeout_ms: int = Field(DEFAULT_FIRE_WAIT_TIMEOUT_MS, ge=1, le=MAX_TIMEOUT_MS)
    #: calls one worker has started through the engine and that are not over (see
    #: :class:`iii_engine.limits.WorkerCalls`)
    max_calls_per_worker: int = Field(DEFAULT_MAX_CALLS_PER_WORKER, ge=1)
    functions_available_debounce_ms: int = Field(150, ge=0)
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
    """Expand ``${VAR}`` / ``${VAR:default}`` in every string of ``value``.

    A string that is exactly one placeholder whose expansion looks like a YAML scalar (``3112``, ``true``) is
    re-read as YAML, so ``port: ${STREAMS_PORT:3112}`` gives an integer.

    Example:
        >>> expand_env({"p": "${X:3112}", "u": "redis://${H:localhost}/0"}, env={"H": "db"})
        {'p': 3112, 'u': 'redis://db/0'}
    """
    return _expand(value, os.environ if env is None else env, 0, [MAX_CONFIG_VALUES])


def _expand(value: Any, source: Mapping[str, str], depth: int, left: list[int]) -> Any:
    """:func:`expand_env` within :data:`MAX_CONFIG_DEPTH` levels and :data:`MAX_CONFIG_VALUES` values in all
    (``left`` counts down the values still allowed)."""
    left[0] -= 1
    if left[0] < 0:
        raise ConfigError(f"the configuration has more than {MAX_CONFIG_VALUES} values (counting every value a "
                          f"YAML alias repeats)")
    if depth > MAX_CONFIG_DEPTH:
        raise ConfigError(f"the configuration is nested deeper than {MAX_CONFIG_DEPTH} levels (or a YAML alias "
                          f"refers to itself)")
    if isinstance(value, str):
        whole = _VAR.fullmatch(value)

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in source:
                return source[name]
            if default is None:
                raise ConfigError(f"environment variable {name} is not set and {match.group(0)} has no default")
            return default

        expanded = _VAR.sub(sub, value)
        if whole is not None and expanded != "":
            parsed = yaml.safe_load(expanded)
            if isinstance(parsed, bool | int | float):
                return parsed
        return expanded
    if isinstance(value, list):
        return [_expand(v, source, depth + 1, left) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, source, depth + 1, left) for k, v in value.items()}
    return value


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
        raw = yaml.safe_load(text)
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
