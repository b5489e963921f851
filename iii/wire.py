"""Compatibility path of the protocol codec: everything here lives in :mod:`iii.protocol.codec` (the JSON
policy, encode/decode) and :mod:`iii.protocol.messages` (:class:`Ping`, :class:`Pong`, :class:`Telemetry`).

Example:
    >>> from iii.protocol import codec
    >>> loads is codec.loads and decode('{"type":"ping"}') == Ping()
    True
"""

from __future__ import annotations

from .protocol.codec import (
    LOG_CLIP,
    MAX_JSON_DEPTH,
    WireError,
    clip,
    decode,
    decode_object,
    dumps,
    encode,
    jsonable,
    loads,
    salvage_invocation,
    to_frame_dict,
)
from .protocol.messages import TELEMETRY_PREFIXES, Decoded, Ping, Pong, Telemetry

__all__ = [
    "LOG_CLIP",
    "MAX_JSON_DEPTH",
    "TELEMETRY_PREFIXES",
    "Decoded",
    "Ping",
    "Pong",
    "Telemetry",
    "WireError",
    "clip",
    "decode",
    "decode_object",
    "dumps",
    "encode",
    "jsonable",
    "loads",
    "salvage_invocation",
    "to_frame_dict",
]
