"""The first import of ``websockets`` in our packages: its modules we use, in one order, under this module's lock.

``websockets`` (17.x) has an import cycle of its own: ``datastructures`` imports ``exceptions`` at its bottom,
``exceptions`` imports ``frames`` and ``http11`` at its bottom, and ``http11`` imports ``datastructures``. Two threads
entering that graph at different modules (one by ``websockets.asyncio.server`` or ``websockets.exceptions``, which
start at ``exceptions``; the other by ``websockets.asyncio.client``, which starts at ``datastructures``) take those
modules' locks in opposite orders, and CPython breaks the cycle with ``_DeadlockError`` in one of them (seen as
``deadlock detected by _ModuleLock('websockets.datastructures')`` with ``iii_engine:Engine`` and
``iii_channels:source`` imported at once).

So every module of ours that imports from ``websockets`` imports this one first (``import iii.ws_imports``,
checked by ``tests/unit/test_concurrent_first_imports.py``). The first thread to get here holds this module's lock
while it loads ``websockets``; the others wait for that one lock, and find ``websockets`` whole. It imports nothing
of ours, so its lock is the last of ours any thread takes: it closes no cycle of our own. A thread importing
``websockets`` by itself (code of the caller's) still meets the cycle with ours; that one is ``websockets``' to fix.

Example:
    >>> import sys
    >>> import iii.ws_imports
    >>> "websockets.datastructures" in sys.modules and "websockets.asyncio.server" in sys.modules
    True
"""

# ruff: noqa: F401
# (the imports are what this module is for: nothing here uses the names they bind)
from __future__ import annotations

# Every ``websockets`` module our modules import when they load (a package before its modules); the rest of the
# graph (``websockets.client``, ``websockets.server``, ``extensions``, ``speedups``) comes with them.
import websockets
import websockets.asyncio
import websockets.asyncio.client
import websockets.asyncio.connection
import websockets.asyncio.messages
import websockets.asyncio.server
import websockets.datastructures
import websockets.exceptions
import websockets.frames
import websockets.http11
import websockets.protocol
import websockets.typing
import websockets.version
