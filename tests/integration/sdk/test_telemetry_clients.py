"""Several ``III`` clients in one process share telemetry: it stays on until the last one shuts down.

Frames travel on one client's worker socket; when that client leaves, another live client's socket takes over.
The real engine counts the telemetry frames each worker connection carried, which is what these tests read.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iii import OtelConfig, telemetry
from iii.iii import III
from iii.logger import Logger

from .conftest import MakeWorker, RealEngineThread, workers_of

pytestmark = [pytest.mark.our_engine("reads the telemetry frames our engine counted per connection"),
              pytest.mark.usefixtures("fresh_telemetry")]

ON = OtelConfig(enabled=True, service_name="telemetry-clients", fetch_instrumentation_enabled=False,
                metrics_enabled=False, logs_enabled=True)


@pytest.fixture
def make_worker(real: RealEngineThread) -> Iterator[MakeWorker]:
    yield from workers_of(real.url)


def frames_of(real: RealEngineThread, client: III) -> int:
    """Telemetry frames the engine received on ``client``'s connection (0 once it is gone)."""
    connection = real.engine.workers.get(client.worker_id or "")
    return 0 if connection is None else connection.telemetry_frames


def emit_and_flush(label: str) -> None:
    """One span and one log record, exported now rather than at the next batch interval."""
    tracer = telemetry.get_tracer()
    assert tracer is not None, "telemetry is off"
    with tracer.start_as_current_span(f"span-{label}"):
        Logger(service_name="telemetry-clients").info(f"log-{label}")
    assert telemetry.force_flush(5_000)


def test_frames_move_to_the_surviving_client(real: RealEngineThread, make_worker: MakeWorker) -> None:
    a = make_worker("a", otel=ON)
    b = make_worker("b", otel=ON)
    a.list_functions(), b.list_functions()  # both handshakes done: worker ids known to the engine
    assert telemetry.client_count() == 2

    emit_and_flush("while-a-carries")
    real.wait_for(lambda: frames_of(real, a) >= 2)  # a span frame and a log frame on a's socket
    assert frames_of(real, b) == 0

    a.shutdown()
    assert telemetry.is_initialized() and telemetry.client_count() == 1  # a's shutdown did not turn it off

    emit_and_flush("after-a-left")
    real.wait_for(lambda: frames_of(real, b) >= 2)

    b.shutdown()
    assert not telemetry.is_initialized()
    assert telemetry.get_tracer() is None and telemetry.client_count() == 0


def test_a_non_carrier_leaving_keeps_the_carrier(real: RealEngineThread, make_worker: MakeWorker) -> None:
    a = make_worker("a", otel=ON)
    b = make_worker("b", otel=ON)
    a.list_functions(), b.list_functions()
    b.shutdown()
    assert telemetry.is_initialized() and telemetry.client_count() == 1

    before = frames_of(real, a)
    emit_and_flush("after-b-left")
    real.wait_for(lambda: frames_of(real, a) >= before + 2)

    a.shutdown()
    assert not telemetry.is_initialized()


def test_a_client_without_telemetry_does_not_turn_it_off(real: RealEngineThread, make_worker: MakeWorker) -> None:
    # Connected first, with telemetry off: it never uses telemetry, so it is not counted.
    quiet = make_worker("quiet", otel=OtelConfig(enabled=False))
    quiet.list_functions()
    assert not telemetry.is_initialized()
    a = make_worker("a", otel=ON)
    a.list_functions()
    assert telemetry.client_count() == 1
    quiet.shutdown()
    assert telemetry.is_initialized()
    before = frames_of(real, a)
    emit_and_flush("after-quiet-left")
    real.wait_for(lambda: frames_of(real, a) >= before + 2)
    a.shutdown()
    assert not telemetry.is_initialized()
