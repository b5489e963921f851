"""The one module that reads asyncio's private internals: the ``SubprocessTransport`` an
``asyncio.subprocess.Process`` keeps in its private ``_transport`` (it has no public accessor, and no public close).

:mod:`iii_channels.pipes` needs that transport twice: to close our ends of a finished process's pipes (a child it
left behind can hold them open for ever), and to look into its stdout pipe (whether a process still holds the write
end). What it relies on is checked once at import (:data:`MISSING`: a ``Process`` built on a stand-in transport must
keep that very object in ``_transport``); where it is missing, :func:`process_transport` returns ``None`` after one
warning, and the callers take their public fallback: only stdin is closed (the read ends close once the last process
holding them exits), and a process's stdout end is waited for at least ``pipes.STDOUT_EOF_FLOOR_S`` after its exit.

Example:
    >>> import asyncio
    >>> async def demo() -> bool:
    ...     proc = await asyncio.create_subprocess_exec("true")
    ...     await proc.wait()
    ...     return isinstance(process_transport(proc), asyncio.SubprocessTransport)
    >>> asyncio.run(demo()) == (not MISSING)
    True
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Final

from iii.warn_once import WarnOnce

__all__ = ["MISSING", "TRANSPORT_ATTRIBUTE", "process_transport"]

log = logging.getLogger(__name__)

TRANSPORT_ATTRIBUTE: Final = "_transport"
"""Where asyncio's ``Process`` keeps its ``SubprocessTransport`` (private)."""


class _StandInTransport(asyncio.SubprocessTransport):
    """A transport that does nothing: what :func:`_probe` builds a ``Process`` on."""

    def get_pid(self) -> int:
        return 0


def _probe() -> tuple[str, ...]:
    """The asyncio internals :func:`process_transport` reads that this Python lacks: a ``Process`` built on a
    stand-in transport must keep that very object in ``_transport``."""
    transport = _StandInTransport()
    protocol = SimpleNamespace(stdin=None, stdout=None, stderr=None)
    try:
        proc = asyncio.subprocess.Process(transport, protocol, None)  # type: ignore[arg-type]
    except Exception:  # another constructor: nothing can be told of its attributes
        return ("asyncio.subprocess.Process(transport, protocol, loop)",)
    if getattr(proc, TRANSPORT_ATTRIBUTE, None) is not transport:
        return (f"asyncio.subprocess.Process.{TRANSPORT_ATTRIBUTE}",)
    return ()


MISSING: tuple[str, ...] = _probe()
"""What :func:`_probe` found missing (empty: :func:`process_transport` hands out the transport)."""

_warn_once = WarnOnce(log)


def _say_missing() -> None:
    """Say once per process that the internals are missing, and what the callers do instead."""
    _warn_once("missing", "asyncio internal %s not found (another Python): a finished process's pipes are closed "
               "only when the last process holding them exits, and its stdout's end is waited for at least a moment "
               "after its exit", ", ".join(MISSING))


def process_transport(proc: asyncio.subprocess.Process) -> asyncio.SubprocessTransport | None:
    """The ``SubprocessTransport`` behind ``proc``; ``None`` where this Python keeps it elsewhere (:data:`MISSING`,
    said once) or ``proc`` holds something else there (the caller then takes its public fallback).

    Example:
        >>> import asyncio
        >>> async def demo() -> bool:
        ...     proc = await asyncio.create_subprocess_exec("true")
        ...     await proc.wait()
        ...     transport = process_transport(proc)
        ...     return transport is None or transport.get_returncode() == 0
        >>> asyncio.run(demo())
        True
    """
    if MISSING:
        _say_missing()
        return None
    transport = getattr(proc, TRANSPORT_ATTRIBUTE, None)
    return transport if isinstance(transport, asyncio.SubprocessTransport) else None
