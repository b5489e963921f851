"""Pausing and resuming a listening asyncio server's accepts: while paused, new TCP connections wait in the kernel's
listen queue (completed by the kernel, holding no descriptor in this process) until :meth:`AcceptGate.resume`.

asyncio has no public way to do this, so this module is the one place that relies on its internals, and it checks
them first: on CPython's selector event loops (the default on Linux and macOS) a listening socket is read by an
accept handler the loop adds with ``add_reader``, which the public ``remove_reader`` takes away, and
``Server._start_serving`` adds back. Where these are not what it expects (uvloop, the Windows proactor loop, another
Python), :attr:`AcceptGate.available` is ``False``, :meth:`~AcceptGate.pause` does nothing and says so, and the
server accepts as before.

Example:
    >>> import asyncio
    >>> async def demo() -> tuple[bool, bool, bool]:
    ...     server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    ...     async with server:
    ...         gate = AcceptGate(server)
    ...         paused = gate.pause()
    ...         gate.resume()
    ...         return gate.available, paused, gate.paused
    >>> asyncio.run(demo())
    (True, True, False)
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import asyncio.selector_events
from typing import Any

__all__ = ["AcceptGate"]


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _unavailable_reason(server: object) -> str | None:
    """Why pausing ``server`` cannot be done here, or ``None`` when it can."""
    if not isinstance(server, asyncio.base_events.Server):
        return f"the server is a {_name(type(server))}, not asyncio's own"
    loop: Any = server.get_loop()
    if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        return f"the event loop is a {_name(type(loop))}, not a selector event loop"
    internals = (isinstance(getattr(server, "_serving", None), bool), callable(getattr(server, "_start_serving", None)),
                 hasattr(server, "_sockets"))
    if not all(internals):
        return "asyncio.Server lacks the _serving/_start_serving/_sockets this relies on"
    return None


class AcceptGate:
    """Pauses and resumes the accepts of one listening ``asyncio`` server (see the module's docstring)."""

    def __init__(self, server: object) -> None:
        #: why the gate cannot pause ``server`` (``None`` when it can)
        self.unavailable_reason = _unavailable_reason(server)
        self._server: Any = server
        self._paused = False

    @property
    def available(self) -> bool:
        """Whether :meth:`pause` can pause this server."""
        return self.unavailable_reason is None

    @property
    def paused(self) -> bool:
        """Whether accepts are paused (by :meth:`pause`, not resumed since)."""
        return self._paused

    def pause(self) -> bool:
        """Stop accepting; whether accepts are paused now (``False`` where the gate is unavailable or the server is
        not serving). Connections already accepted are not touched. Call it again whenever a connection comes in
        while paused: asyncio itself adds the accept handler back a second after an accept failed for want of
        descriptors (EMFILE), paused or not, and a call takes it away again."""
        if not self.available or not self._server.is_serving():
            return self._paused
        loop = self._server.get_loop()
        removed = [loop.remove_reader(sock.fileno()) for sock in self._server.sockets]
        self._paused = self._paused or any(removed)
        return self._paused

    def resume(self) -> None:
        """Accept again (nothing to do unless paused; nothing once the server is closed)."""
        if not self._paused:
            return
        self._paused = False
        server: Any = self._server
        if server._sockets is None:  # closed meanwhile: close() already took its sockets away
            return
        # _start_serving adds the accept handler back to each socket (and listens again with the same backlog); it
        # does nothing while _serving is set, which it stayed while paused
        server._serving = False
        server._start_serving()
