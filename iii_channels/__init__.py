"""The channel layer: byte streams, files, pipes and progress on top of :mod:`iii.channels`.

Examples and tests get the set-up below (an engine in this process, a client, a channel) in one line from
:func:`iii_engine.testing.local_channel`.

Example:
    >>> import asyncio
    >>> import iii_channels
    >>> from iii import III
    >>> from iii_engine import Engine, EngineConfig
    >>> async def main(iii) -> bytes:
    ...     ch = await iii.create_channel_async()
    ...     async with iii_channels.sink(ch.writer) as out:   # close = EOF + trailer; exception = abort
    ...         await out.write(b"hello\\n")
    ...     return await iii_channels.source(ch.reader, require_trailer=True).read_all()
    >>> async def demo() -> bytes:  # on exit the client shuts down (its thread joined), then the engine stops
    ...     async with Engine(port=0, config=EngineConfig(modules=[])) as engine, III(engine.url) as iii:
    ...         await iii.connect_async()
    ...         return await main(iii)
    >>> asyncio.run(demo())
    b'hello\\n'
"""

from __future__ import annotations

from iii._version import __version__ as __version__

from .errors import (
    ChannelAbortedError,
    ChannelClosedError,
    ChannelConnectionError,
    ChannelError,
    ChannelExpiredError,
    ChannelIdleError,
    ChannelInUseError,
    ChannelLoopError,
    ChannelNotFoundError,
    IncompleteReadError,
    IntegrityError,
    LimitExceededError,
    ProcessError,
    ReaderGoneError,
)
from .files import FileReceipt, receive_file, send_file
from .integrity import Digest
from .pipes import copy, from_fd, from_iterable, from_process, from_stream, to_fd, to_process, to_stream
from .progress import ProgressBar, ProgressCallback
from .sink import ChannelSink, sink
from .source import ChannelSource, source
from .trees import TreeReceipt, receive_dir, send_dir, send_files

__all__ = [
    "ChannelAbortedError",
    "ChannelClosedError",
    "ChannelConnectionError",
    "ChannelError",
    "ChannelExpiredError",
    "ChannelIdleError",
    "ChannelInUseError",
    "ChannelLoopError",
    "ChannelNotFoundError",
    "ChannelSink",
    "ChannelSource",
    "Digest",
    "FileReceipt",
    "IncompleteReadError",
    "IntegrityError",
    "LimitExceededError",
    "ProcessError",
    "ProgressBar",
    "ProgressCallback",
    "ReaderGoneError",
    "TreeReceipt",
    "copy",
    "from_fd",
    "from_iterable",
    "from_process",
    "from_stream",
    "receive_dir",
    "receive_file",
    "send_dir",
    "send_file",
    "send_files",
    "sink",
    "source",
    "to_fd",
    "to_process",
    "to_stream",
]
