"""Channel ends (PROTOCOL §5.4). Interface stub: the channels work replaces it."""

from __future__ import annotations

from typing import Any

from .iii_types import StreamChannelRef


def build_channel_url(engine_ws_base: str, channel_id: str, access_key: str, direction: str) -> str:
    """``ws://host:port/ws/channels/<id>?key=<key>&dir=<direction>``."""
    from urllib.parse import quote

    return f"{engine_ws_base.rstrip('/')}/ws/channels/{channel_id}?key={quote(access_key, safe='')}&dir={direction}"


class ChannelWriter:
    def __init__(self, engine_ws_base: str, ref: StreamChannelRef) -> None:
        self._base = engine_ws_base
        self.ref = ref

    def __iii_json__(self) -> dict[str, Any]:
        return self.ref.model_dump()


class ChannelReader:
    def __init__(self, engine_ws_base: str, ref: StreamChannelRef) -> None:
        self._base = engine_ws_base
        self.ref = ref

    def __iii_json__(self) -> dict[str, Any]:
        return self.ref.model_dump()
