"""Attack A-T: telemetry frames waiting for a sink are bounded in bytes, not only in count (a frame may be up to
MAX_FRAME_BYTES, so 1000 of them could be 4 GiB)."""

from __future__ import annotations

import logging

import pytest

from iii.telemetry_exporters import PREFIX_SPANS, SharedEngineConnection


def test_buffered_frames_are_bounded_in_bytes_newest_kept(caplog: pytest.LogCaptureFixture) -> None:
    connection = SharedEngineConnection()
    payloads = [bytes([i]) * (3 * 1024 * 1024) for i in range(10)]
    with caplog.at_level(logging.WARNING, logger="iii.telemetry_exporters"):
        for payload in payloads:
            connection.send_threadsafe(PREFIX_SPANS, payload)
    got: list[bytes] = []
    connection.attach(got.append)
    assert sum(len(frame) for frame in got) <= 16 * 1024 * 1024
    assert got == [PREFIX_SPANS + payload for payload in payloads[-5:]]
    assert connection._dropped == 5
    assert "telemetry buffer full" in caplog.text


def test_frames_bounced_by_a_detached_sink_count_against_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = SharedEngineConnection()
    monkeypatch.setattr(connection, "MAX_QUEUE", 3)
    connection._call_sink([b"a", b"b", b"c", b"d", b"e"])  # delivered while the sink was being detached
    got: list[bytes] = []
    connection.attach(got.append)
    assert got == [b"c", b"d", b"e"]
    assert connection._dropped == 2
