"""What a module tells ``engine::health::check`` about what it depends on: a store, a Redis server, a remote engine.

Each module's :meth:`~iii_engine.modules.base.EngineModule.health` returns components ``{name: {status, details}}``;
a component is ``healthy`` when what it names answered a probe just now (one round trip within
:data:`PROBE_TIMEOUT_S`), ``unhealthy`` with the reason in ``details["error"]`` otherwise. Before, the health check
said ``healthy`` while the state store's Redis was down and every ``state::set`` failed.

Example:
    >>> import asyncio
    >>> async def down() -> None:
    ...     raise ConnectionRefusedError("Connection refused")
    >>> asyncio.run(probe(down(), adapter="redis"))
    {'status': 'unhealthy', 'details': {'adapter': 'redis', 'error': 'Connection refused'}}
    >>> asyncio.run(probe(asyncio.sleep(0), adapter="memory"))
    {'status': 'healthy', 'details': {'adapter': 'memory'}}
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from iii.protocol.worker_session import clip_text
from iii_streams.messages import error_line

if TYPE_CHECKING:
    from .base import EngineModule
    from .bridge.link import BridgeLink

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S: Final = 2.0
"""How long one probe (a ``PING``, a read, a module's whole :meth:`health`) may take before its component is
``unhealthy``: a health check answers within about this long whatever hangs."""

HEALTHY: Final = "healthy"
UNHEALTHY: Final = "unhealthy"

Component = dict[str, Any]
T = TypeVar("T")


def component(error: str | None = None, **details: Any) -> Component:
    """``healthy`` with ``details``, or ``unhealthy`` with ``error`` among them.

    Example:
        >>> component("not connected", url="ws://back:49134")
        {'status': 'unhealthy', 'details': {'url': 'ws://back:49134', 'error': 'not connected'}}
    """
    if error is None:
        return {"status": HEALTHY, "details": details}
    return {"status": UNHEALTHY, "details": {**details, "error": error}}


async def probe(check: Awaitable[Any], **details: Any) -> Component:
    """Await ``check`` within :data:`PROBE_TIMEOUT_S`: ``healthy`` if it returned, ``unhealthy`` naming its error
    (one line, at most 1,000 characters) or the timeout otherwise."""
    try:
        await within(check, PROBE_TIMEOUT_S)
    except TimeoutError:
        return component(f"no answer within {PROBE_TIMEOUT_S:g} s", **details)
    except Exception as exc:
        return component(clip_text(error_line(exc), 1000), **details)
    return component(None, **details)


async def within(check: Awaitable[T], seconds: float) -> T:
    """``check``'s result, or :class:`TimeoutError` after ``seconds`` without waiting for it to end: it is cancelled
    and left to end by itself (a SQLite opening in aiosqlite's thread ends only with its statement: a check that
    awaited the cancel answered after the other process's 15 s lock, not in 2 s).

    Example:
        >>> import asyncio
        >>> asyncio.run(within(asyncio.sleep(0, "done"), 1))
        'done'
    """
    task = asyncio.ensure_future(check)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        task.add_done_callback(_retrieved)
        raise TimeoutError
    return task.result()


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # (read, so that asyncio does not log it as never retrieved)


def link_component(link: BridgeLink) -> Component:
    """A Bridge link's component by its state alone: ``healthy`` while its connection to the remote engine is up
    (see :func:`link_health` for the probe)."""
    if link.connected:
        return component(None, url=link.shown)
    why = f" ({link.silence})" if link.silence else ""
    return component(f"not connected to the remote engine{why}; calls through it fail until it is back",
                     url=link.shown)


async def link_health(link: BridgeLink) -> Component:
    """A Bridge link's component: ``healthy`` when the remote engine answered a ping just now
    (:meth:`~iii_engine.modules.bridge.link.BridgeLink.round_trip`, within :data:`PROBE_TIMEOUT_S`). Before, a
    connected link was ``healthy``: a remote stopped without closing its socket (``SIGSTOP``, a hung host) stayed so
    for 50 s."""
    if not link.connected:
        return link_component(link)
    found = await probe(link.round_trip(), url=link.shown)
    if found["status"] != HEALTHY:
        found["details"]["error"] = (f"the remote engine did not answer a ping: {found['details']['error']} "
                                     "(stopped or hung?)")
    return found


async def modules_health(modules: Iterable[EngineModule]) -> dict[str, Component]:
    """Every module's components, the modules probed at once, each within :data:`PROBE_TIMEOUT_S` (plus a little,
    so that a probe's own timeout is the one reported); a module whose :meth:`health` fails or hangs is one
    ``unhealthy`` component under its name."""
    listed = list(modules)
    results = await asyncio.gather(*(_module_health(module) for module in listed))
    out: dict[str, Component] = {}
    for found in results:
        out.update(found)
    return out


async def _module_health(module: EngineModule) -> dict[str, Component]:
    try:
        return await within(module.health(), PROBE_TIMEOUT_S + 0.5)
    except TimeoutError:
        error = f"its health check did not answer within {PROBE_TIMEOUT_S + 0.5:g} s"
    except Exception as exc:
        log.exception("health check of the %s module failed", module.name)
        error = f"its health check failed: {clip_text(error_line(exc), 1000)}"
    return {module.name: component(error)}
