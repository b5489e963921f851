"""The count of telemetry frames the connection's buffer dropped was private (``SharedEngineConnection._dropped``):
a worker could see the warning but not read the number. It is ``dropped_frames`` now."""

from __future__ import annotations

from iii import OtelConfig, telemetry
from iii.telemetry_exporters import PREFIX_LOGS, SharedEngineConnection


def test_the_frames_the_buffer_dropped_are_counted_where_a_caller_can_read_them() -> None:
    connection = SharedEngineConnection()  # no sink yet: frames wait in the buffer
    for _ in range(SharedEngineConnection.MAX_QUEUE + 5):
        connection.send_threadsafe(PREFIX_LOGS, b"{}")
    assert connection.dropped_frames == 5
    got: list[bytes] = []
    connection.attach(got.append)
    assert len(got) == SharedEngineConnection.MAX_QUEUE and connection.dropped_frames == 5


def test_the_clients_connection_is_reachable_while_telemetry_is_on() -> None:
    telemetry.shutdown_otel()
    try:
        telemetry.init_otel(OtelConfig(enabled=True, service_name="drops", fetch_instrumentation_enabled=False,
                                       metrics_enabled=False))
        connection = telemetry.runtime().connection
        assert connection is not None and connection.dropped_frames == 0
    finally:
        telemetry.shutdown_otel()
