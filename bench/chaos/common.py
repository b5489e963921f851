"""Shared pieces of the chaos suite: figures with targets, engine processes, RSS, percentiles, a raw WebSocket.

Everything here talks to 127.0.0.1 only and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
READY_PREFIX = "iii engine listening on "
MIB = 1024 * 1024


@dataclass
class Figure:
    """One measured number and, when it has one, the target it must meet (``ok`` is None for plain figures)."""

    scenario: str
    name: str
    value: float | int | str
    unit: str = ""
    target: str = ""
    ok: bool | None = None
    detail: str = ""


@dataclass
class Report:
    """The figures of one scenario, added in order."""

    scenario: str
    figures: list[Figure] = field(default_factory=list)

    def info(self, name: str, value: float | int | str, unit: str = "", detail: str = "") -> None:
        """Record a figure without a target."""
        self.figures.append(Figure(self.scenario, name, value, unit, "", None, detail))

    def check(self, name: str, value: float | int | str, ok: bool, target: str, unit: str = "",
              detail: str = "") -> None:
        """Record a figure with its target and whether it was met."""
        self.figures.append(Figure(self.scenario, name, value, unit, target, bool(ok), detail))

    def at_most(self, name: str, value: float | int, limit: float | int, unit: str = "", detail: str = "") -> None:
        """Record ``value`` against the target ``value <= limit``."""
        self.check(name, value, value <= limit, f"<= {limit:g}{unit and ' ' + unit}", unit, detail)

    @property
    def failed(self) -> list[Figure]:
        """Figures whose target was not met."""
        return [f for f in self.figures if f.ok is False]

    def as_dicts(self) -> list[dict[str, Any]]:
        """The figures as plain dictionaries (for ``--json``)."""
        return [asdict(f) for f in self.figures]


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0 to 100, nearest rank) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[rank]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` from ``/proc/<pid>/status`` (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def child_env() -> dict[str, str]:
    """The environment for our subprocesses: the checkout first on ``PYTHONPATH``."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


class EngineProcess:
    """An ``iii-engine`` process (``python -m iii_engine``) on a fixed loopback port, its log in a file.

    Example:
        >>> # engine = await EngineProcess.start(log_path, "--port", "0"); engine.url
    """

    def __init__(self, process: asyncio.subprocess.Process, url: str, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.log_path = log_path

    @classmethod
    async def start(cls, log_path: Path, *args: str, ready_within: float = 20.0,
                    probed: bool = False) -> EngineProcess:
        """Start one and wait (at most ``ready_within`` s) for its ready line; ``probed`` runs it under
        :mod:`bench.chaos.engine_probe` (see :meth:`probe`)."""
        module = os.environ.get("III_CHAOS_ENGINE_MODULE", "bench.chaos.engine_probe") if probed else "iii_engine"
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, "--host", HOST, *args,
                stdout=asyncio.subprocess.PIPE, stderr=log, env=child_env(), cwd=ROOT)
        assert proc.stdout is not None
        deadline = time.monotonic() + ready_within
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = (await asyncio.wait_for(proc.stdout.readline(), max(0.01, remaining))).decode()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise RuntimeError(f"iii-engine not ready after {ready_within} s; log {log_path}") from None
            if not line:
                code = await proc.wait()
                raise RuntimeError(f"iii-engine exited with {code} before it was ready: {_tail(log_path)}")
            if line.startswith(READY_PREFIX):
                return cls(proc, line[len(READY_PREFIX):].strip(), log_path)

    async def probe(self, within: float = 10.0) -> dict[str, Any]:
        """The probe's figures since the previous call (engines started with ``probed=True`` only)."""
        from .engine_probe import PREFIX

        if os.environ.get("III_CHAOS_TRACEMALLOC") == "1":
            within = max(within, 300.0)  # a snapshot of the whole heap takes a while
        assert self.process.stdout is not None
        self.process.send_signal(signal.SIGUSR1)
        async with asyncio.timeout(within):
            while line := (await self.process.stdout.readline()).decode():
                if line.startswith(PREFIX):
                    result: dict[str, Any] = json.loads(line[len(PREFIX):])
                    return result
        raise RuntimeError(f"the engine ended before its probe answered: {self.log_tail(5)}")

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.returncode is None

    def rss(self) -> int:
        """Its resident set size in bytes."""
        return rss_bytes(self.pid) if self.alive else 0

    async def kill(self) -> None:
        """SIGKILL it and reap it."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self, within: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``within`` s; returns the exit status."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), within)
            except TimeoutError:
                await self.kill()
        return self.process.returncode

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its log."""
        return _tail(self.log_path, lines)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------- a raw WebSocket


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """One client WebSocket frame (masked, as RFC 6455 requires of clients unless ``mask`` is False)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    if n > 1 << 16:
        return head + b"\0\0\0\0" + payload  # an all-zero key is legal and spares masking megabytes
    key = secrets.token_bytes(4)
    return head + key + _mask(payload, key)


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


class RawWebSocket:
    """A hand-made client connection that can send anything, read or not read, and reset the TCP connection.

    ``drain=True`` starts a task that reads and discards everything the server sends (a polite attacker);
    ``drain=False`` never reads (the non-reading client).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = 0
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, path: str = "/", *, drain: bool = True, connect_within: float = 5.0,
                      rcvbuf: int | None = None) -> RawWebSocket:
        """Open a connection to 127.0.0.1:``port`` and complete the upgrade (bounded by ``connect_within``)."""
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (HOST, port)), connect_within)
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        except BaseException:
            sock.close()
            raise
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), connect_within)
        except BaseException:
            writer.transport.abort()
            raise
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            writer.transport.abort()
            raise ConnectionError(f"upgrade refused: {status!r}")
        ws = cls(reader, writer)
        if drain:
            ws._drain = asyncio.create_task(ws._discard())
        return ws

    async def _discard(self) -> None:
        with contextlib.suppress(Exception):
            while chunk := await self.reader.read(1 << 16):
                self.received += len(chunk)

    def send_raw(self, data: bytes) -> None:
        """Queue raw bytes (need not be a valid frame)."""
        self.writer.write(data)

    def send_text(self, text: str | bytes) -> None:
        """Queue one text frame (``bytes`` are sent as they are, valid UTF-8 or not)."""
        self.writer.write(ws_frame(0x1, text.encode() if isinstance(text, str) else text))

    def send_binary(self, data: bytes) -> None:
        """Queue one binary frame."""
        self.writer.write(ws_frame(0x2, data))

    async def flush(self, within: float) -> bool:
        """Wait until the socket took the queued bytes; False when that did not happen within ``within`` s."""
        try:
            await asyncio.wait_for(self.writer.drain(), within)
            return True
        except TimeoutError:
            return False

    @property
    def closed_by_peer(self) -> bool:
        """Whether the server closed the connection (only known with ``drain=True``)."""
        return self._drain is not None and self._drain.done()

    def reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0), no close handshake."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        if self._drain is not None:
            self._drain.cancel()

    async def close(self) -> None:
        """Send a Close frame and shut the connection (bounded)."""
        with contextlib.suppress(Exception):
            self.writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
            await asyncio.wait_for(self.writer.drain(), 1.0)
        self.writer.transport.abort()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(BaseException):
                await self._drain
