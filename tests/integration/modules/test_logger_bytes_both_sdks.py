"""A ``Logger`` record's bytes reach the engine as the same text from either SDK.

The reference SDK sends a bytes value of a record's data as OTLP's ``bytesValue``, in hex. Before: our engine
stored that as nothing (``None``), and our SDK sent the value's ``str()`` (``"b'\\\\xff\\\\x00'"``) instead. Now both
send hex and the engine keeps the text as sent.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.modules.test_observability import engine_with
from tests.interop.refsdk import sdk_env
from tests.polling import until
from tests.services import reference_python

pytestmark = [pytest.mark.our_engine("reads the records our engine stored"), pytest.mark.timeout(30)]

ROOT = Path(__file__).resolve().parents[3]

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
    python = sys.executable if sdk == "ours" else reference_python()
    tag = f"by{uuid.uuid4().hex[:6]}"
    settings = {"enabled": True, "exporter": "memory", "logs_console_output": False}
    async with engine_with(settings) as engine:
        module: Any = engine.module("observability")
        env = {**sdk_env(), "OTEL_ENABLED": "true", "OTEL_BLRP_SCHEDULE_DELAY": "20"}
        if sdk == "ours":
            env["PYTHONPATH"] = str(ROOT)
        proc = await asyncio.create_subprocess_exec(python, "-P", "-c", _WORKER, engine.url, tag, env=env,
                                                    stdout=asyncio.subprocess.PIPE, cwd=os.getcwd())
        try:
            assert proc.stdout is not None
            assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"logged"

            def stored() -> list[Any]:
                return [e["attributes"].get("log.data") for e in module.logs.entries() if e["body"] == f"bytes {tag}"]

            await until(lambda: bool(stored()), 15)
        finally:
            proc.kill()
            await proc.wait()
        assert stored() == [{"raw": "ff00", "list": ["6162"]}]
