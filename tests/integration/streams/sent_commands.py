"""What a redis-py connection writes, read back from the RESP bytes it sends (the stores pack some commands
themselves, so ``pack_command`` does not see every command; ``send_packed_command`` does).

Example:
    >>> commands(b"*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n*1\\r\\n$4\\r\\nPING\\r\\n")
    [[b'GET', b'k'], [b'PING']]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from redis.asyncio import connection as aioredis_connection

__all__ = ["commands", "record_script_calls"]


def commands(packed: bytes | str | Iterable[bytes]) -> list[list[bytes]]:
    """The commands (each its arguments) in what ``send_packed_command`` was given."""
    data = packed.encode() if isinstance(packed, str) else packed if isinstance(packed, bytes) else b"".join(packed)
    found: list[list[bytes]] = []
    at = 0
    while at < len(data):
        end = data.index(b"\r\n", at)
        assert data[at:at + 1] == b"*", data[at:at + 20]
        count, at = int(data[at + 1:end]), end + 2
        args: list[bytes] = []
        for _ in range(count):
            end = data.index(b"\r\n", at)
            size, at = int(data[at + 1:end]), end + 2
            args.append(data[at:at + size])
            at += size + 2
        found.append(args)
    return found


def record_script_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every ``EVAL``/``EVALSHA`` any connection sends from now on, as its argument count (command included)."""
    calls: list[int] = []
    real_send = aioredis_connection.AbstractConnection.send_packed_command

    async def send(self: aioredis_connection.AbstractConnection, command: Any, *args: Any, **kwargs: Any) -> None:
        for sent in commands(command):
            if sent[0].upper() in (b"EVAL", b"EVALSHA"):
                calls.append(len(sent))
        await real_send(self, command, *args, **kwargs)

    monkeypatch.setattr(aioredis_connection.AbstractConnection, "send_packed_command", send)
    return calls
