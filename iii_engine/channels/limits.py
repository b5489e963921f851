"""Sizes and bounds of the channel relay: one place for every default (docs/protocol.md#channels,
docs/protocol.md#channel-improvements).

Example:
    >>> clamp_buffer_size(None), clamp_buffer_size(0), clamp_buffer_size(5000)
    (64, 1, 1024)
"""

from __future__ import annotations

from typing import Final

from ..fd_limits import open_files_share

DEFAULT_BUFFER_SIZE: Final = 64
"""Messages a channel queues between writer and reader when ``buffer_size`` is not given."""
MAX_BUFFER_SIZE: Final = 1024
DEFAULT_MAX_QUEUED_BYTES: Final = 16 * 1024 * 1024
"""Per-channel cap on the payload bytes queued between writer and reader (besides the message count cap)."""
DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024
"""Largest message a writer may send."""
DEFAULT_MAX_OPEN_CHANNELS: Final = 100_000
"""Channels one engine keeps at once (created and not finished, attached or not)."""
DEFAULT_MAX_OPEN_PER_WORKER: Final = 20_000
"""Channels one worker's ``engine::channels::create`` calls keep open at once (a leak in one worker stops there,
not at the engine-wide bound every other worker and the REST API share)."""
DEFAULT_MAX_HELD_BYTES: Final[int | None] = None
"""Payload bytes the queues of all channels may hold together before writers are not read; ``None``, the default:
no engine-wide bound, only each worker's share. Why none by default: a stream written ahead of its reader (write,
then hand the reader out) waits while the bound is full, so four workers parking their share filled a 256 MiB bound
and another worker's 8 MiB written ahead then waited for the attach deadline. Set it to bound the relay's memory
whatever the number of workers, accepting that. Past it a channel whose reader is attached still moves, one
message at a time."""
DEFAULT_MAX_HELD_BYTES_PER_WORKER: Final = 64 * 1024 * 1024
"""The same, for the channels one worker created (a quarter of the engine's: four channels' full queues), so one
worker's parked streams cannot take every other worker's room (as ``max_call_bytes_per_worker``)."""
SOCKETS_SHARE_DIVISOR: Final = 4
"""Channel sockets attached at once engine-wide, by default: this part of the open-file limit (a quarter: each holds
a descriptor; the REST API and the stream socket take shares of their own, and the rest stays for workers' control
connections, upgrades under way, stores and files; a half, with the REST API's half, left none: a worker could not
connect). One worker attaching both ends of idle channels took all 1,024 of an engine's descriptors before, and then
no worker could connect (``accept()`` failed with EMFILE)."""
SOCKETS_PER_WORKER_DIVISOR: Final = 4
"""The channel sockets of the channels one worker created, by default: this part of the engine-wide bound."""
DEFAULT_ATTACH_TIMEOUT_S: Final = 300.0
"""How long an end may stay unattached before the channel expires."""
ORPHAN_GRACE_S: Final = 30.0
"""How long a channel no end attached to outlives the worker that created it (see ``ChannelRelay.drop_owner``)."""

SOCKET_QUEUE_BYTES: Final = 4 * 1024 * 1024
"""Bytes a writer socket may hold in received-but-unread messages before the relay stops reading it."""
HELD_BACK_SOCKET_BYTES: Final = 256 * 1024
"""Bytes a writer socket may hold unread while a held-bytes bound keeps its writer waiting (instead of
:data:`SOCKET_QUEUE_BYTES`): 40 such writers held 174 MiB in their sockets besides the bound's 64 MiB."""
DEFAULT_SOCKET_QUEUE: Final = 16
CHANNEL_SOCKET_QUEUE: Final = (1, 0)
"""(high, low) of websockets' own frame queue on a freshly accepted channel socket, before its first message
tells the size (only used where the fast receive path is off)."""


def default_max_sockets() -> int:
    """The default ``ChannelRelay.max_sockets``: a quarter of the process's open-file limit (5,000 without one).

    Example:
        >>> default_max_sockets() >= 1
        True
    """
    return open_files_share(SOCKETS_SHARE_DIVISOR)


class TooManyChannels(Exception):
    """``create`` while the relay already keeps ``max_open`` channels; the message names the setting."""


def clamp_buffer_size(buffer_size: int | None) -> int:
    """The queue capacity for a requested ``buffer_size`` (default 64, clamped to 1…1024, docs/protocol.md#channels)."""
    if buffer_size is None:
        return DEFAULT_BUFFER_SIZE
    return max(1, min(MAX_BUFFER_SIZE, int(buffer_size)))


def frame_queue_for(message_size: int) -> int:
    """websockets' frame-queue high mark for messages of ``message_size`` bytes: it queues up to ``high + 1``
    frames before it stops reading, so large messages must not pile up there (small ones keep the default).

    Example:
        >>> frame_queue_for(100), frame_queue_for(1 << 20), frame_queue_for(64 << 20)
        (16, 3, 0)
    """
    return max(0, min(DEFAULT_SOCKET_QUEUE, SOCKET_QUEUE_BYTES // (message_size or 1) - 1))
