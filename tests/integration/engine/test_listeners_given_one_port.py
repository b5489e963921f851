"""Two of an engine's listeners given one port stop the start with one line naming both, exit 2 (attack on the
engine's configuration): before, the second failed as if a stranger held the port ("address already in use", exit 1
and a hint to start without the module), though the file gave both the port."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.engine.test_startup_trust import free_port
from tests.integration.modules.test_bridge_topology import _failed_start

pytestmark = pytest.mark.our_engine("starts engine processes from config files")


@pytest.mark.parametrize(("modules", "expected"), [
    ("  - class: modules::stream::StreamModule\n    config:\n      port: {engine}\n",
     "module modules::stream::StreamModule: modules[0].config.port: {engine} is the engine's own worker port already"),
    ("  - class: modules::api::RestApiModule\n    config:\n      port: {other}\n"
     "  - class: modules::stream::StreamModule\n    config:\n      port: {other}\n",
     "module modules::stream::StreamModule: modules[1].config.port: {other} is modules[0] "
     "(modules::api::RestApiModule) already"),
])
async def test_two_listeners_given_one_port_stop_the_start(tmp_path: Path, modules: str, expected: str) -> None:
    engine, other = free_port(), free_port()
    config = tmp_path / "ports.yaml"
    config.write_text(f"host: 127.0.0.1\nport: {engine}\nmodules:\n{modules.format(engine=engine, other=other)}")
    err = await _failed_start(config)
    lines = [line for line in err.splitlines() if line.startswith("iii-engine:")]
    assert len(lines) == 1, err
    assert expected.format(engine=engine, other=other) in lines[0], lines[0]
    assert "allow-degraded" not in lines[0]
