"""``iii-channel``: push a file or stdin through the engine to a worker function, or be that worker.

Usage::

    iii-channel serve --function files::receive --out DIR|-     # a worker that stores what it receives
    iii-channel send FILE|- --to files::receive                 # sends with a progress bar, prints the receipt

The sender creates a channel, calls the function with ``{"reader": <ref>, "name": …, "size": …}`` and streams
the bytes (with an integrity trailer); the serving worker writes them with ``receive_file`` (temporary name,
renamed when verified) or to its stdout, and returns ``{"path", "bytes", "sha256", "verified"}``.

Example:
    >>> build_parser().parse_args(["send", "-", "--to", "x"]).to
    'x'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from iii.channels import ChannelReader
from iii.iii import III

from .files import receive_file, send_file
from .pipes import from_fd, to_fd

DEFAULT_ENGINE = os.environ.get("III_URL", "ws://localhost:49134")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``iii-channel``."""
    parser = argparse.ArgumentParser(prog="iii-channel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default=DEFAULT_ENGINE, help="engine worker URL (default: $III_URL or %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    send = sub.add_parser("send", help="send FILE (or - for stdin) to a function")
    send.add_argument("file", help="file to send, or - for stdin")
    send.add_argument("--to", required=True, help="function id that receives {reader, name, size}")
    send.add_argument("--name", help="name to announce (default: the file's basename)")
    send.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
    send.add_argument("--timeout-ms", type=int, default=24 * 3600 * 1000, help="call timeout")
    serve = sub.add_parser("serve", help="register a function that stores what it receives")
    serve.add_argument("--function", required=True, help="function id to register")
    serve.add_argument("--out", required=True, help="directory to store files in, or - for stdout")
    serve.add_argument("--once", action="store_true", help="exit after the first transfer")
    return parser


async def _send(args: argparse.Namespace) -> int:
    client = III(args.engine)
    await client.connect_async()
    try:
        channel = await client.create_channel_async()
        progress = not args.no_progress and sys.stderr.isatty()
        if args.file == "-":
            name, size = args.name or "stdin", None
            transfer = from_fd(channel.writer, sys.stdin.fileno(), progress=progress)
        else:
            path = Path(args.file)
            name, size = args.name or path.name, os.stat(path).st_size
            transfer = send_file(channel.writer, path, progress=progress)
        payload = {"reader": channel.reader_ref, "name": name, "size": size}
        call = client.trigger_async({"function_id": args.to, "payload": payload, "timeout_ms": args.timeout_ms})
        sent, result = await asyncio.gather(transfer, call)
        print(json.dumps({"sent": sent, "result": result}))
        return 0
    finally:
        await client.shutdown_async()


async def _serve(args: argparse.Namespace) -> int:
    client = III(args.engine)
    await client.connect_async()
    done = asyncio.Event()

    async def handler(data: dict[str, Any]) -> dict[str, Any]:
        reader = data["reader"]
        if not isinstance(reader, ChannelReader):
            reader = ChannelReader(args.engine, reader)
        if args.out == "-":
            size = await to_fd(reader, sys.stdout.fileno())
            result: dict[str, Any] = {"path": "-", "bytes": size}
        else:
            out = Path(args.out)
            is_dir = await asyncio.to_thread(os.path.isdir, out)
            target = out / Path(str(data.get("name") or "received")).name if is_dir else out
            receipt = await receive_file(reader, target, progress=sys.stderr.isatty())
            result = {"path": str(receipt.path), "bytes": receipt.size, "sha256": receipt.sha256,
                      "verified": receipt.verified}
        if args.once:
            done.set()
        return result

    client.register_function(args.function, handler)
    print(f"serving {args.function} on {args.engine}", file=sys.stderr)
    try:
        await done.wait()
        await asyncio.sleep(0.2)  # let the result frame leave before shutting down
    finally:
        await client.shutdown_async()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``iii-channel`` console script."""
    args = build_parser().parse_args(argv)
    runner = _send if args.command == "send" else _serve
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
