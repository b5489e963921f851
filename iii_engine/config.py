"""Engine configuration: the production engine's YAML format plus a few keys of our own.

Production keys: top-level ``port`` and a ``modules:`` list of ``{class, config}`` entries naming production
module classes. Strings may contain ``${VAR}`` or ``${VAR:default}``, expanded from the environment.
Our keys (all optional): ``host``, ``invocation_timeout_ms`` (PROTOCOL §9.1 E7), ``max_message_size`` (control
socket, default 4 MiB), ``max_outbox_bytes`` (unread bytes per worker, default 16 MiB),
``functions_available_debounce_ms`` (E8), ``allow_degraded`` (start even when a configured module cannot; see
:class:`EngineConfig`) and ``channels: {production_mode, attach_timeout_s, max_message_size, max_channel_bytes,
max_queued_bytes}`` (see :class:`ChannelSettings`).

Example:
    >>> cfg = parse_config("port: ${PORT:5000}\\nmodules:\\n  - class: modules::queue::QueueModule\\n", env={})
    >>> cfg.port, [m.class_name for m in cfg.modules or []]
    (5000, ['modules::queue::QueueModule'])
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .modules.base import ModuleSpec

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 49134
MAX_PORT = 65535
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
# Control-socket frames are parsed whole on the event loop: 4 MiB bounds what one frame costs every other worker
# (bulk data belongs in channels). The outbound bound is per worker connection (close code 1008 past it).
DEFAULT_CONTROL_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
DEFAULT_MAX_OUTBOX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_QUEUED_BYTES = 16 * 1024 * 1024  # same as iii_engine.channels.DEFAULT_MAX_QUEUED_BYTES

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


class ConfigError(ValueError):
    """The configuration file is unreadable or a key has the wrong shape; the message names the key."""


@dataclass(frozen=True)
class ChannelSettings:
    """Settings handed to the channel relay (``channels:`` in the configuration file).

    ``max_channel_bytes``: total payload bytes a writer may send over one channel; past it the writer is closed
    with 1009 and the reader with 4001 (``None``, the default: unlimited; ``engine::channels::create`` may set a
    per-channel value). ``max_queued_bytes``: payload bytes one channel may hold waiting for its reader before the
    relay stops reading the writer (default 16 MiB).

    Example:
        >>> ChannelSettings(max_channel_bytes=1 << 30).max_channel_bytes
        1073741824
    """

    production_mode: bool = False
    attach_timeout_s: float = 300.0
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_channel_bytes: int | None = None
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine is configured with.

    ``modules`` is ``None`` for "the default module set" (as production does without a ``modules:`` list) and
    a list (possibly empty) for exactly those modules. The worker module is always loaded.

    A configured module that cannot start (bad settings, store unreachable, port taken, not implemented by this
    engine) stops the start-up with :class:`~iii_engine.modules.base.ModuleStartError`; ``allow_degraded=True``
    starts without it instead (logged as a warning, listed in ``Engine.unavailable_modules``).

    Example:
        >>> EngineConfig(port=0, modules=[]).with_overrides(host="0.0.0.0").host
        '0.0.0.0'
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    modules: list[ModuleSpec] | None = None
    invocation_timeout_ms: int | None = None
    max_message_size: int = DEFAULT_CONTROL_MAX_MESSAGE_SIZE
    max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES
    functions_available_debounce_ms: int = 150
    channels: ChannelSettings = field(default_factory=ChannelSettings)
    allow_degraded: bool = False

    def with_overrides(self, *, host: str | None = None, port: int | None = None,
                       allow_degraded: bool | None = None) -> EngineConfig:
        """A copy with ``host``/``port``/``allow_degraded`` replaced when given (flags win over the file)."""
        return replace(self, host=self.host if host is None else host, port=self.port if port is None else port,
                       allow_degraded=self.allow_degraded if allow_degraded is None else allow_degraded)


def expand_env(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Expand ``${VAR}`` / ``${VAR:default}`` in every string of ``value``.

    A string that is exactly one placeholder whose expansion looks like a YAML scalar (``3112``, ``true``) is
    re-read as YAML, so ``port: ${STREAMS_PORT:3112}`` gives an integer.

    Example:
        >>> expand_env({"p": "${X:3112}", "u": "redis://${H:localhost}/0"}, env={"H": "db"})
        {'p': 3112, 'u': 'redis://db/0'}
    """
    source = os.environ if env is None else env
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
        return [expand_env(v, source) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, source) for k, v in value.items()}
    return value


def _int(raw: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"'{key}' must be an integer, got {value!r}")
    return value


def _positive(raw: Mapping[str, Any], key: str, default: int) -> int:
    value = _int(raw, key, default)
    if value is None or value < 1:
        raise ConfigError(f"'{key}' must be a positive integer, got {value!r}")
    return value


def _modules(raw: Any) -> list[ModuleSpec] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ConfigError(f"'modules' must be a list of {{class, config}} entries, got {type(raw).__name__}")
    specs: list[ModuleSpec] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("class"), str):
            raise ConfigError(f"modules[{index}] must be a mapping with a string 'class', got {entry!r}")
        config = entry.get("config") or {}
        if not isinstance(config, dict):
            raise ConfigError(f"modules[{index}].config must be a mapping, got {type(config).__name__}")
        specs.append(ModuleSpec(class_name=entry["class"], config=config))
    return specs


def _channels(raw: Any) -> ChannelSettings:
    if raw is None:
        return ChannelSettings()
    if not isinstance(raw, dict):
        raise ConfigError(f"'channels' must be a mapping, got {type(raw).__name__}")
    timeout = raw.get("attach_timeout_s", 300.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ConfigError(f"'channels.attach_timeout_s' must be a number, got {timeout!r}")
    size = _int(raw, "max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
    quota = _int(raw, "max_channel_bytes", None)
    if quota is not None and quota < 0:
        raise ConfigError(f"'channels.max_channel_bytes' must be >= 0 (or absent for no limit), got {quota}")
    queued = _int(raw, "max_queued_bytes", DEFAULT_MAX_QUEUED_BYTES)
    if queued is None or queued < 1:
        raise ConfigError(f"'channels.max_queued_bytes' must be a positive integer, got {queued!r}")
    return ChannelSettings(
        production_mode=bool(raw.get("production_mode", False)),
        attach_timeout_s=float(timeout),
        max_message_size=size or DEFAULT_MAX_MESSAGE_SIZE,
        max_channel_bytes=quota,
        max_queued_bytes=queued,
    )


def config_from_mapping(raw: Mapping[str, Any]) -> EngineConfig:
    """Build an :class:`EngineConfig` from an already expanded mapping.

    Example:
        >>> config_from_mapping({"port": 1, "invocation_timeout_ms": 500}).invocation_timeout_ms
        500
    """
    host = raw.get("host", DEFAULT_HOST)
    if not isinstance(host, str):
        raise ConfigError(f"'host' must be a string, got {host!r}")
    port = _int(raw, "port", DEFAULT_PORT) or 0
    if not 0 <= port <= MAX_PORT:
        raise ConfigError(f"'port' must be between 0 and {MAX_PORT}, got {port}")
    degraded = raw.get("allow_degraded", False)
    if not isinstance(degraded, bool):
        raise ConfigError(f"'allow_degraded' must be true or false, got {degraded!r}")
    return EngineConfig(
        host=host,
        port=port,
        allow_degraded=degraded,
        modules=_modules(raw.get("modules")),
        invocation_timeout_ms=_int(raw, "invocation_timeout_ms", None),
        max_message_size=_positive(raw, "max_message_size", DEFAULT_CONTROL_MAX_MESSAGE_SIZE),
        max_outbox_bytes=_positive(raw, "max_outbox_bytes", DEFAULT_MAX_OUTBOX_BYTES),
        functions_available_debounce_ms=_int(raw, "functions_available_debounce_ms", 150) or 0,
        channels=_channels(raw.get("channels")),
    )


def parse_config(text: str, env: Mapping[str, str] | None = None) -> EngineConfig:
    """Parse YAML text (an empty document is the default configuration)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"the configuration must be a mapping, got {type(raw).__name__}")
    return config_from_mapping(expand_env(raw, env))


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> EngineConfig:
    """Read and parse a configuration file.

    Example:
        >>> load_config("/nonexistent.yaml")
        Traceback (most recent call last):
        ...
        iii_engine.config.ConfigError: cannot read configuration file /nonexistent.yaml: No such file or directory
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    return parse_config(text, env)
