"""A Bridge whose URL reaches its own engine stops the start with one line (attack on the engine's configuration):
a Bridge adapter's ``bridge_url`` defaults to ``ws://localhost:49134``, the engine's own default port, so naming the
adapter without a URL bridged the engine to itself; it started without a word, and one ``state::set`` called itself
through the bridge about 10,000 deep, the engine growing to 6 GB. A remote's error is cut in a bridged call's error,
so engines bridged in a loop (which no start can see) do not wrap it again at every hop without bound."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from iii.iii import register_worker
from iii.iii_constants import InitOptions
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.bridge.link import REMOTE_ERROR_CHARS
from tests.integration.engine.test_startup_trust import free_port
from tests.integration.modules.test_bridge_topology import _failed_start
from tests.polling import until

pytestmark = pytest.mark.our_engine("starts engine processes from config files")

ADAPTER = ("      adapter:\n        class: modules::{kind}::adapters::Bridge\n        config:\n"
           "          bridge_url: {url}\n")


@pytest.mark.parametrize(("module", "entry"), [
    ("modules::state::StateModule", "    config:\n" + ADAPTER.format(kind="state", url="ws://localhost:{port}")),
    ("modules::stream::StreamModule", "    config:\n      port: 0\n" + ADAPTER.format(kind="stream",
                                                                                     url="ws://127.0.0.1:{port}")),
    ("modules::queue::QueueModule", "    config:\n" + ADAPTER.format(kind="queue", url="ws://0.0.0.0:{port}")),
    ("modules::bridge_client::BridgeClientModule", "    config:\n      url: ws://127.0.0.1:{port}\n"),
])
async def test_a_bridge_to_its_own_engine_stops_the_start(tmp_path: Path, module: str, entry: str) -> None:
    port = free_port()
    config = tmp_path / "self.yaml"
    config.write_text(f"host: 0.0.0.0\nport: {port}\nmodules:\n  - class: {module}\n{entry.format(port=port)}")
    err = await _failed_start(config)
    lines = [line for line in err.splitlines() if line.startswith("iii-engine:")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"iii-engine: module {module}: modules[0].config: ") and \
        f"reaches this engine's own worker port ({port})" in lines[0], lines[0]


async def test_a_bridge_to_another_engine_on_this_machine_starts(tmp_path: Path) -> None:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as back:
        front = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(
            "modules::state::StateModule", {"adapter": {"class": "modules::state::adapters::Bridge",
                                                        "config": {"bridge_url": back.url}}})])
        async with Engine(config=front) as engine:
            assert await engine.invoke("state::set", {"scope": "s", "key": "k", "value": 1}) == \
                {"old_value": None, "new_value": 1}


async def test_a_remote_error_is_cut_in_a_bridged_call_s_error() -> None:
    async with Engine(config=EngineConfig(host="127.0.0.1", port=0)) as back:
        # (in a thread: the worker's start waits for its engine, which runs on this loop)
        worker = await asyncio.to_thread(register_worker, back.url, InitOptions(worker_name="remote"))
        try:
            def fails(data: object) -> object:
                raise ValueError("x" * 100_000)

            worker.register_function("remote::fails", fails)
            await until(lambda: back.has_function("remote::fails"))
            front = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(
                "modules::bridge_client::BridgeClientModule",
                {"url": back.url, "forward": [{"local_function": "fails", "remote_function": "remote::fails"}]})])
            async with Engine(config=front) as engine:
                with pytest.raises(Exception) as failed:
                    await engine.invoke("fails", {}, timeout_s=20)
        finally:
            await asyncio.to_thread(worker.shutdown)
    message = str(failed.value)
    # before: the remote's 100,000 characters, wrapped again at each hop of a loop
    assert "remote error (invocation_failed): xxx" in message and "(100000 chars)" in message, message[:200]
    assert len(message) < REMOTE_ERROR_CHARS + 300
