"""A log record with no OTLP-JSON text (a lone surrogate, as ``os.listdir`` decodes a file name that is not UTF-8)
took its whole export batch down, uncounted: with ``logs_batch_size`` 100 the engine got none of 61 records. Now
:class:`iii.logger.Logger` writes lone surrogates as escapes (the record is kept), and the exporter drops a record
it cannot write alone, counted in ``unwritable`` and logged, sending the rest of its batch."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry._logs import LogRecord

from iii import telemetry
from iii.logger import Logger
from iii.telemetry_types import OtelConfig

BAD_NAME = b"report-\xff.csv".decode("utf-8", "surrogateescape")


@pytest.fixture
def frames() -> Iterator[list[bytes]]:
    """Telemetry on (logs only, 100 records a batch) for one test, its frames collected in the list yielded."""
    sink: list[bytes] = []
    telemetry.shutdown_otel()
    telemetry.init_otel(OtelConfig(enabled=True, service_name="logs", service_instance_id="i1",
                                   fetch_instrumentation_enabled=False, metrics_enabled=False, logs_enabled=True,
                                   logs_batch_size=100, logs_flush_interval_ms=60_000),
                        frame_sink=sink.append)
    yield sink
    telemetry.shutdown_otel()


def _records(frames: list[bytes]) -> list[dict[str, Any]]:
    return [record for frame in frames if frame.startswith(b"LOGS")
            for rl in json.loads(frame[4:])["resourceLogs"] for sl in rl["scopeLogs"] for record in sl["logRecords"]]


def _exporter() -> Any:
    processor = telemetry.runtime().log_provider._multi_log_record_processor._log_record_processors[0]
    return processor._batch_processor._exporter


def test_a_logger_record_with_a_lone_surrogate_is_kept_with_it_escaped(frames: list[bytes]) -> None:
    logger = Logger(service_name="svc")
    logger.info("before")
    logger.info(f"processing {BAD_NAME}", {"file": BAD_NAME, BAD_NAME: [BAD_NAME]})
    logger.info("after")
    assert telemetry.force_flush()
    records = _records(frames)
    assert [r["body"]["stringValue"] for r in records] == ["before", "processing report-\\udcff.csv", "after"]
    data = next(a["value"] for a in records[1]["attributes"] if a["key"] == "log.data")
    assert data["kvlistValue"]["values"][0]["value"] == {"stringValue": "report-\\udcff.csv"}
    assert data["kvlistValue"]["values"][1]["key"] == "report-\\udcff.csv"
    assert _exporter().unwritable == 0


def test_a_record_the_exporter_cannot_write_is_dropped_alone_and_counted(frames: list[bytes],
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    otel_logger = telemetry.get_logger("other")
    assert otel_logger is not None
    for body in ["one", f"raw {BAD_NAME}", "two", "three"]:  # a record made without our Logger is not escaped
        otel_logger.emit(LogRecord(timestamp=time.time_ns(), body=body))
    with caplog.at_level(logging.ERROR, logger="iii.telemetry_exporters"):
        assert telemetry.force_flush()
    assert [r["body"]["stringValue"] for r in _records(frames)] == ["one", "two", "three"]
    assert _exporter().unwritable == 1
    assert "log record export failed for 1 of 4 log record(s), dropped: no OTLP-JSON text" in caplog.text


def test_records_a_full_queue_pushes_out_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A burst of records faster than they are exported (3,000 ``Logger`` records in 0.07 s while the engine was
    away) lost 146-711 of them at OpenTelemetry's full queue, counted nowhere."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter

    from iii.telemetry import _counting_log_processor

    exporter = InMemoryLogRecordExporter()
    processor = _counting_log_processor(BatchLogRecordProcessor)(
        exporter, max_queue_size=4, max_export_batch_size=4, schedule_delay_millis=60_000)
    provider = LoggerProvider()
    provider.add_log_record_processor(processor)
    otel_logger = provider.get_logger("burst")
    with caplog.at_level(logging.WARNING, logger="iii.telemetry"), processor._batch_processor._export_lock:
        for i in range(10):  # (nothing leaves the queue meanwhile)
            otel_logger.emit(LogRecord(timestamp=time.time_ns(), body=f"r{i}"))
    assert processor.queue_full == 6
    assert "log queue (4 records) was full: 1 log record(s) pushed out since the last such warning, 1 in all" \
        in caplog.text  # the first at once; the rest within the interval are counted for the next warning
    provider.shutdown()
    assert [item.log_record.body for item in exporter.get_finished_logs()] == ["r6", "r7", "r8", "r9"]


def test_the_clients_log_processor_counts_its_full_queue(frames: list[bytes]) -> None:
    processor = telemetry.runtime().log_provider._multi_log_record_processor._log_record_processors[0]
    assert processor.queue_full == 0
    assert type(processor).__name__ == "CountingLogProcessor"


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("str failed")


def test_a_record_whose_body_cannot_be_made_text_is_dropped_alone(frames: list[bytes]) -> None:
    """A body whose ``str()`` raised something other than TypeError/ValueError took its whole batch down, uncounted."""
    otel_logger = telemetry.get_logger("other")
    assert otel_logger is not None
    for body in ["one", _Unprintable(), "two"]:
        otel_logger.emit(LogRecord(timestamp=time.time_ns(), body=body))
    assert telemetry.force_flush()
    assert [r["body"]["stringValue"] for r in _records(frames)] == ["one", "two"]
    assert _exporter().unwritable == 1


def test_a_logger_message_that_is_not_a_str_is_kept_as_its_text_when_logged(frames: list[bytes]) -> None:
    from pathlib import PurePosixPath

    logger = Logger()
    path = PurePosixPath(f"/data/{BAD_NAME}")
    logger.info(path)  # type: ignore[arg-type]  # (the signature says str; callers pass what they have)
    logger.error(ValueError(f"cannot read {BAD_NAME}"))  # type: ignore[arg-type]
    logger.warn(_Unprintable())  # type: ignore[arg-type]
    assert telemetry.force_flush()
    assert [r["body"]["stringValue"] for r in _records(frames)] == [
        "/data/report-\\udcff.csv", "cannot read report-\\udcff.csv",
        "<_Unprintable whose str() raised RuntimeError>"]
    assert _exporter().unwritable == 0


def test_a_logger_data_value_or_key_whose_str_raises_is_named_and_the_record_kept(frames: list[bytes]) -> None:
    """Such a record went to the stdlib logger at DEBUG instead, counted nowhere."""

    class _Recursive:
        def __str__(self) -> str:
            return str(self)

    logger = Logger()
    logger.info("value", {"v": _Unprintable()})
    logger.info("key", {_Unprintable(): 1})
    logger.info("top", _Unprintable())
    logger.info("recursive", {"v": _Recursive()})
    assert telemetry.force_flush()
    records = _records(frames)
    assert [r["body"]["stringValue"] for r in records] == ["value", "key", "top", "recursive"]
    data = [next(a["value"] for a in r["attributes"] if a["key"] == "log.data") for r in records]
    assert data[0]["kvlistValue"]["values"][0]["value"] == {"stringValue": "[unserializable]"}
    assert data[1]["kvlistValue"]["values"][0]["key"] == "<_Unprintable whose str() raised RuntimeError>"
    assert data[2] == {"stringValue": "[unserializable]"}
