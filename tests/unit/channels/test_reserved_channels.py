"""Channels created with ``owner=None`` stay reserved (ids and keys only) until something attaches: a channel
nobody opens costs no machine, queue or task, and expires through the shared deadline sweep; one that is opened
behaves as if it had been live all along (same keys, deadline, fill, limits)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from iii.channels import build_channel_url
from iii_engine.channels import ChannelRefused, ChannelRelay, TooManyChannels, registry
from iii_engine.channels.registry import _new_ids

from .test_fill import OPTS, fill, read_socket


def open_local(relay: ChannelRelay, ref: dict[str, str]) -> Any:
    return relay.open_local(ref["channel_id"], ref["access_key"], ref["direction"])


async def test_an_unopened_channel_is_only_reserved_and_leaves_with_discard() -> None:
    relay = ChannelRelay()
    refs = relay.create(8, owner=None)
    channel_id = refs["reader"]["channel_id"]
    fill(relay, refs["writer"], b"body")
    assert channel_id in relay and len(relay) == 1 and not relay._channels and not relay._tasks
    assert relay.check(channel_id, refs["reader"]["access_key"], "read") is None
    assert relay.check(channel_id, refs["writer"]["access_key"], "read") == (404, "Channel not found")
    relay.discard(channel_id)
    assert len(relay) == 0 and channel_id not in relay and not relay._pending
    await asyncio.wait_for(relay.wait_idle(), 1)


async def test_a_reserved_channel_expires_at_its_deadline_and_then_refuses_attaches() -> None:
    relay = ChannelRelay(attach_timeout_s=0.05)
    refs = relay.create(None, owner=None)
    ref = refs["reader"]
    await asyncio.wait_for(relay.wait_idle(), 5)  # the shared sweep removed it
    assert relay.check(ref["channel_id"], ref["access_key"], "read") == (404, "Channel not found")
    with pytest.raises(ChannelRefused):
        relay.open_local(ref["channel_id"], ref["access_key"], "read")


async def test_a_filled_reserved_channel_reaches_a_socket_reader(relay: tuple[str, ChannelRelay]) -> None:
    base, live = relay
    refs = live.create(2, owner=None)
    fill(live, refs["writer"], b"abcdefghij", 4)
    got, code = await read_socket(base, refs["reader"])
    assert got == [b"abcd", b"efgh", b"ij"] and code == 1000
    await asyncio.wait_for(live.wait_idle(), 5)


async def test_a_second_fill_or_writer_of_a_filled_reserved_channel_is_refused(
        relay: tuple[str, ChannelRelay]) -> None:
    base, live = relay
    refs = live.create(None, owner=None)
    fill(live, refs["writer"], b"x")
    with pytest.raises(ChannelRefused) as refused:
        fill(live, refs["writer"], b"y")
    assert refused.value.status == 409
    ref = refs["writer"]
    async with websockets.connect(build_channel_url(base, ref["channel_id"], ref["access_key"], "write"),
                                  **OPTS) as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4009
    got = [message async for message in open_local(live, refs["reader"])]
    assert got == [b"x"]


async def test_a_reserved_channel_keeps_its_deadline_once_live() -> None:
    relay = ChannelRelay(attach_timeout_s=0.3)
    refs = relay.create(None, owner=None)
    loop = asyncio.get_running_loop()
    created = loop.time()
    await asyncio.sleep(0.1)
    reader = open_local(relay, refs["reader"])  # live now; its writer never comes
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(reader.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003  # expired
    assert 0.25 <= loop.time() - created < 2  # the deadline counted from creation, not from going live


async def test_when_live_runs_once_as_a_socket_writer_attaches_and_may_attach_the_reader(
        relay: tuple[str, ChannelRelay]) -> None:
    base, live = relay
    refs = live.create(None, owner=None)
    channel_id = refs["reader"]["channel_id"]
    readers: list[Any] = []

    def opened() -> None:  # as the REST API module does: its own reader attaches first
        readers.append(open_local(live, refs["reader"]))

    assert live.when_live(channel_id, opened)
    ref = refs["writer"]
    async with websockets.connect(build_channel_url(base, ref["channel_id"], ref["access_key"], "write"),
                                  **OPTS) as ws:
        await ws.send(b"x")
    assert len(readers) == 1
    assert [message async for message in readers[0]] == [b"x"]
    assert not live.when_live(channel_id, opened)  # live (or gone) now: nothing to watch
    assert not live.when_live("no-such-channel", opened)


async def test_max_open_counts_reserved_channels() -> None:
    relay = ChannelRelay(max_open=2)
    relay.create(None, owner=None)
    relay.create(None, owner="w")
    with pytest.raises(TooManyChannels):
        relay.create(None, owner=None)


def test_ids_drawn_from_the_batched_random_bytes_are_distinct() -> None:
    seen: set[str] = set()
    for _ in range(300):  # across several 4 KiB draws
        channel_id, writer_key, reader_key = _new_ids()
        seen.update((channel_id, writer_key, reader_key))
    assert len(seen) == 900


def test_a_forked_child_does_not_hand_out_the_ids_its_parent_has_ready() -> None:
    _new_ids()  # a batch is made and ready
    parents_next = registry._ready_ids[-1]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id must be its own
        os.close(read_fd)
        os.write(write_fd, "|".join(_new_ids()).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        childs_first = tuple(pipe.read().split("|"))
    os.waitpid(pid, 0)
    assert len(childs_first) == 3 and childs_first != parents_next
    assert _new_ids() == parents_next  # the parent's batch is untouched
