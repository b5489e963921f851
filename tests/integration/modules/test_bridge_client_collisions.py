"""A bridge client module's forwards may not take a function id this engine already serves: registered again, a
built-in function is replaced without a word (a forward named ``state::get`` silently sent every state read to the
remote). The start stops with one line naming the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.modules.test_bridge_topology import _failed_start

pytestmark = pytest.mark.our_engine("starts engine processes from config files")

STATE = "  - class: modules::state::StateModule\n"
CLIENT = "  - class: modules::bridge_client::BridgeClientModule\n    config:\n      url: ws://127.0.0.1:1\n"


@pytest.mark.parametrize(("modules", "expected"), [
    (STATE + CLIENT + "      forward:\n        - local_function: state::get\n          remote_function: x\n",
     "modules[1].config.forward[0].local_function: 'state::get' is a function of this engine already"),
    (STATE + CLIENT + "      forward:\n        - local_function: mine\n          remote_function: x\n"
     "        - local_function: state::set\n          remote_function: y\n",
     "modules[1].config.forward[1].local_function: 'state::set' is a function of this engine already"),
])
async def test_a_bridge_client_function_id_this_engine_has_stops_the_start(tmp_path: Path, modules: str,
                                                                          expected: str) -> None:
    config = tmp_path / "collide.yaml"
    config.write_text(f"port: 0\nmodules:\n{modules}")
    err = await _failed_start(config)
    lines = [line for line in err.splitlines() if line.startswith("iii-engine:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("iii-engine: module modules::bridge_client::BridgeClientModule: ") and \
        expected in lines[0], lines[0]
