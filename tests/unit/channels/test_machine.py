"""The relay's state machine, driven with events alone: no sockets, tasks or clocks (issue #9)."""

from __future__ import annotations

import pytest

from iii.channel_end import ChannelCloseCode as Code
from iii_engine.channels.machine import ChannelMachine, Close, Drop, EndState, Side, Step
from iii_engine.channels.policy import OURS, PRODUCTION, RelayPolicy


def attached(policy: RelayPolicy = OURS, **kw: int) -> ChannelMachine:
    machine = ChannelMachine("c", capacity=kw.pop("capacity", 4), policy=policy, **kw)
    assert machine.attach(Side.WRITER) is None and machine.attach(Side.READER) is None
    return machine


def drain(machine: ChannelMachine) -> list[object]:
    """Every reader step until the machine says close, stop or wait."""
    steps: list[object] = []
    while True:
        step = machine.reader_step()
        steps.append(step)
        if not isinstance(step, tuple):
            return steps


@pytest.mark.parametrize("policy", [OURS, PRODUCTION], ids=["ours", "production"])
def test_messages_in_order_then_eof_after_the_last(policy: RelayPolicy) -> None:
    machine = attached(policy)
    for message in (b"a", b"b", b"c"):
        assert machine.writer_message(False, message) is None
    assert machine.writer_message(True, b"meta") is None
    machine.writer_closed(1000, "")
    assert machine.eof and not machine.delivered
    steps = drain(machine)
    assert steps[:4] == [(False, b"a"), (False, b"b"), (False, b"c"), (True, b"meta")]
    assert steps[4] == Close(Side.READER, policy.wire_code(Code.NORMAL), "")
    assert machine.delivered


def test_queue_full_by_count_and_by_bytes_and_half_empty_resumes() -> None:
    machine = attached(capacity=4, max_queued_bytes=1000)
    for _ in range(4):
        machine.writer_message(False, b"x")
    assert machine.full and not machine.half_empty
    machine.reader_step()
    machine.reader_step()
    assert not machine.full and machine.half_empty
    by_bytes = attached(capacity=64, max_queued_bytes=1000)
    by_bytes.writer_message(False, b"y" * 1000)
    assert by_bytes.full and by_bytes.peak_bytes == 1000 and by_bytes.peak_items == 1


def test_writer_abort_is_visible_to_the_reader_in_our_behaviour_only() -> None:
    ours = attached(OURS)
    ours.writer_message(False, b"partial")
    ours.writer_closed(4001, "boom")
    assert drain(ours) == [Close(Side.READER, Code.WRITER_ABORTED, "writer closed with code 4001: boom")]
    prod = attached(PRODUCTION)
    prod.writer_message(False, b"partial")
    prod.writer_closed(None, "")  # dropped: production ends the stream normally, after the data
    assert drain(prod) == [(False, b"partial"), Close(Side.READER, None, "")]


def test_a_dropped_writer_or_a_crashed_loop_aborts() -> None:
    dropped = attached()
    dropped.writer_closed(None, "")
    assert dropped.failure == (Code.WRITER_ABORTED, "writer connection dropped")
    crashed = attached()
    crashed.writer_done()
    assert crashed.failure == (Code.WRITER_ABORTED, "writer ended unexpectedly")
    assert crashed.writer_state is EndState.DONE


@pytest.mark.parametrize("policy", [OURS, PRODUCTION], ids=["ours", "production"])
def test_oversize_and_invalid_text_close_the_writer_with_their_code(policy: RelayPolicy) -> None:
    big = attached(policy, max_message_size=10)
    assert big.writer_message(False, b"x" * 11) == Close(Side.WRITER, Code.TOO_BIG, "message exceeds 10 bytes")
    bad = attached(policy)
    assert bad.writer_message(True, b"\xff\xfe") == Close(Side.WRITER, Code.INVALID_DATA, "invalid UTF-8")
    for machine in (big, bad):
        last = drain(machine)[-1]
        expected = Code.WRITER_ABORTED if policy.writer_abort_visible else None
        assert isinstance(last, Close) and last.code == expected


def test_quota_applies_in_our_behaviour_only() -> None:
    ours = attached(OURS, max_bytes=5)
    assert ours.writer_message(False, b"12345") is None
    refused = ours.writer_message(False, b"6")
    assert refused == Close(Side.WRITER, Code.TOO_BIG, "channel byte quota of 5 exceeded")
    assert ours.failure is not None and "quota" in ours.failure[1]
    prod = attached(PRODUCTION, max_bytes=5)
    assert prod.max_bytes is None and prod.writer_message(False, b"123456") is None


def test_reader_leaving_drops_the_queue_and_tells_the_writer() -> None:
    ours = attached(OURS)
    ours.writer_message(False, b"unread")
    assert ours.reader_left() == Close(Side.WRITER, Code.READER_GONE, "reader gone")
    assert ours.stopped and not ours.items and ours.reader_step() is Step.STOP
    assert ours.writer_message(False, b"late") is None and not ours.items  # dropped while the writer stops
    assert ours.stop_writer() == Close(Side.WRITER, Code.READER_GONE, "reader gone")
    assert ours.reader_left() is None  # once
    prod = attached(PRODUCTION)
    assert prod.reader_left() is None
    assert prod.stop_writer() == Drop(Side.WRITER)


def test_reader_done_before_the_end_counts_as_leaving() -> None:
    machine = attached()
    machine.writer_message(False, b"x")
    assert machine.reader_done() == Close(Side.WRITER, Code.READER_GONE, "reader gone")
    finished = attached()
    finished.writer_closed(1000, "")
    drain(finished)
    assert finished.reader_done() is None
    finished.writer_done()
    assert finished.finished


def test_second_attach_is_refused_with_4009() -> None:
    machine = attached(OURS)
    assert machine.attach(Side.READER) == Close(Side.READER, Code.IN_USE, "channel read end is already attached")
    prod = attached(PRODUCTION)
    assert prod.attach(Side.WRITER) == Close(Side.WRITER, None, "channel write end is already attached")


def test_expiry_only_before_both_ends_attached() -> None:
    lonely = ChannelMachine("c", capacity=4)
    lonely.attach(Side.WRITER)
    expired, action = lonely.expire()
    assert expired and action == Close(Side.WRITER, Code.EXPIRED, "channel expired: the reader never connected")
    assert lonely.stop_writer() == Close(Side.WRITER, Code.EXPIRED, "channel expired")
    reader_only = ChannelMachine("c", capacity=4)
    reader_only.attach(Side.READER)
    assert reader_only.expire() == (True, None)
    assert reader_only.reader_step() == Close(Side.READER, Code.EXPIRED, "channel expired: the writer never connected")
    assert attached().expire() == (False, None)


def test_discard_and_shutdown_close_attached_ends() -> None:
    machine = attached()
    machine.writer_message(False, b"x")
    assert machine.discard() == [Close(Side.WRITER, Code.READER_GONE, "channel discarded"),
                                 Close(Side.READER, Code.WRITER_ABORTED, "channel discarded")]
    assert not machine.items and machine.stop_writer() == Close(Side.WRITER, Code.READER_GONE, "channel discarded")
    going = attached(PRODUCTION)
    assert going.shutdown() == [Close(Side.WRITER, None, "engine shutting down"),
                                Close(Side.READER, None, "engine shutting down")]
    assert ChannelMachine("c", capacity=1).shutdown() == []
