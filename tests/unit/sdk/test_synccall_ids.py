"""Invocation ids of a worker's calls: random version-4 UUIDs, drawn from the OS in batches (not one read per
call), distinct, and never shared with a forked child."""

from __future__ import annotations

import os
import uuid

import pytest

from iii.protocol import client
from iii.protocol.client import ClientSession, InvocationIds


def test_calls_read_the_random_source_once_per_batch(monkeypatch: pytest.MonkeyPatch, urandom_reads: list[int]) -> None:
    reads = urandom_reads
    monkeypatch.setattr(client, "new_invocation_id", InvocationIds())
    ids = [ClientSession.new_call("f", None)[0] for _ in range(512)]
    assert len(reads) <= 3  # before: 512 reads of 16 bytes (uuid.uuid4 per call)
    assert len(set(ids)) == 512
    for value in ids:
        assert value is not None
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == value


def test_every_variant_digit_and_version_are_right() -> None:
    ids = InvocationIds()
    seen = {ids()[19] for _ in range(2000)}
    assert seen == set("89ab")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_draws_its_own_ids() -> None:
    ids = client.new_invocation_id
    ids()  # the pool now holds ids drawn in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id must not be the parent's next
        os.close(read)
        os.write(write, ids().encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_id = pipe.read()
    os.waitpid(pid, 0)
    assert child_id and child_id != ids()
