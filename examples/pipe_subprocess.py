"""Pipe a stream through subprocesses on two workers: ``gzip`` on one side, ``gzip -d`` on the other.

    python -m examples.pipe_subprocess                          # embedded engine, 16 MiB of generated data
    python -m examples.pipe_subprocess --engine ws://host:49134

The *packer* worker registers ``pipes::pack``: it runs ``gzip -c FILE`` and streams the process's stdout into the
channel writer it was given (:func:`iii_channels.from_process`: a non-zero exit aborts the channel and raises
with the exit status and stderr). The *unpacker* creates the channel, calls ``pipes::pack`` and feeds the
reader end into ``gzip -dc > OUT`` (:func:`iii_channels.to_process`). Exit status 0 means the unpacked output
equals the original.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from iii.channels import ChannelWriter
from iii_channels import from_process, to_process

from .channel_demo import MIB, engine_url, generate, registered, worker
from .file_transfer import sha256_file


async def pipe(url: str, source: Path, out: Path) -> dict[str, int]:
    """gzip ``source`` on one worker, gunzip the channel into ``out`` on another; returns the byte counts."""
    packer, unpacker = worker(url, "packer"), worker(url, "unpacker")

    async def pack(data: dict[str, Any]) -> dict[str, int]:
        writer = data["writer"]
        assert isinstance(writer, ChannelWriter)
        return {"compressed": await from_process(writer, ["gzip", "-c", str(data["path"])])}

    try:
        packer.register_function("pipes::pack", pack, description="streams gzip -c FILE into a channel")
        await registered(packer, "pipes::pack")
        channel = await unpacker.create_channel_async()
        call = unpacker.trigger_async({
            "function_id": "pipes::pack", "payload": {"writer": channel.writer, "path": str(source)}})
        with out.open("wb") as sink:
            fed, packed = await asyncio.gather(
                to_process(channel.reader, ["gzip", "-dc"], stdout=sink, require_trailer=True), call)
        return {"compressed": packed["compressed"], "fed": fed}
    finally:
        await asyncio.gather(packer.shutdown_async(), unpacker.shutdown_async())


async def main(argv: list[str] | None = None) -> int:
    """Run one pipe; 0 when the output matches the input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--engine", help="engine URL (default: an embedded engine)")
    parser.add_argument("--size-mb", type=float, default=16.0, help="size of the generated input")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="iii-pipe-") as tmp:
        source, out = Path(tmp) / "input.bin", Path(tmp) / "output.bin"
        with source.open("wb") as fh:
            # Half generated noise, half text, so gzip has something to compress.
            size = int(args.size_mb * MIB)
            fh.writelines(generate(size // 2))
            line = b"the quick brown fox jumps over the lazy dog\n"
            rest = size - size // 2
            fh.write((line * (rest // len(line) + 1))[:rest])
        async with engine_url(args.engine) as url:
            counts = await pipe(url, source, out)
        expected = sha256_file(source)
        ok = sha256_file(out) == expected and counts["compressed"] == counts["fed"]
        print(f"{source.stat().st_size:,} bytes -> gzip -> {counts['compressed']:,} bytes over the channel -> "
              f"gzip -d -> {out.stat().st_size:,} bytes, sha256 {expected[:16]}… "
              f"{'verified' if ok else 'MISMATCH'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
