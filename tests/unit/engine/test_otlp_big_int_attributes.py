"""An OTLP ``intValue`` outside int64 in a log's attribute (what the reference SDK's Logger writes for a big Python int)
is kept as its decimal text, the record and the rest of its batch with it: it made the whole frame malformed, every
record lost (attack on the reference SDK against our engine). Anything that is not an integer is still refused."""

from __future__ import annotations

from typing import Any

import pytest

from iii_engine.modules.observability.otlp import TelemetryFormatError, logs_from_otlp


def _frame(*values: Any) -> dict[str, Any]:
    records = [{"timeUnixNano": "1", "severityText": "ERROR", "body": {"stringValue": f"r{i}"},
                "attributes": [{"key": "n", "value": {"intValue": value}}]} for i, value in enumerate(values)]
    return {"resourceLogs": [{"resource": {"attributes": []}, "scopeLogs": [{"logRecords": records}]}]}


def test_an_int_past_int64_is_kept_as_text_and_the_batch_is_stored() -> None:
    # as a number, and as OTLP/JSON writes 64-bit integers: a decimal string
    logs = logs_from_otlp(_frame(2**70, "3", -(2**64), str(2**70)))
    assert len(logs) == 4  # before: TelemetryFormatError, none of the four stored
    assert [str(log["attributes"]["n"]) for log in logs] == [str(2**70), "3", str(-(2**64)), str(2**70)]


def test_an_int_value_that_is_not_an_integer_is_still_refused() -> None:
    with pytest.raises(TelemetryFormatError, match="intValue must be an integer"):
        logs_from_otlp(_frame("12abc"))
