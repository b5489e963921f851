"""A worker on one engine cannot rename the bridge link on the other through the bridge.

``engine::workers::register`` records the metadata of the connection that called it. Over a bridge that is the link,
which every worker of the calling engine shares: ``bridge.invoke {function_id: "engine::workers::register", data:
{"name": "payments-primary", …}}`` from any worker answered ``{"success": true}`` and the other engine listed its
link as ``payments-primary``. It is refused now, and so is a ``forward`` whose remote function it is.
"""

from __future__ import annotations

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import EngineError
from iii_engine.modules.bridge.settings import BridgeClientSettings
from iii_engine.settings import ConfigError
from tests.polling import until

pytestmark = [pytest.mark.our_engine("bridges two in-process engines of ours"), pytest.mark.timeout(30)]

CLIENT = "modules::bridge_client::BridgeClientModule"
SPOOF = {"name": "payments-primary", "runtime": "rust", "version": "9.9.9", "os": "spoofed"}


@pytest.mark.parametrize("function", ["bridge.invoke", "bridge.invoke_async"])
async def test_the_links_metadata_cannot_be_set_through_the_bridge(function: str) -> None:
    async with Engine(port=0) as back:
        config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(CLIENT, {"url": back.url})])
        async with Engine(config=config) as front:
            await until(lambda: any(w.name for w in back.workers.values()), within=15)  # its own metadata in
            (link,) = back.workers.values()
            before = (link.name, link.runtime, link.version, link.os)
            with pytest.raises(EngineError) as refused:
                await front.invoke(function, {"function_id": "engine::workers::register", "data": SPOOF})
            assert refused.value.code == "bridge_error"
            assert "not called over a bridge" in refused.value.message
            await front.invoke("bridge.invoke", {"function_id": "engine::functions::list", "data": {}})  # in order
            assert (link.name, link.runtime, link.version, link.os) == before != tuple(SPOOF.values())


def test_a_forward_to_it_is_refused_in_the_configuration() -> None:
    with pytest.raises(ConfigError, match=r"forward\[0\]\.remote_function.*not called over a bridge"):
        BridgeClientSettings.from_config({"url": "ws://back:1", "forward": [
            {"local_function": "rename", "remote_function": "engine::workers::register"}]}, env={})
