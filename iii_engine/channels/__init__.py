"""Channel relay (docs/protocol.md#channels, with every improvement of docs/protocol.md#channel-improvements), one
module per job.

A channel moves WebSocket messages from one writer socket to one reader socket, in order, through a bounded
queue of at most ``buffer_size`` messages. The worker listener hands ``/ws/channels/{id}`` upgrades here:
:meth:`ChannelRelay.check` runs before the upgrade (HTTP refusal), :meth:`ChannelRelay.serve` runs the accepted
connection until that end is done. Engine-internal users (the REST API module) attach in-process instead with
:meth:`ChannelRelay.open_local`: both kinds of end implement :class:`iii.channel_end.ChannelEnd`, so queue,
backpressure, close codes and cleanup are identical; only the handshake is skipped.

=============  ===========================================================================================
``registry``   :class:`ChannelRelay`: creation, upgrade checks, deadlines, discard, shutdown
``machine``    :class:`ChannelMachine`: one channel's queue and end states, events in, actions out, no I/O
``policy``     :class:`RelayPolicy`: our behaviour or the production engine's, as one strategy object
``driver``     the loops that move messages between the two ends and carry out the machine's actions
``local``      in-process ends (:class:`LocalChannelEnd`) over a one-slot pipe
``limits``     sizes, bounds and defaults
=============  ===========================================================================================

Close codes sent by this relay (ours, :class:`iii.channel_end.ChannelCloseCode`; the production engine sends
Close without a code in every case):

====  ================  =====================================================================
1000  reader            end of stream: the writer closed normally and everything was delivered
1007  writer            a text message that is not UTF-8 (the reader then gets 4001)
1009  writer            a message exceeded ``max_message_size``, or the channel's byte quota ran out
                        (the reader then gets 4001)
4001  reader            the writer aborted (non-normal close code, dropped connection, oversize), or the
                        channel was discarded (:meth:`ChannelRelay.discard`)
4002  writer            the reader closed or disconnected before the end, or the channel was discarded
4003  the attached end  the channel expired: the other end never connected in time
4009  extra connection  that end of the channel is already attached
====  ================  =====================================================================

With ``production_mode=True`` the relay mimics the production engine instead, so clients can be tested against
both: one key for both directions, ``dir`` not checked against the key, Close without a code for EOF, abort,
expiry and extra connections, the reader socket never read, and a writer whose reader left dropped without Close.
"""

from __future__ import annotations

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.channel_end import ChannelCloseCode

from .limits import (
    CHANNEL_SOCKET_QUEUE,
    DEFAULT_BUFFER_SIZE,
    DEFAULT_MAX_HELD_BYTES,
    DEFAULT_MAX_HELD_BYTES_PER_WORKER,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_OPEN_CHANNELS,
    DEFAULT_MAX_OPEN_PER_WORKER,
    DEFAULT_MAX_QUEUED_BYTES,
    MAX_BUFFER_SIZE,
    SOCKET_QUEUE_BYTES,
    TooManyChannels,
    clamp_buffer_size,
)
from .local import ChannelRefused, LocalChannelEnd
from .machine import ChannelMachine, HeldBytes
from .policy import OURS, PRODUCTION, RelayPolicy
from .registry import ChannelRelay, SocketSlot

__all__ = [
    "CHANNEL_SOCKET_QUEUE",
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_MAX_HELD_BYTES",
    "DEFAULT_MAX_HELD_BYTES_PER_WORKER",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_OPEN_CHANNELS",
    "DEFAULT_MAX_OPEN_PER_WORKER",
    "DEFAULT_MAX_QUEUED_BYTES",
    "MAX_BUFFER_SIZE",
    "OURS",
    "PRODUCTION",
    "SOCKET_QUEUE_BYTES",
    "ChannelCloseCode",
    "ChannelMachine",
    "ChannelRefused",
    "ChannelRelay",
    "HeldBytes",
    "LocalChannelEnd",
    "RelayPolicy",
    "SocketSlot",
    "TooManyChannels",
    "clamp_buffer_size",
]
