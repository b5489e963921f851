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

from sys import modules as _modules
from types import ModuleType as _ModuleType

# Each public name is imported on first use (PEP 562): ``iii-channel`` imports this package before it can handle a
# Ctrl-C, and the channel layer's imports take a few hundred milliseconds. Not ``typing.TYPE_CHECKING``: ``typing``
# alone takes milliseconds to import; type checkers read this name as that one.
TYPE_CHECKING = False
if TYPE_CHECKING:
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
        FileChangedError,
        IncompleteReadError,
        IntegrityError,
        LimitExceededError,
        OutputStalledError,
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
    "FileChangedError",
    "FileReceipt",
    "IncompleteReadError",
    "IntegrityError",
    "LimitExceededError",
    "OutputStalledError",
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

_FROM = {"__version__": "iii._version", "ChannelAbortedError": ".errors", "ChannelClosedError": ".errors",
         "ChannelConnectionError": ".errors", "ChannelError": ".errors", "ChannelExpiredError": ".errors",
         "ChannelIdleError": ".errors", "ChannelInUseError": ".errors", "ChannelLoopError": ".errors",
         "ChannelNotFoundError": ".errors", "FileChangedError": ".errors", "IncompleteReadError": ".errors",
         "IntegrityError": ".errors", "LimitExceededError": ".errors", "ProcessError": ".errors",
         "OutputStalledError": ".errors", "ReaderGoneError": ".errors",
         "FileReceipt": ".files", "receive_file": ".files", "send_file": ".files", "Digest": ".integrity",
         "copy": ".pipes", "from_fd": ".pipes", "from_iterable": ".pipes", "from_process": ".pipes",
         "from_stream": ".pipes", "to_fd": ".pipes", "to_process": ".pipes", "to_stream": ".pipes",
         "ProgressBar": ".progress", "ProgressCallback": ".progress", "ChannelSink": ".sink", "sink": ".sink",
         "ChannelSource": ".source", "source": ".source", "TreeReceipt": ".trees", "receive_dir": ".trees",
         "send_dir": ".trees", "send_files": ".trees"}


if not TYPE_CHECKING:  # a type checker reads the imports above; a __getattr__ would tell it that every name exists

    def __getattr__(name: str) -> object:
        from iii._lazy import attribute

        return attribute(globals(), _FROM, name)

    def __dir__() -> list[str]:
        from iii._lazy import names

        return names(globals(), _FROM)


del TYPE_CHECKING


class _Package(_ModuleType):
    """This package's module type: the import of the submodule ``sink`` or ``source`` binds it here as an attribute,
    which would hide the function of that name (``iii_channels.sink(writer)``) from then on."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _FROM and isinstance(value, _ModuleType):
            return
        super().__setattr__(name, value)


_modules[__name__].__class__ = _Package
