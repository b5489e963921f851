"""Channel throughput and memory, as ratios against a raw two-hop websockets relay measured in the same run.

Reports:
  * raw: writer -> minimal Python relay -> reader (await send per 64 KiB frame), compression off;
  * ours: our ChannelWriter/ChannelReader through our embedded engine's relay;
  * reference: the reference SDK's writer and reader (subprocesses in III_REF_PYTHON's venv) through our engine;
  * memory: an engine process and a writer process while SIZE bytes cross a reader that sleeps per chunk;
    peak RSS growth of the engine and peak RSS of the writer;
  * floors: what Python can reach for the relay's job (CPU per GiB of this process forwarding between a writer and
    a reader process): a bare asyncio.BufferedProtocol byte forwarder, and a websocket-frame forwarder unmasking
    with websockets' C apply_mask (no handshake, limits or close handling: floors, not contenders);
  * floor_writer (only with ``--only``): a bare socket writer process sending frames masked once, through our
    engine to our reader: the CPU per GiB below which no writer process goes on this machine (the kernel's).

The throughput contenders run interleaved: ``--rounds`` rounds, each running every contender once on ``--size-mib``
(rotating the order per round); medians, spread and per-round ratios are printed, so that the noise of a busy
machine hits all contenders alike.

``--frames invited,64k`` runs our writer's contenders (``ours``, ``ours_proc``) twice per round: through an engine
that invites large frames (the default, docs/protocol.md#frame-size-extension) and through one whose
``channels.max_message_size`` is 64 KiB, so that it invites 64 KiB frames: what our writer sends to the production
engine, and what it sent everywhere before the extension. Rows of the second are marked ``@64k``.

Run: .venv/bin/python bench/channels_throughput.py [--rounds 5] [--size-mib 128] [--mem-size-mib 1024] [--slow-ms 1]
     [--frames invited[,64k]] [--compare DIR]
``--compare DIR`` (e.g. a ``git worktree add /tmp/base HEAD``) runs each round twice, once with this checkout's code
and once with DIR's (fresh processes, alternating which goes first), and prints this/DIR ratios of every median.
Goals (issue #10): ours in-process >= 1.5x raw; ours >= 2x the reference (processes); our reader and writer each
<= 60% of the reference's CPU per GiB; the relay <= 500 ms CPU per GiB; engine growth < 64 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import websockets
from websockets.asyncio.server import ServerConnection, serve

# III_BENCH_ROOT: the checkout whose code this run measures (set by --compare for its child runs).
ROOT = Path(os.environ.get("III_BENCH_ROOT") or Path(__file__).resolve().parents[1]).resolve()
sys.path.insert(0, str(ROOT))

from iii.channels import ChannelReader, ChannelWriter, build_channel_url  # noqa: E402
from iii.iii import III  # noqa: E402
from iii_engine import Engine  # noqa: E402
from iii_engine.config import ChannelSettings, EngineConfig  # noqa: E402

SCRIPT = str(Path(__file__).resolve())
# The reference SDK is not code under test: --compare's children of a worktree (which has no .ref-venv) use this
# script's checkout's, so both sides run the same contenders.
REF_PYTHON = os.environ.get("III_REF_PYTHON",
                            str(Path(__file__).resolve().parents[1] / ".ref-venv" / "bin" / "python"))
FRAME = 64 * 1024
OPTS = {"compression": None, "max_size": None, "ping_interval": None}

REF_SCRIPT = r"""
import asyncio, sys, json, time
import iii.channels
from iii.channels import ChannelReader, ChannelWriter
from iii.iii_types import StreamChannelRef
async def main():
    mode, base, ref, size = sys.argv[1], sys.argv[2], StreamChannelRef(**json.loads(sys.argv[3])), int(sys.argv[4])
    if mode == "write":
        w = ChannelWriter(base, ref); block = b"r" * (1 << 20); sent = 0; c0 = time.process_time()
        while sent < size:
            await w.write(block); sent += len(block)
        await w.close_async()
        print(json.dumps({"cpu": time.process_time() - c0}))
    else:
        r = ChannelReader(base, ref); n = 0; t0 = None; c0 = 0.0
        async for chunk in r:
            if t0 is None: t0 = time.perf_counter(); c0 = time.process_time()
            n += len(chunk)
        print(json.dumps({"bytes": n, "seconds": time.perf_counter() - (t0 or time.perf_counter()),
                          "cpu": time.process_time() - c0, "module": iii.channels.__file__}))
asyncio.run(main())
"""

WRITER_SCRIPT = r"""
import asyncio, sys, json, resource
sys.path.insert(0, sys.argv[4])
from iii.channels import ChannelWriter
async def main():
    w = ChannelWriter(sys.argv[1], json.loads(sys.argv[2])); size = int(sys.argv[3]); block = b"m" * (1 << 20)
    for _ in range(size // len(block)):
        await w.write(block)
    await w.close_async()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
asyncio.run(main())
"""


async def raw_relay(size: int) -> float:
    """MB/s through writer -> relay -> reader with plain websockets."""
    peers: dict[str, ServerConnection] = {}
    reader_ready = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        role = ws.request.path.strip("/") if ws.request else ""
        peers[role] = ws
        if role == "read":
            reader_ready.set()
            await ws.wait_closed()
            return
        await reader_ready.wait()
        async for message in ws:
            await peers["read"].send(message)
        await peers["read"].close()

    async with serve(handler, "127.0.0.1", 0, **OPTS) as server:  # type: ignore[arg-type]
        port = server.sockets[0].getsockname()[1]
        reader = await websockets.connect(f"ws://127.0.0.1:{port}/read", **OPTS)  # type: ignore[arg-type]
        writer = await websockets.connect(f"ws://127.0.0.1:{port}/write", **OPTS)  # type: ignore[arg-type]
        frame = b"x" * FRAME
        start = time.perf_counter()

        async def send() -> None:
            for _ in range(size // FRAME):
                await writer.send(frame)
            await writer.close()

        async def recv() -> int:
            n = 0
            async for message in reader:
                n += len(message)
            return n

        _, n = await asyncio.gather(send(), recv())
        assert n == size
        return size / (time.perf_counter() - start) / 1e6


async def ours(engine: Engine, size: int, sdk: str = "ours") -> float:
    refs = engine.channels.create(None, owner=None)
    writer, reader = ChannelWriter(engine.url, refs["writer"]), ChannelReader(engine.url, refs["reader"])
    block = b"o" * (1 << 20)
    start = time.perf_counter()
    cpu = time.process_time()

    async def send() -> None:
        for _ in range(size // len(block)):
            await writer.write(block)
        await writer.close_async()

    async def recv() -> int:
        n = 0
        async for chunk in reader:
            n += len(chunk)
        return n

    _, n = await asyncio.gather(send(), recv())
    assert n == size
    CPU[f"{sdk}_inproc"].append((time.process_time() - cpu) * 1000 * (1 << 30) / size)
    return size / (time.perf_counter() - start) / 1e6


# CPU milliseconds per GiB spent by each end process (writer: whole run; reader: from its first chunk): far less
# sensitive to the machine's load than MB/s, and exactly what the two SDKs' ends differ in.
# "relay": this process (the engine alone) during a process run; "inproc": writer, relay and reader in one process.
# "ours@64k": our SDK through the engine that invites 64 KiB frames (--frames 64k).
CPU: dict[str, list[float]] = {f"{sdk}_{end}": [] for sdk in ("ours", "ours@64k", "ref")
                               for end in ("write", "read", "relay", "inproc")}
del CPU["ref_inproc"]
CPU["floor_bytes"] = []
CPU["floor_frames"] = []
CPU["floor_writer"] = []
CPU["recv_1m"] = []
CPU["recv_64k"] = []


async def reference(engine: Engine, size: int, python: str = REF_PYTHON, label: str = "ours") -> float | None:
    """Writer and reader in their own processes (the reference SDK's venv, or ours with ``python``, whose CPU
    rows are ``label``'s)."""
    if not os.path.exists(python):  # noqa: ASYNC240 - one stat in a benchmark
        return None
    ours_sdk = python == sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT)} if ours_sdk else None
    refs = engine.channels.create(None, owner=None)
    # -P: ``python -c`` would otherwise put the working directory first on sys.path, and run from the repository
    # the "reference" processes would import OUR iii package.
    reader = await asyncio.create_subprocess_exec(
        python, "-P", "-c", REF_SCRIPT, "read", engine.url, json.dumps(refs["reader"]), str(size),
        stdout=asyncio.subprocess.PIPE, env=env)
    writer = await asyncio.create_subprocess_exec(
        python, "-P", "-c", REF_SCRIPT, "write", engine.url, json.dumps(refs["writer"]), str(size),
        stdout=asyncio.subprocess.PIPE, env=env)
    relay_cpu = time.process_time()
    (out, _), (writer_out, _) = await asyncio.gather(reader.communicate(), writer.communicate())
    relay_cpu = time.process_time() - relay_cpu
    result = json.loads(out)
    cpu_ms_per_gib = 1000 * (1 << 30) / size
    # This process runs only the engine while both ends live in subprocesses: its CPU is the relay's cost.
    sdk = label if ours_sdk else "ref"
    CPU[f"{sdk}_relay"].append(relay_cpu * cpu_ms_per_gib)
    CPU[f"{sdk}_write"].append(json.loads(writer_out)["cpu"] * cpu_ms_per_gib)
    CPU[f"{sdk}_read"].append(result["cpu"] * cpu_ms_per_gib)
    assert result["bytes"] == size, result
    imported_ours = result["module"] == str(ROOT / "iii" / "channels.py")
    assert imported_ours == ours_sdk, f"wrong SDK imported: {result['module']}"
    return float(size / result["seconds"] / 1e6)


# ---------------------------------------------------------------------------------------------------- the floor
# What Python can reach for the relay's job, measured the same way (this process's CPU per GiB while a writer and
# a reader in their own processes move SIZE bytes through it). Two forwarders, the best of what asyncio offers:
#   * "bytes": a bare byte forwarder (asyncio.BufferedProtocol into a 1 MiB receive buffer, transport.write of
#     what arrived, the reader socket's flow control pausing the writer socket);
#   * "frames": the same, websocket-frame aware: it parses the writer's masked 64 KiB client frames, unmasks them
#     with websockets' C apply_mask and writes unmasked server frames (one joined write per receive).
# Neither does a handshake, a close, limits or anything else a relay must; both are floors, not contenders.

FLOOR_WRITER = r"""
import os, socket, struct, sys
port, size, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"w")
if kind == "frames":
    from websockets.speedups import apply_mask
    key = os.urandom(4); frame = struct.pack("!BBQ", 0x82, 0x80 | 127, 65536) + key + apply_mask(b"f" * 65536, key)
    block = frame * 16
    for _ in range(size // (16 * 65536)):
        s.sendall(block)
else:
    block = b"b" * (1 << 20)
    for _ in range(size // len(block)):
        s.sendall(block)
s.close()
"""

FLOOR_READER = r"""
import socket, sys
port, expect = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"r")
buf = bytearray(1 << 20); n = 0
while True:
    got = s.recv_into(buf)
    if not got:
        break
    n += got
print(n)
"""


class _Forward(asyncio.BufferedProtocol):
    """One side of a floor forwarder; the first byte a client sends says which side it is."""

    def __init__(self, hub: _FloorHub) -> None:
        self.hub = hub
        self.buf = bytearray(1 << 20)
        self.view = memoryview(self.buf)
        self.filled = 0
        self.transport: asyncio.Transport | None = None
        self.role = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.filled:]

    def buffer_updated(self, nbytes: int) -> None:
        if not self.role:
            self.role = chr(self.buf[0])
            self.hub.joined(self)
            self.view[:nbytes - 1] = self.view[1:nbytes]
            nbytes -= 1
        if self.role == "w":
            self.filled += nbytes
            self.hub.forward(self)

    def pause_writing(self) -> None:  # the reader's socket is full: stop reading the writer
        self.hub.pause()

    def resume_writing(self) -> None:
        self.hub.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.lost(self)


class _FloorHub:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.writer: _Forward | None = None
        self.reader: _Forward | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.reader_joined = asyncio.Event()

    def joined(self, side: _Forward) -> None:
        if side.role == "r":
            self.reader = side
            self.reader_joined.set()
            side.transport.set_write_buffer_limits(1 << 20, 256 << 10)  # type: ignore[union-attr]
        else:
            self.writer = side
            if self.reader is None:
                side.transport.pause_reading()  # type: ignore[union-attr]
        if self.reader is not None and self.writer is not None:
            self.writer.transport.resume_reading()  # type: ignore[union-attr]

    def forward(self, w: _Forward) -> None:
        assert self.reader is not None and self.reader.transport is not None
        out = self.reader.transport
        if self.kind == "bytes":
            out.write(w.view[:w.filled])  # the transport copies what it cannot send at once
            w.filled = 0
            return
        buf, view, filled, at = w.buf, w.view, w.filled, 0
        parts: list[bytes] = []
        while filled - at >= 14:
            length = buf[at + 1] & 0x7F
            head = 2
            if length == 126:
                length, head = int.from_bytes(buf[at + 2:at + 4], "big"), 4
            elif length == 127:
                length, head = int.from_bytes(buf[at + 2:at + 10], "big"), 10
            end = at + head + 4 + length
            if end > filled:
                break
            parts.append(_FLOOR_HEAD(0x82, 127, length))
            parts.append(_floor_mask(view[at + head + 4:end], bytes(view[at + head:at + head + 4])))
            at = end
        if parts:
            out.write(b"".join(parts))
        if at:
            view[:filled - at] = view[at:filled]
            w.filled = filled - at

    def pause(self) -> None:
        if self.writer is not None and self.writer.transport is not None:
            self.writer.transport.pause_reading()

    def resume(self) -> None:
        if self.writer is not None and self.writer.transport is not None:
            self.writer.transport.resume_reading()

    def lost(self, side: _Forward) -> None:
        if side is self.writer and self.reader is not None and self.reader.transport is not None:
            self.reader.transport.close()
        elif side is self.reader and not self.done.done():
            self.done.set_result(None)


_FLOOR_HEAD = struct.Struct("!BBQ").pack
try:
    from websockets.speedups import apply_mask as _floor_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask as _floor_mask


async def floor(kind: str, size: int) -> float:
    """MB/s of ``size`` bytes through a floor forwarder; its CPU per GiB goes to ``CPU["floor_<kind>"]``."""
    hub = _FloorHub(kind)
    server = await asyncio.get_running_loop().create_server(lambda: _Forward(hub), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    start = time.perf_counter()
    reader = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOR_READER, str(port), str(size), stdout=asyncio.subprocess.PIPE)
    await hub.reader_joined.wait()
    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", FLOOR_WRITER, str(port), str(size), kind)
    cpu = time.process_time()  # after the spawns: the writer sends nothing before its interpreter started
    out, _ = await reader.communicate()
    await writer.wait()
    await hub.done
    cpu = time.process_time() - cpu
    seconds = time.perf_counter() - start
    server.close()
    expected = size + (size // 65536 * 10 if kind == "frames" else 0)
    assert int(out) == expected, (int(out), expected)
    CPU[f"floor_{kind}"].append(cpu * 1000 * (1 << 30) / size)
    return size / seconds / 1e6


# ---------------------------------------------------------------------------------------- the writer's floor
# What a channel writer process cannot go below on this machine: a bare socket (no asyncio, no websockets) that
# does the upgrade by hand and sends frames of the size the engine invites, masked once before the clock starts
# (so neither masking nor any per-frame Python is in it), then a Close, through our engine to our reader process.
# CPU of that process from its connect to the end of the closing handshake, as the writers' rows: "floor_writer".
# The rest of a writer's CPU is the kernel's (on loopback it also runs the engine's side of TCP receive); masking
# costs ~20 ms per GiB more (websockets' C apply_mask).

FLOOR_CHANNEL_WRITER = r"""
import json, os, socket, struct, sys, time
from urllib.parse import urlsplit
from websockets.speedups import apply_mask
url, size = urlsplit(sys.argv[1]), int(sys.argv[2])
c0 = time.process_time()
s = socket.create_connection((url.hostname, url.port))
s.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
          "\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(4096)
assert head.startswith(b"HTTP/1.1 101"), head
invited = [line.split(b":", 1)[1] for line in head.split(b"\r\n")
           if line.lower().startswith(b"x-iii-channel-frame-size:")]
frame_size = int(invited[0]) if invited else 65536
key = os.urandom(4)
def frame(n):
    return struct.pack("!BBQ", 0x82, 0x80 | 127, n) + key + apply_mask(b"f" * n, key)
c1 = time.process_time()
full = frame(frame_size)
masking = time.process_time() - c1
for _ in range(size // frame_size):
    s.sendall(full)
if size % frame_size:
    s.sendall(frame(size % frame_size))
s.sendall(b"\x88\x82" + key + apply_mask(b"\x03\xe8", key))
while s.recv(65536):
    pass
s.close()
print(json.dumps({"cpu": time.process_time() - c0 - masking}))
"""


async def floor_writer(engine: Engine, size: int) -> float:
    """MB/s of ``size`` bytes from a bare socket writer through ``engine`` to our reader process; the writer's CPU
    per GiB goes to ``CPU["floor_writer"]``."""
    refs = engine.channels.create(None, owner=None)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reader = await asyncio.create_subprocess_exec(
        sys.executable, "-P", "-c", REF_SCRIPT, "read", engine.url, json.dumps(refs["reader"]), str(size),
        stdout=asyncio.subprocess.PIPE, env=env)
    url = build_channel_url(engine.url, refs["writer"]["channel_id"], refs["writer"]["access_key"], "write")
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOR_CHANNEL_WRITER, url, str(size), stdout=asyncio.subprocess.PIPE)
    (out, _), (writer_out, _) = await asyncio.gather(reader.communicate(), writer.communicate())
    result = json.loads(out)
    assert result["bytes"] == size, result
    CPU["floor_writer"].append(json.loads(writer_out)["cpu"] * 1000 * (1 << 30) / size)
    return float(size / result["seconds"] / 1e6)


# ---------------------------------------------------------------------------------------------- receive alone
# The relay's receive half by itself: a writer process that does the WebSocket upgrade by hand, then blasts
# pre-masked binary frames (64 KiB, or 1 MiB like an invited writer) as fast as the socket takes them; this process
# receives them through our fast server connection (iii.ws_fastpath: FrameReader, unmasking, the inbox) and only
# counts them. CPU per GiB of this process, from the first message to the last: "recv" (1 MiB frames) and
# "recv@64k".

RECV_WRITER = r"""
import os, socket, struct, sys
port, size, frame = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"GET /recv HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(4096)
assert head.startswith(b"HTTP/1.1 101"), head
from websockets.speedups import apply_mask
per = max(1, (1 << 20) // frame)
block = b"".join(struct.pack("!BBQ", 0x82, 0x80 | 127, frame) + key + apply_mask(b"v" * frame, key)
                 for key in (os.urandom(4) for _ in range(per)))
for _ in range(size // (per * frame)):
    s.sendall(block)
s.sendall(b"\x88\x80" + os.urandom(4))
s.recv(16)
s.close()
"""


async def receive_only(size: int, frame: int, key: str) -> float:
    """MB/s of ``size`` bytes in ``frame``-byte frames received (and dropped) by this process; CPU per GiB to
    ``CPU[key]``."""
    from iii import ws_fastpath

    done: asyncio.Future[tuple[int, float, float]] = asyncio.get_running_loop().create_future()

    def fast(connection: ServerConnection, request: object) -> None:
        ws_fastpath.enable_fast_receive(connection)

    async def handler(ws: ServerConnection) -> None:
        n, start, cpu = 0, 0.0, 0.0
        receive = ws_fastpath.receiver(ws)
        try:
            while True:
                _, payload = await receive()
                if not n:
                    start, cpu = time.perf_counter(), time.process_time()
                n += len(payload)
        except websockets.ConnectionClosed:
            pass
        done.set_result((n, time.perf_counter() - start, time.process_time() - cpu))

    async with serve(handler, "127.0.0.1", 0, create_connection=ws_fastpath.server_factory(),
                     process_request=fast, **OPTS) as server:  # type: ignore[arg-type]
        port = server.sockets[0].getsockname()[1]
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", RECV_WRITER, str(port), str(size), str(frame))
        n, seconds, cpu = await done
        await writer.wait()
    assert n == size, (n, size)
    CPU[key].append(cpu * 1000 * (1 << 30) / size)
    return size / seconds / 1e6


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def memory(size: int, slow_ms: float) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    engine = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "iii_engine", "--port", "0", "--host", "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env)
    assert engine.stdout is not None
    while True:
        line = (await engine.stdout.readline()).decode()
        if line.startswith("iii engine listening on "):
            url = line.split("on ", 1)[1].strip()
            break
    try:
        client = III(url)
        await client.connect_async()
        channel = await client.create_channel_async()
        base_rss = rss_kib(engine.pid, "VmRSS")
        peak = base_rss
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER_SCRIPT, url, channel.writer_ref.model_dump_json(), str(size), str(ROOT),
            stdout=asyncio.subprocess.PIPE, env=env)
        n = 0
        async for chunk in channel.reader:
            n += len(chunk)
            await asyncio.sleep(slow_ms / 1000)  # the deliberately slow reader
            if n % (16 << 20) < FRAME:
                peak = max(peak, rss_kib(engine.pid, "VmRSS"))
        out, _ = await writer.communicate()
        peak = max(peak, rss_kib(engine.pid, "VmHWM"))
        await client.shutdown_async()
        assert n == size, (n, size)
        return {"engine_base_mib": base_rss / 1024, "engine_growth_mib": (peak - base_rss) / 1024,
                "writer_peak_mib": int(out.decode().strip()) / 1024}
    finally:
        engine.kill()
        await engine.wait()


def _summary(values: list[float]) -> str:
    return f"median {statistics.median(values):7.0f}   spread {min(values):5.0f}-{max(values):<5.0f}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mem-size-mib", type=int, default=1024)
    parser.add_argument("--slow-ms", type=float, default=1.0)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--only", default="raw,ours,ours_proc,ref_proc,floor_bytes,floor_frames",
                        help="comma-separated contenders among raw, ours, ours_proc, ref_proc, floor_bytes, "
                             "floor_frames, floor_writer (a bare socket writer: what a writer process cannot go "
                             "below), recv (the relay's receive half alone; with --frames 64k, recv@64k: 64 KiB "
                             "frames)")
    parser.add_argument("--frames", default="invited",
                        help="comma-separated frame sizes our writer runs with: invited (the engine's invitation), "
                             "64k (an engine inviting 64 KiB frames, as before the extension)")
    parser.add_argument("--compare", metavar="DIR",
                        help="another checkout (e.g. a git worktree of the base commit): each round runs this "
                             "checkout's code and DIR's, each in a fresh process, in alternating order, and prints "
                             "both reports and this/DIR ratios of the medians with per-round spread (no memory run)")
    parser.add_argument("--warmup-mib", type=int, default=0,
                        help="run every contender once on this many MiB before measuring (not counted); "
                             "--compare's fresh child processes use 16 unless given")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a --compare child's output
    return parser


def _wanted(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    frames = [name for name in args.frames.split(",") if name]
    if not set(frames) <= {"invited", "64k"}:
        parser.error(f"--frames takes invited and/or 64k, got {args.frames!r}")
    base = [name for name in args.only.split(",") if name]
    if not os.path.exists(REF_PYTHON):
        base = [name for name in base if name != "ref_proc"]
    return [f"{name}@64k" if frame == "64k" else name for name in base
            for frame in (frames if name in ("ours", "ours_proc", "recv") else ["invited"])]


async def _run_rounds(args: argparse.Namespace, wanted: list[str]) -> dict[str, list[float]]:
    """MB/s per contender per round (CPU per GiB goes to :data:`CPU`)."""
    size = args.size_mib << 20
    results: dict[str, list[float]] = {name: [] for name in wanted}
    config = EngineConfig(host="127.0.0.1", port=0, modules=[])
    config_64k = EngineConfig(host="127.0.0.1", port=0, modules=[],
                              channels=ChannelSettings(max_message_size=64 * 1024))
    async with Engine(config=config) as engine, Engine(config=config_64k) as engine_64k:
        def contenders(size: int) -> dict[str, Callable[[], Awaitable[float | None]]]:
            return {
                "raw": lambda: raw_relay(size),
                "ours": lambda: ours(engine, size),
                "ours@64k": lambda: ours(engine_64k, size, "ours@64k"),
                "ours_proc": lambda: reference(engine, size, sys.executable),
                "ours_proc@64k": lambda: reference(engine_64k, size, sys.executable, "ours@64k"),
                "ref_proc": lambda: reference(engine, size),
                "floor_bytes": lambda: floor("bytes", size),
                "floor_frames": lambda: floor("frames", size),
                "floor_writer": lambda: floor_writer(engine, size),
                "recv": lambda: receive_only(size, 1 << 20, "recv_1m"),
                "recv@64k": lambda: receive_only(size, 64 << 10, "recv_64k"),
            }

        if args.warmup_mib:
            # A fresh process's first run pays for lazy imports, the allocator's first pages and cold caches.
            warm = contenders(args.warmup_mib << 20)
            for name in wanted:
                await warm[name]()
            for values in CPU.values():
                values.clear()
        runs = contenders(size)
        # Short runs of every contender, interleaved and rotated each round, so that load from other work on
        # the machine hits all of them alike; the medians (and per-round ratios) are then stable.
        for round_no in range(args.rounds):
            order = wanted[round_no % len(wanted):] + wanted[:round_no % len(wanted)]
            for name in order:
                value = await runs[name]()
                assert value is not None
                results[name].append(value)
            if not args.json:
                print(f"round {round_no + 1}: " + "  ".join(f"{n} {results[n][-1]:.0f}" for n in wanted),
                      flush=True)
    return results


def _report(args: argparse.Namespace, wanted: list[str], results: dict[str, list[float]],
            cpu: dict[str, list[float]]) -> None:
    labels = {"raw": "raw two-hop relay", "ours": "ours in-process", "ours_proc": "ours, processes",
              "ref_proc": "reference, processes", "floor_bytes": "floor: byte forwarder",
              "floor_frames": "floor: frame forwarder", "floor_writer": "floor: bare socket writer",
              "recv": "receive alone"}
    print(f"{len(next(iter(results.values()), []))} rounds x {args.size_mib} MiB, MB/s:")
    for name in wanted:
        if name not in results:  # a contender the other checkout could not run (--compare)
            continue
        label = labels[name.split("@")[0]] + (" @64k" if name.endswith("@64k") else "")
        print(f"  {label:<28}{_summary(results[name])}")

    def paired(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(results[a], results[b], strict=True)]

    for suffix in ("", "@64k"):
        if "raw" in results and f"ours{suffix}" in results:
            ratios = paired(f"ours{suffix}", "raw")
            print(f"ours{suffix} in-process / raw: median {statistics.median(ratios):.1%} "
                  f"(rounds {min(ratios):.0%}-{max(ratios):.0%}; goal >= 150%)")
        if f"ours_proc{suffix}" in results and "ref_proc" in results:
            ratios = paired(f"ours_proc{suffix}", "ref_proc")
            print(f"ours{suffix} / reference (processes): median {statistics.median(ratios):.2f}x "
                  f"(rounds {min(ratios):.2f}-{max(ratios):.2f}; goal >= 2)")
    if "ours_proc" in results and "ours_proc@64k" in results:
        ratios = paired("ours_proc", "ours_proc@64k")
        print(f"ours invited / ours @64k (processes): median {statistics.median(ratios):.2f}x "
              f"(rounds {min(ratios):.2f}-{max(ratios):.2f})")
    labels_cpu = {"write": "writer process", "read": "reader process", "relay": "engine (relay) process",
                  "inproc": "in-process run (writer + relay + reader)",
                  "bytes": "bare byte forwarder (BufferedProtocol)", "frames": "frame forwarder (C unmask)",
                  "writer": "bare socket writer, pre-masked frames",
                  "1m": "receive alone, 1 MiB frames", "64k": "receive alone, 64 KiB frames"}
    print("CPU per GiB (ms; medians, spread):")
    for key, values in cpu.items():
        if values:
            sdk, what = key.split("_")
            print(f"  {sdk:<9}{labels_cpu[what]:<42}{_summary(values)}")
    for sdk in ("ours", "ours@64k"):
        for end in ("write", "read"):
            if cpu.get(f"{sdk}_{end}") and cpu.get(f"ref_{end}"):
                ratio = statistics.median(cpu[f"{sdk}_{end}"]) / statistics.median(cpu[f"ref_{end}"])
                print(f"  {sdk} / reference CPU per GiB, {end} end: {ratio:.2f} (goal <= 0.60)")
    if cpu.get("floor_writer") and cpu.get("ref_write"):
        ratio = statistics.median(cpu["floor_writer"]) / statistics.median(cpu["ref_write"])
        print(f"  floor / reference CPU per GiB, write end: {ratio:.2f} (no writer process goes below)")


async def _compare(args: argparse.Namespace, wanted: list[str], other: Path) -> None:
    """Rounds alternating this checkout's code and ``other``'s, each a fresh child process of this script
    (``III_BENCH_ROOT`` picks the code), then both reports and this/other ratios of every median."""
    trees = {"this": ROOT, "other": other}
    data: dict[str, dict[str, dict[str, list[float]]]] = {
        label: {"results": {}, "cpu": {}} for label in trees}
    child_args = ["--rounds", "1", "--size-mib", str(args.size_mib), "--only", args.only, "--frames", args.frames,
                  "--warmup-mib", str(args.warmup_mib or 16), "--skip-memory", "--json"]
    for round_no in range(args.rounds):
        order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
        line = []
        for label in order:
            env = {**os.environ, "III_BENCH_ROOT": str(trees[label])}
            child = await asyncio.create_subprocess_exec(
                sys.executable, SCRIPT, *child_args, stdout=asyncio.subprocess.PIPE, env=env)
            out, _ = await child.communicate()
            if child.returncode:
                raise SystemExit(f"round {round_no + 1} of {trees[label]} failed (exit {child.returncode})")
            got = json.loads(out.decode().strip().splitlines()[-1])
            for kind in ("results", "cpu"):
                for key, values in got[kind].items():
                    data[label][kind].setdefault(key, []).extend(values)
            line.append(f"{label}: " + " ".join(f"{k} {v[-1]:.0f}" for k, v in got["cpu"].items() if v))
        print(f"round {round_no + 1} (CPU ms/GiB)  " + "  |  ".join(line), flush=True)
    for label, tree in trees.items():
        print(f"\n=== {label}: {tree}")
        _report(args, wanted, data[label]["results"], data[label]["cpu"])
    print("\n=== this / other (medians; per-round ratios of rounds run side by side in brackets):")
    for kind, unit in (("cpu", "CPU per GiB"), ("results", "MB/s")):
        for key, mine in data["this"][kind].items():
            theirs = data["other"][kind].get(key)
            if not mine or not theirs:
                continue
            rounds = [a / b for a, b in zip(mine, theirs, strict=False)]
            print(f"  {unit:<12}{key:<16}{statistics.median(mine) / statistics.median(theirs):6.3f}   "
                  f"[{min(rounds):.3f}-{max(rounds):.3f}]")


async def run(args: argparse.Namespace, wanted: list[str], other: Path | None) -> None:
    if other is not None:
        await _compare(args, wanted, other)
        return
    results = await _run_rounds(args, wanted)
    if args.json:
        print(json.dumps({"results": results, "cpu": CPU}))
        return
    _report(args, wanted, results, CPU)
    if not args.skip_memory:
        mem = await memory(args.mem_size_mib << 20, args.slow_ms)
        print(f"slow reader, {args.mem_size_mib} MiB: engine base {mem['engine_base_mib']:.0f} MiB, "
              f"growth {mem['engine_growth_mib']:.1f} MiB (goal < 64), writer peak {mem['writer_peak_mib']:.0f} MiB")


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    wanted = _wanted(args, parser)
    other = None
    if args.compare:
        other = Path(args.compare).resolve()
        if not (other / "iii" / "ws_fastpath.py").is_file():
            parser.error(f"--compare {args.compare}: not a checkout of this project (no iii/ws_fastpath.py)")
    asyncio.run(run(args, wanted, other))


if __name__ == "__main__":
    main()
