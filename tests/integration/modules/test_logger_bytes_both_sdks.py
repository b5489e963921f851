"""A ``Logger`` record's bytes reach the engine as the same text from either SDK.

The reference SDK sends a bytes value of a record's data as OTLP's ``bytesValue``, in hex. Before: our engine
stored that as nothing (``None``), and our SDK sent the value's ``str()`` (``"b'\\\\xff\\\\x00'"``) instead. Now both
send hex and the engine keeps the text as sent.
"""

from __future__ import annotations

import textwrap
import uuid
from typing import Any

import pytest

from tests.integration.modules.test_observability import engine_with
from tests.interop.refsdk import telemetry_worker
from tests.polling import until

pytestmark = [pytest.mark.our_engine("reads the records our engine stored"), pytest.mark.timeout(30)]

_WORKER = textwrap.dedent("""
    import sys, threading
    from iii import InitOptions, Logger, register_worker

    url, tag = sys.argv[1], sys.argv[2]
    iii = register_worker(url, InitOptions(otel={"service_name": tag, "engine_ws_url": url,
                                                 "logs_flush_interval_ms": 20}))
    iii.list_functions()
    Logger(service_name=tag).info("bytes " + tag, {"raw": b"\\xff\\x00", "list": [b"ab"]})
    print("logged", flush=True)
    threading.Event().wait()
""")


@pytest.mark.parametrize("sdk", ["ours", pytest.param("reference", marks=pytest.mark.interop)])
async def test_bytes_in_a_records_data_are_stored_as_hex(sdk: str) -> None:
    tag = f"by{uuid.uuid4().hex[:6]}"
    settings = {"enabled": True, "exporter": "memory", "logs_console_output": False}
    async with engine_with(settings) as engine:
        module: Any = engine.module("observability")

        def stored() -> list[Any]:
            return [e["attributes"].get("log.data") for e in module.logs.entries() if e["body"] == f"bytes {tag}"]

        async with telemetry_worker(sdk, _WORKER, engine.url, tag, ready=b"logged"):
            await until(lambda: bool(stored()), 15)
        assert stored() == [{"raw": "ff00", "list": ["6162"]}]
