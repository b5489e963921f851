"""Settings of the bridge client module and of the ``Bridge`` adapters (queue, state, stream).

Example:
    >>> BridgeClientSettings.from_config({"url": "ws://back:1", "forward": [{"local_function": "a"}]}, env={})
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: forward[0].remote_function: is required
    >>> BridgeClientSettings.from_config({}, env={"III_URL": "ws://back:2"}).url
    'ws://back:2'
    >>> BridgeClientSettings.from_config({}, env={"III_URL": "garbage"})
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: url: engine URL 'garbage' has no scheme; expected ws:// or wss:// (from \
$III_URL: the module's config names no url)
    >>> BridgeAdapterSettings.parse({"bridge_url": "http://x"}).bridge_url
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: bridge_url: engine URL 'http://x' has scheme 'http'; expected ws:// or wss://
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Self

from pydantic import model_validator

from iii.connection import check_url

from ...settings import ConfigError, EngineUrl, Field, NonEmpty, Settings, UnknownKeys
from .link import DEFAULT_TIMEOUT_MS

__all__ = ["DEFAULT_BRIDGE_URL", "MAX_TIMEOUT_MS", "BridgeAdapterSettings", "BridgeClientSettings", "Exposed",
           "Forwarded", "per_connection_refusal"]

DEFAULT_BRIDGE_URL: Final = "ws://localhost:49134"
DEFAULT_CLIENT_URL: Final = "ws://0.0.0.0:49134"
MAX_TIMEOUT_MS: Final = 24 * 3600 * 1000
# the functions the bridge client module registers itself: a forward of the same id replaced them silently
OWN_FUNCTIONS: Final = ("bridge.invoke", "bridge.invoke_async")
# remote functions that act on the calling connection itself, which over a link is the link every worker of this
# engine shares: forwarding them let any one worker rename the link on the other engine (engine::workers::register
# records the metadata of the connection that called it)
PER_CONNECTION_FUNCTIONS: Final = ("engine::workers::register",)


def per_connection_refusal(function_id: str) -> str | None:
    """Why ``function_id`` may not be called over a link (:data:`PER_CONNECTION_FUNCTIONS`), else ``None``.

    Example:
        >>> per_connection_refusal("engine::workers::register")[:60]  # doctest: +ELLIPSIS
        'engine::workers::register records the metadata of the callin'
        >>> per_connection_refusal("orders::get") is None
        True
    """
    if function_id in PER_CONNECTION_FUNCTIONS:
        return (f"{function_id} records the metadata of the calling connection, which over a bridge is the link "
                f"every worker of this engine shares: it is not called over a bridge")
    return None


class BridgeAdapterSettings(Settings):
    """``adapter.config`` of a ``…::adapters::Bridge`` class: the remote engine."""

    bridge_url: EngineUrl = DEFAULT_BRIDGE_URL


class Exposed(Settings):
    """A local function offered to the remote under ``remote_function`` (default: the same id)."""

    local_function: NonEmpty
    remote_function: NonEmpty

    @classmethod
    def _rename(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        if data.get("remote_function") is None and "local_function" in data:
            return {**data, "remote_function": data["local_function"]}
        return data


class Forwarded(Settings):
    """A local function id whose calls run ``remote_function`` on the remote."""

    local_function: NonEmpty
    remote_function: NonEmpty
    timeout_ms: int = Field(DEFAULT_TIMEOUT_MS, ge=1, le=MAX_TIMEOUT_MS)


class BridgeClientSettings(Settings):
    """``modules::bridge_client::BridgeClientModule`` settings (unknown keys are logged and ignored)."""

    unknown_keys: ClassVar[UnknownKeys] = "warn"
    label: ClassVar[str] = "bridge_client settings"

    url: EngineUrl = DEFAULT_CLIENT_URL
    service_id: NonEmpty | None = None
    service_name: NonEmpty | None = None
    expose: tuple[Exposed, ...] = Field((), strict=False)
    forward: tuple[Forwarded, ...] = Field((), strict=False)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None, env: Mapping[str, str] | None = None) -> BridgeClientSettings:
        """Validate ``raw``; without a ``url`` the remote is ``$III_URL`` (``env`` defaults to ``os.environ``).

        Raises:
            ConfigError: naming the key at fault; also for a forward that would replace another forward or the
                module's own ``bridge.invoke`` / ``bridge.invoke_async``, and for two functions exposed under one
                remote id (the later one replaced the earlier without a word).
        """
        env = os.environ if env is None else env
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"must be a mapping, got {raw!r:.100}", cls.label)
        raw = dict(raw or {})
        from_env = raw.get("url") is None and bool(env.get("III_URL"))
        if raw.get("url") is None:
            raw["url"] = env.get("III_URL") or DEFAULT_CLIENT_URL
        if from_env:
            try:
                check_url(raw["url"])
            except ValueError as exc:  # said as the file's url, which the file does not have
                raise ConfigError(f"{exc} (from $III_URL: the module's config names no url)", "url") from None
        if raw.get("service_name") is None and raw.get("service_id") is not None:
            raw["service_name"] = raw["service_id"]
        for key in ("expose", "forward"):
            if raw.get(key) is None:
                raw.pop(key, None)
        return cls.parse(raw)

    @model_validator(mode="after")
    def _one_function_per_id(self) -> Self:
        forwarded: dict[str, int] = {}
        for index, forward in enumerate(self.forward):
            if (refusal := per_connection_refusal(forward.remote_function)) is not None:
                raise ConfigError(refusal, f"forward[{index}].remote_function")
            where = f"forward[{index}].local_function"
            if forward.local_function in OWN_FUNCTIONS:
                raise ConfigError(f"{forward.local_function!r} is a function of the bridge client module itself", where)
            if forward.local_function in forwarded:
                raise ConfigError(f"{forward.local_function!r:.200} is forwarded already by "
                                  f"forward[{forwarded[forward.local_function]}]", where)
            forwarded[forward.local_function] = index
        exposed: dict[str, int] = {}
        for index, expose in enumerate(self.expose):
            if expose.remote_function in exposed:
                raise ConfigError(f"{expose.remote_function!r:.200} is exposed already by "
                                  f"expose[{exposed[expose.remote_function]}]", f"expose[{index}].remote_function")
            exposed[expose.remote_function] = index
        return self
