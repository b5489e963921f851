"""Bridge client module (``modules::bridge_client::BridgeClientModule``): this engine as a worker of another one.

Settings:

- ``url``: the remote engine (default: environment ``III_URL``, else ``ws://0.0.0.0:49134``);
- ``service_id`` / ``service_name`` (default = ``service_id``): a service announced on the remote;
- ``expose``: ``[{local_function, remote_function?}]``, local functions offered to the remote under
  ``remote_function`` (default: the same id);
- ``forward``: ``[{local_function, remote_function, timeout_ms?}]``, local ids whose calls run ``remote_function``
  on the remote with the input unchanged (timeout default 30 000 ms).

Functions: ``bridge.invoke {function_id, data?, timeout_ms?}`` (the remote result itself) and
``bridge.invoke_async {function_id, data?}`` (fire and forget, ``null`` once sent: at most once, never kept for a
later connection; ``bridge_error`` "not sent" when the link dropped before it went). Failures of the link answer
``bridge_error`` with the reason (it names the remote URL when unreachable); a malformed input answers
``deserialization_error`` ``Failed to parse invoke input: …``. A malformed setting stops the engine start.

The link reconnects every 2 s forever and never delays the engine start (see
:mod:`iii_engine.modules.bridge.link`).

Settings are checked by :class:`~iii_engine.modules.bridge.settings.BridgeClientSettings`.

Example:
    >>> _invoke_input({"function_id": "math::add", "data": {"a": 1}})
    ('math::add', {'a': 1}, 30000)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from iii._cli import mask_passwords

from ...settings import ConfigError
from ..base import BuiltinFunction, EngineError, EngineModule, EngineServices, InvocationContext
from ..health import link_component
from .link import DEFAULT_TIMEOUT_MS, BridgeCallError, BridgeLink
from .settings import MAX_TIMEOUT_MS, BridgeClientSettings, Forwarded

__all__ = ["BridgeClientModule"]


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
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_TIMEOUT_MS:
        raise bad(f"`timeout_ms` must be an integer 1-{MAX_TIMEOUT_MS}, got {timeout!r}")
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
        self.settings = BridgeClientSettings.from_config(self.config)
        self.link = BridgeLink(self.settings.url, role="Bridge Client")

    async def start(self) -> None:
        """Register the functions here and the exposed ones on the remote; start connecting (never waits).

        A forward of a function id this engine already has (another module's) stops the start with a
        :class:`ConfigError` naming it: registering it again replaced that function without a word."""
        for index, forwarded in enumerate(self.settings.forward):
            if self.services.has_function(forwarded.local_function):
                raise ConfigError(f"{forwarded.local_function!r:.200} is a function of this engine already",
                                  f"forward[{index}].local_function")
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
                f"Forwarded to {forwarded.remote_function} on {mask_passwords(self.settings.url)}"))

    async def health(self) -> dict[str, dict[str, Any]]:
        """``bridge_client``: whether the link to the remote engine is up."""
        return {"bridge_client": link_component(self.link)}

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
