"""A ready channel on an engine in this process, in one line: for examples, tests and experiments.

:func:`local_channel` starts an embedded engine on a free loopback port, connects a client to it and creates a
channel; the body gets both ends. On the way out, also when the body raises or is cancelled, the client is shut down
(its loop thread joined) and the engine stopped, which cuts any end still open. Start-up is bounded
(``start_timeout``): an engine or a client that never comes up fails with ``TimeoutError`` instead of hanging the
test run.

Example:
    >>> import asyncio
    >>> from iii_channels import sink, source
    >>> from iii_engine.testing import local_channel
    >>> async def demo() -> bytes:
    ...     async with local_channel() as ch:
    ...         async with sink(ch.writer) as out:
    ...             await out.write(b"hello")
    ...         return await source(ch.reader, require_trailer=True).read_all()
    >>> asyncio.run(demo())
    b'hello'
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from iii import III
from iii.types import Channel
from iii_engine import Engine, EngineConfig

__all__ = ["LocalChannel", "local_channel"]


@dataclass
class LocalChannel(Channel):
    """Both ends of a channel (a :class:`iii.types.Channel`) on an engine in this process, with the connected
    client ``iii`` (for more channels, or functions of the test's own) and the ``engine`` itself."""

    iii: III
    engine: Engine


@asynccontextmanager
async def local_channel(buffer_size: int | None = None, *, config: EngineConfig | None = None,
                        start_timeout: float = 10.0) -> AsyncIterator[LocalChannel]:
    """A new channel on an engine started for the body, stopped (client and engine) when the body ends.

    Args:
        buffer_size: passed to ``create_channel_async`` (``None``: the engine's default).
        config: the engine's configuration; by default no modules but the worker one, on a free loopback port.
        start_timeout: most seconds to start the engine, connect and create the channel together; past it
            ``TimeoutError`` names the step that did not finish, after everything started is stopped again.

    The body's own exception (or cancellation) propagates unchanged. Ends the body left open are cut when the
    engine stops: a reader of an unfinished stream sees the connection end.

    Example:
        >>> import asyncio
        >>> from iii_channels import ChannelSource, copy, sink
        >>> from iii_engine.testing import local_channel
        >>> async def demo() -> tuple[bytes, bool]:
        ...     async with local_channel() as ch:
        ...         onward = await ch.iii.create_channel_async()  # more channels on the same engine
        ...         async with sink(ch.writer) as out:
        ...             await out.write(b"relayed")
        ...         await copy(ch.reader, onward.writer)
        ...         return await ChannelSource(onward.reader).read_all(), ch.engine.ready.is_set()
        >>> asyncio.run(demo())
        (b'relayed', True)
    """
    # a start-up without a bound is what this helper exists to avoid: no None, no infinity
    bounded = isinstance(start_timeout, int | float) and not isinstance(start_timeout, bool)
    if not (bounded and 0 < start_timeout < math.inf):
        raise ValueError(f"start_timeout must be a positive, finite number of seconds, got {start_timeout!r}")
    engine = Engine(config=config or EngineConfig(port=0, modules=[]))
    async with AsyncExitStack() as stack:
        step = "the engine did not start"
        try:
            async with asyncio.timeout(start_timeout) as deadline:
                # Engine.start stops whatever it had started when it is cancelled half-way
                await stack.enter_async_context(engine)
                step = f"the client did not connect to {engine.url}"
                # entered before connecting: a connect cut short still shuts the client and joins its thread
                client = await stack.enter_async_context(III(engine.url))
                await client.connect_async()
                step = "the channel was not created"
                channel = await client.create_channel_async(buffer_size)
        except TimeoutError as exc:
            if not deadline.expired():
                raise  # a timeout of the step's own, with its own message
            raise TimeoutError(f"local_channel: {step} within {start_timeout:g} s") from exc
        yield LocalChannel(channel.writer, channel.reader, channel.writer_ref, channel.reader_ref, client, engine)
