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

Engines bridged in a loop (A forwards ``x`` to B, B forwards it back to A) are not refused at the start (neither
sees the other's settings): each forwarded call and ``bridge.invoke`` carries how many bridges it passed, as the
member ``iii-bridge-hops`` of its W3C ``baggage`` (other members travel unchanged), and a call that passed
:data:`MAX_BRIDGE_HOPS` is answered ``bridge_error`` "bridge loop: …" (logged once a minute per function). Before,
one call to such a loop made new calls for ever after its caller had given up (each hop a new call with the
forward's whole timeout), both engines busy and growing about 1 MB a second.

Settings are checked by :class:`~iii_engine.modules.bridge.settings.BridgeClientSettings`.

Example:
    >>> _invoke_input({"function_id": "math::add", "data": {"a": 1}})
    ('math::add', {'a': 1}, 30000)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from iii._cli import mask_passwords

from ...settings import ConfigError
from ..base import BuiltinFunction, EngineError, EngineModule, EngineServices, InvocationContext
from ..health import link_health
from .link import DEFAULT_TIMEOUT_MS, BridgeCallError, BridgeLink
from .settings import MAX_TIMEOUT_MS, BridgeClientSettings, Forwarded, per_connection_refusal

__all__ = ["HOPS_KEY", "MAX_BRIDGE_HOPS", "BridgeClientModule"]

log = logging.getLogger(__name__)

HOPS_KEY: Final = "iii-bridge-hops"
# a chain of bridges this long is a loop; no deployment bridges a call through 16 engines
MAX_BRIDGE_HOPS: Final = 16
_LOOP_LOG_INTERVAL_S: Final = 60.0
_LOOP_LOG_KEYS: Final = 1000  # functions remembered for the log's rate limit (bridge.invoke names any)


def _hops(baggage: str | None) -> int:
    """Bridges a call passed, per its ``baggage`` (0 without the member, or with one not a small number).

    Example:
        >>> _hops("a=1, iii-bridge-hops = 3;p, b=2"), _hops(None), _hops("iii-bridge-hops=x")
        (3, 0, 0)
        >>> _hops("iii-bridge-hops=²")  # a digit to str.isdigit, not to int(): it failed every forwarded call
        0
    """
    count = 0
    for member in (baggage or "").split(","):
        key, _, value = member.partition("=")
        value = value.partition(";")[0].strip()
        if key.strip() == HOPS_KEY and value.isascii() and value.isdigit() and len(value) <= 6:
            count = max(count, int(value))
    return count


def _with_hops(baggage: str | None, hops: int) -> str:
    """``baggage`` with its hop count set to ``hops``, its other members kept as they came.

    Example:
        >>> _with_hops("a=1, iii-bridge-hops=3", 4), _with_hops(None, 1)
        ('a=1,iii-bridge-hops=4', 'iii-bridge-hops=1')
    """
    kept = [member.strip() for member in (baggage or "").split(",")
            if member.strip() and member.partition("=")[0].strip() != HOPS_KEY]
    return ",".join([*kept, f"{HOPS_KEY}={hops}"])


def _invoke_input(data: Any) -> tuple[str, Any, int]:
    """``(function_id, data, timeout_ms)`` of a ``bridge.invoke`` input, else ``deserialization_error``."""

    def bad(detail: str) -> EngineError:
        return EngineError("deserialization_error", f"Failed to parse invoke input: {detail}")

    if not isinstance(data, Mapping):
        raise bad(f"expected an object, got {'null' if data is None else type(data).__name__}")
    function_id = data.get("function_id")
    if not isinstance(function_id, str) or not function_id:
        raise bad("missing or non-string field `function_id`")
    if (refusal := per_connection_refusal(function_id)) is not None:
        raise EngineError("bridge_error", refusal)
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
        self._loop_logged: dict[str, float] = {}  # function id -> when a loop of its calls was last logged

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
        """``bridge_client``: whether the remote engine answers over the link now."""
        return {"bridge_client": await link_health(self.link)}

    async def stop(self) -> None:
        """Close the link."""
        await self.link.close()

    def _exposed_handler(self, local_function: str) -> Any:
        async def handle(data: Any) -> Any:
            return await self.services.invoke(local_function, data)

        return handle

    def _forward_handler(self, forwarded: Forwarded) -> Any:
        async def handle(data: Any, ctx: InvocationContext) -> Any:
            return await self._call(forwarded.local_function, forwarded.remote_function, data, forwarded.timeout_ms,
                                    ctx)

        return handle

    async def _invoke(self, data: Any, ctx: InvocationContext) -> Any:
        function_id, payload, timeout = _invoke_input(data)
        return await self._call(f"bridge.invoke of {function_id:.200}", function_id, payload, timeout, ctx)

    async def _call(self, local: str, remote: str, data: Any, timeout_ms: int, ctx: InvocationContext) -> Any:
        """Call ``remote`` over the link for the call of ``local``, one more bridge counted in its baggage."""
        hops = _hops(ctx.baggage)
        if hops >= MAX_BRIDGE_HOPS:
            text = (f"bridge loop: the call of {local} passed {hops} bridges (at most {MAX_BRIDGE_HOPS}); engines "
                    f"forward it to each other (this one to {remote} on {self.link.shown})")
            self._log_loop(local, text)
            raise EngineError("bridge_error", text)
        try:
            return await self.link.call(remote, data, timeout_ms=timeout_ms,
                                        baggage=_with_hops(ctx.baggage, hops + 1))
        except BridgeCallError as exc:
            raise EngineError("bridge_error", str(exc)) from None

    def _log_loop(self, local: str, text: str) -> None:
        """One warning per function a minute: a loop called in a busy loop must not flood the log."""
        now = time.monotonic()
        if now - self._loop_logged.get(local, float("-inf")) < _LOOP_LOG_INTERVAL_S:
            return
        if len(self._loop_logged) >= _LOOP_LOG_KEYS:
            self._loop_logged.clear()
        self._loop_logged[local] = now
        log.warning("%s (logged once a minute per function)", text)

    async def _invoke_async(self, data: Any, ctx: InvocationContext) -> None:
        function_id, payload, _ = _invoke_input(data)
        try:
            await self.link.fire(function_id, payload)
        except BridgeCallError as exc:
            raise EngineError("bridge_error", str(exc)) from None
