"""Serve a custom stream through `create_stream` until stdin closes.

Usage: python serve_stream.py ENGINE_URL STREAM_NAME STORE_URL   (our SDK; STORE_URL opens an iii_streams backend)
       python serve_stream.py ENGINE_URL STREAM_NAME dict         (any SDK: a dict-backed IStream, no iii_streams)
"""

from __future__ import annotations

import sys
from typing import Any

from iii import register_worker
from iii.stream import IStream, StreamDeleteResult, StreamSetResult


class DictStream(IStream[Any]):
    """The smallest IStream, written against the models both SDKs share (update left to the engine)."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    async def get(self, input: Any) -> Any:
        return self.items.get((input.stream_name, input.group_id), {}).get(input.item_id)

    async def set(self, input: Any) -> Any:
        group = self.items.setdefault((input.stream_name, input.group_id), {})
        old = group.get(input.item_id)
        group[input.item_id] = input.data
        return StreamSetResult(old_value=old, new_value=input.data)

    async def delete(self, input: Any) -> Any:
        old = self.items.get((input.stream_name, input.group_id), {}).pop(input.item_id, None)
        return StreamDeleteResult(old_value=old)

    async def list(self, input: Any) -> Any:
        return list(self.items.get((input.stream_name, input.group_id), {}).values())

    async def list_groups(self, input: Any) -> Any:
        return [group for (stream, group), items in self.items.items() if stream == input.stream_name and items]

    async def update(self, input: Any) -> Any:
        return None


def main() -> None:
    url, name, store_url = sys.argv[1:4]
    if store_url == "dict":
        store: Any = DictStream()
    else:
        from iii_streams import open_stream

        store = open_stream(store_url, publish_events=False)
    client = register_worker(url)
    client.create_stream(name, store)
    print("ready", flush=True)
    sys.stdin.read()
    client.shutdown()


if __name__ == "__main__":
    main()
