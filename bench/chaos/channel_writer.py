"""A channel writer in its own process, to be SIGKILLed mid-stream: connects to the channel URL given, writes
64 KiB binary messages forever, prints ``half`` once ``--announce-after`` bytes were sent.

Usage: python -m bench.chaos.channel_writer URL --announce-after N
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import websockets


async def main() -> int:
    """Write until killed (bounded: at most 2 GiB or 120 s, so an unkilled writer still ends)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--announce-after", type=int, default=65536)
    args = parser.parse_args()
    chunk = bytes(range(256)) * 256
    sent = 0
    announced = False
    async with asyncio.timeout(120), websockets.connect(args.url, compression=None, max_size=None,
                                                        ping_interval=None, open_timeout=10) as ws:
        while sent < 2 << 30:
            await ws.send(chunk)
            sent += len(chunk)
            if not announced and sent >= args.announce_after:
                print("half", flush=True)
                announced = True
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
