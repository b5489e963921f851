"""Bridge client module (``modules::bridge_client::BridgeClientModule``): this engine as a worker of another one.

Settings:

- ``url``: the remote engine (default: environment ``III_URL``, else ``ws://0.0.0.0:49134``);
- ``service_id`` / ``service_name`` (default = ``service_id``): a service announced on the remote;
- ``expose``: ``[{local_function, remote_function?}]``, local functions offered to the remote under
  ``remote_function`` (default: the same id);
- ``forward``: ``[{local_function, remote_function, timeout_ms?}]``, local ids whose calls run ``remote_function``
  on the remote with the input unchanged (timeout default 30 000 ms).

Functions: ``bridge.invoke {function_id, data?, timeout_ms?}`` (the remote result itself) and
``bridge.invoke_async {function_id, data?}`` (fire and forget, ``null`` at once). Failures of the link answer
``bridge_error`` with the reason (it names the remote URL when unreachable); a malformed input answers
``deserialization_error`` ``Failed to parse invoke input: …``. A malformed setting stops the engine start.

The link reconnects every 2 s forever and never delays the engine start (see
:mod:`iii_engine.modules.bridge_link`).

Example:
    >>> BridgeSettings.parse({"url": "ws://back:1", "forward": [{"local_function": "a"}]}, env={})
    Traceback (most recent call last):
    ...
    ValueError: bridge_client settings: forward[0] needs a non-empty string 'remote_function'
    >>> BridgeSettings.parse({}, env={"III_URL": "ws://back:2"}).url
    'ws://back:2'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from iii.connection import check_url

from .base import BuiltinFunction, EngineError, EngineModule, EngineServices, InvocationContext
from .bridge_link import DEFAULT_TIMEOUT_MS, BridgeCallError, BridgeLink

__all__ = ["BridgeClientModule", "BridgeSettings", "Exposed", "Forwarded"]

DEFAULT_URL: Final = "ws://0.0.0.0:49134"
_KEYS: Final = frozenset({"url", "service_id", "service_name", "expose", "forward"})
_MAX_TIMEOUT_MS: Final = 24 * 3600 * 1000


@dataclass(frozen=True)
class Exposed:
    """A local function offered to the remote."""

    local_function: str
    remote_function: str


@dataclass(frozen=True)
class Forwarded:
    """A local function id whose calls run a remote function."""

    local_function: str
    remote_function: str
    timeout_ms: int = DEFAULT_TIMEOUT_MS


def _text(where: str, entry: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"bridge_client settings: {where} needs a non-empty string {key!r}")
    return value


def _timeout(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_TIMEOUT_MS:
        raise ValueError(f"bridge_client settings: {where} 'timeout_ms' must be an integer 1-{_MAX_TIMEOUT_MS}, "
                         f"got {value!r}")
    return value


def _entries(raw: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = raw.get(key) or []
    if not isinstance(value, list) or not all(isinstance(e, Mapping) for e in value):
        raise ValueError(f"bridge_client settings: {key!r} must be a list of mappings, got {value!r:.200}")
    return value


@dataclass(frozen=True)
class BridgeSettings:
    """Parsed module settings."""

    url: str
    service_id: str | None = None
    service_name: str | None = None
    expose: tuple[Exposed, ...] = ()
    forward: tuple[Forwarded, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> BridgeSettings:
        """Validate ``raw``; ``ValueError`` naming the first bad entry."""
        env = os.environ if env is None else env
        url = raw.get("url", env.get("III_URL") or DEFAULT_URL)
        if not isinstance(url, str):
            raise ValueError(f"bridge_client settings: 'url' must be a ws:// URL string, got {url!r}")
        try:
            check_url(url)
        except ValueError as exc:
            raise ValueError(f"bridge_client settings: 'url': {exc}") from None
        service_id = _text("'service_id'", raw, "service_id", required=False)
        service_name = _text("'service_name'", raw, "service_name", required=False)
        expose = []
        for index, entry in enumerate(_entries(raw, "expose")):
            where = f"expose[{index}]"
            local = _text(where, entry, "local_function", required=True)
            remote = _text(where, entry, "remote_function", required=False) or local
            assert local is not None and remote is not None
            expose.append(Exposed(local, remote))
        forward = []
        for index, entry in enumerate(_entries(raw, "forward")):
            where = f"forward[{index}]"
            local = _text(where, entry, "local_function", required=True)
            remote = _text(where, entry, "remote_function", required=True)
            assert local is not None and remote is not None
            timeout = _timeout(where, entry.get("timeout_ms", DEFAULT_TIMEOUT_MS))
            forward.append(Forwarded(local, remote, timeout))
        return cls(url, service_id, service_name or service_id, tuple(expose), tuple(forward))


def _invoke_input(data: Any) -> tuple[str, Any, int]:
    """``(function_id, data, timeout_ms)`` of a ``bridge.invoke`` input, else ``deserialization_error``."""

    def bad(detail: str) -> EngineError:
        return EngineError("deserialization_error", f"Failed to parse invoke input: {detail}")

    if not isinstance(data, Mapping):
        raise bad(f"expected an object, got {'null' if data is None else type(data).__name__}")
    function_id = data.get("function_id")
    if not isinstance(function_id, str) or not function_id:
        raise bad("missing or non-string field `function_id`")
    timeout = data.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if timeout is None:
        timeout = DEFAULT_TIMEOUT_MS
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= _MAX_TIMEOUT_MS:
        raise bad(f"`timeout_ms` must be an integer 1-{_MAX_TIMEOUT_MS}, got {timeout!r}")
    return function_id, data.get("data"), timeout


class BridgeClientModule(EngineModule):
    """``bridge.invoke``, ``bridge.invoke_async``, forwarded and exposed functions over one link.

    Example:
        >>> BridgeClientModule.class_names
        ('modules::bridge_client::BridgeClientModule',)
    """

    name: ClassVar[str] = "bridge_client"
    class_names: ClassVar[tuple[str, ...]] = ("modules::bridge_client::BridgeClientModule",)
    enabled_by_default: ClassVar[bool] = False

    def __init__(self, services: EngineServices, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(services, config)
        self.settings = BridgeSettings.parse(self.config)
        self.link = BridgeLink(self.settings.url, role="Bridge Client")

    async def start(self) -> None:
        """Register the functions here and the exposed ones on the remote; start connecting (never waits)."""
        unknown = sorted(set(self.config) - _KEYS)
        if unknown:
            self.services.log.warning("bridge_client settings: ignoring unknown keys %s", ", ".join(unknown))
        self.link.start()
        if self.settings.service_id is not None:
            self.link.register_service(self.settings.service_id, self.settings.service_name or "")
        for exposed in self.settings.expose:
            self.link.register_function(exposed.remote_function, self._exposed_handler(exposed.local_function))
        self.services.register_function(BuiltinFunction(
            "bridge.invoke", self._invoke, "Invoke a function on the remote engine and return its result"))
        self.services.register_function(BuiltinFunction(
            "bridge.invoke_async", self._invoke_async, "Invoke a function on the remote engine without waiting"))
        for forwarded in self.settings.forward:
            self.services.register_function(BuiltinFunction(
                forwarded.local_function, self._forward_handler(forwarded),
                f"Forwarded to {forwarded.remote_function} on {self.settings.url}"))

    async def stop(self) -> None:
        """Close the link."""
        await self.link.close()

    def _exposed_handler(self, local_function: str) -> Any:
        async def handle(data: Any) -> Any:
            return await self.services.invoke(local_function, data)

        return handle

    def _forward_handler(self, forwarded: Forwarded) -> Any:
        async def handle(data: Any, ctx: InvocationContext) -> Any:
            try:
                return await self.link.call(forwarded.remote_function, data, timeout_ms=forwarded.timeout_ms)
            except BridgeCallError as exc:
                raise EngineError("bridge_error", str(exc)) from None

        return handle

    async def _invoke(self, data: Any, ctx: InvocationContext) -> Any:
        function_id, payload, timeout = _invoke_input(data)
        try:
            return await self.link.call(function_id, payload, timeout_ms=timeout)
        except BridgeCallError as exc:
            raise EngineError("bridge_error", str(exc)) from None

    async def _invoke_async(self, data: Any, ctx: InvocationContext) -> None:
        function_id, payload, _ = _invoke_input(data)
        try:
            await self.link.fire(function_id, payload)
        except BridgeCallError as exc:
            raise EngineError("bridge_error", str(exc)) from None
