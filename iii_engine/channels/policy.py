"""How the relay behaves: ours (docs/protocol.md#channel-improvements) or the production engine's, as one strategy
object.

Every place the two behaviours differ is a field here; the state machine reads the policy and has no
``production_mode`` branches of its own.

Example:
    >>> OURS.wire_code(4001), PRODUCTION.wire_code(4001)
    (4001, None)
    >>> policy_for(production_mode=True) is PRODUCTION
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.channel_end import EOF_CODES


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """The relay's choices where our engine and the production engine differ.

    Attributes:
        name: for logs.
        separate_keys: each direction has its own access key (production: one key for both, ``dir`` unchecked).
        owner_cleanup: channels are removed when the worker that created them leaves before any end attached.
        quotas: per-channel byte quotas apply.
        close_codes: Close frames carry a code and reason (production: always a Close without a code).
        writer_abort_visible: a writer that closes with a non-EOF code, drops, sends an oversize or invalid
            message aborts the reader (4001); production turns all of those into a normal end of stream.
        watch_reader: the reader socket is read continuously (pings answered, a Close noticed at once).
        tell_writer: a writer is closed with 4002/4003 when the reader leaves or the channel expires
            (production drops it without a Close frame, or not at all until it writes).
    """

    name: str
    separate_keys: bool = True
    owner_cleanup: bool = True
    quotas: bool = True
    close_codes: bool = True
    writer_abort_visible: bool = True
    watch_reader: bool = True
    tell_writer: bool = True

    def wire_code(self, code: int) -> int | None:
        """The close code actually sent for ``code`` (``None``: a Close frame without a code)."""
        return code if self.close_codes else None

    def writer_close_is_eof(self, code: int | None) -> bool:
        """Whether a writer closing with ``code`` (``None``: dropped) ends the stream normally."""
        return code in EOF_CODES or not self.writer_abort_visible


OURS = RelayPolicy("ours")
PRODUCTION = RelayPolicy("production", separate_keys=False, owner_cleanup=False, quotas=False, close_codes=False,
                         writer_abort_visible=False, watch_reader=False, tell_writer=False)


def policy_for(production_mode: bool) -> RelayPolicy:
    """:data:`PRODUCTION` or :data:`OURS`."""
    return PRODUCTION if production_mode else OURS


__all__ = ["OURS", "PRODUCTION", "RelayPolicy", "policy_for"]
