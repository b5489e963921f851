"""Send a file from one worker to another through an engine, verified end to end.

    python -m examples.file_transfer                          # embedded engine, a generated 8 MiB file
    python -m examples.file_transfer --file big.iso           # your own file
    python -m examples.file_transfer --engine ws://host:49134 # an engine that is already running

The *receiver* worker registers ``files::store``: it takes a channel reader from its payload and stores the
stream with :func:`iii_channels.receive_file` (temporary name, renamed only after the integrity trailer
verified). The *sender* worker creates a channel, calls ``files::store`` with the reader end and streams the file
into the writer end with :func:`iii_channels.send_file`. Exit status 0 means the stored copy has the same
SHA-256 as the original.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from iii.channels import ChannelReader
from iii_channels import receive_file, send_file

from .channel_demo import MIB, engine_url, generate, registered, worker


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(MIB):
            digest.update(block)
    return digest.hexdigest()


async def transfer(url: str, source: Path, inbox: Path) -> dict[str, Any]:
    """Send ``source`` to a receiver worker that stores it in ``inbox``; returns the receiver's answer."""
    receiver, sender = worker(url, "file-receiver"), worker(url, "file-sender")

    async def store(data: dict[str, Any]) -> dict[str, Any]:
        reader = data["reader"]
        assert isinstance(reader, ChannelReader)  # the SDK turns a ref in a payload into a channel end
        receipt = await receive_file(reader, inbox, require_trailer=True)  # a directory: the sender's name
        return {"path": str(receipt.path), "bytes": receipt.size, "sha256": receipt.sha256}

    try:
        receiver.register_function("files::store", store, description="stores a file sent over a channel")
        await registered(receiver, "files::store")
        channel = await sender.create_channel_async()
        call = sender.trigger_async({"function_id": "files::store", "payload": {"reader": channel.reader}})
        _, stored = await asyncio.gather(send_file(channel.writer, source, progress=sys.stderr.isatty()), call)
        return dict(stored)
    finally:
        await asyncio.gather(receiver.shutdown_async(), sender.shutdown_async())


async def main(argv: list[str] | None = None) -> int:
    """Run one transfer; 0 when the copy matches."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--engine", help="engine URL (default: an embedded engine)")
    parser.add_argument("--file", type=Path, help="file to send (default: a generated one)")
    parser.add_argument("--size-mb", type=float, default=8.0, help="size of the generated file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="iii-file-transfer-") as tmp:
        source: Path = args.file or Path(tmp) / "generated.bin"
        if args.file is None:
            with source.open("wb") as fh:
                fh.writelines(generate(int(args.size_mb * MIB)))
        inbox = Path(tmp) / "inbox"
        inbox.mkdir()
        async with engine_url(args.engine) as url:
            stored = await transfer(url, source, inbox)
        expected = sha256_file(source)
        ok = stored["sha256"] == expected == sha256_file(Path(stored["path"]))
        print(f"{source.name}: {stored['bytes']:,} bytes stored as {Path(stored['path']).name}, "
              f"sha256 {expected[:16]}… {'verified' if ok else 'MISMATCH'}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
