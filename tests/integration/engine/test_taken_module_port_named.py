"""A module whose port someone else holds fails the start naming the setting that gave it that port and how to move
it (a second engine on the default host failed on the stream module's 3112 with only "address already in use" and
the hint to start without the module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.cli import start_failure
from iii_engine.modules.base import EngineModule, ModuleStartError
from tests.ports import reserve_port

from .test_startup_trust import API, STREAM, engine_cli, occupied, one_error_line

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: start-up failures of our engine")]

MOVE_ALL = "; or --port 0: the engine and every module whose config names no port listen on free ports"


@pytest.mark.parametrize("module", [STREAM, API])
def test_a_port_the_config_names_is_named_as_its_setting(tmp_path: Path, module: str) -> None:
    with occupied() as taken:
        config = tmp_path / "engine.yaml"
        config.write_text(f"modules:\n  - class: {module}\n    config: {{host: 127.0.0.1, port: {taken}}}\n")
        line = one_error_line(engine_cli("--port", "0", "--config", str(config)), 1)
    assert line.startswith(f"iii-engine: module {module} cannot start: ") and "address already in use" in line
    # --port 0 would not move a port the config names: not offered
    assert line.endswith(f" (port {taken} is modules[0].config.port: set another there, 0 = any free one) "
                         "(to start without it: --allow-degraded)"), line


@pytest.fixture
def default_port_taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The stream module's default port (3112, which other engines on this machine may be using: not held here)
    stands for a taken one: where the engine gives a module its port when the config names none, it gives it this."""
    defaults = Engine._listener_defaults

    def taken_port(self: Engine, cls: type[EngineModule], settings: dict[str, Any]) -> dict[str, Any]:
        merged = defaults(self, cls, settings)
        return {**merged, "port": port} if cls.name == "stream" and "port" not in settings else merged

    with occupied() as port:
        monkeypatch.setattr(Engine, "_listener_defaults", taken_port)
        yield port


@pytest.mark.parametrize("listed", [True, False], ids=["in a modules list", "the default modules"])
async def test_a_default_port_taken_says_where_to_set_another(default_port_taken: int, listed: bool) -> None:
    with reserve_port() as worker_port:  # a fixed worker port: with port 0 the modules take free ones
        config = EngineConfig(host="127.0.0.1", port=worker_port.getsockname()[1],
                              modules=[ModuleSpec(STREAM)] if listed else None)
        with pytest.raises(ModuleStartError) as failed:
            await Engine(config=config).start()
    reason = failed.value.reason
    assert "address already in use" in reason
    if listed:
        assert reason.endswith(f" (port {default_port_taken} is the module's default port: set port in "
                               "modules[0].config, 0 = any free one)"), reason
    else:
        assert reason.endswith(f" (port {default_port_taken} is the module's default port: set it in a modules: "
                               f"list entry {{class: {STREAM}, config: {{port: …}}}} (0 = any free one), with the "
                               "other modules you use: the list replaces the defaults)"), reason
    status, line = start_failure(failed.value, config)
    assert status == 1 and line.endswith(f"(to start without it: --allow-degraded{MOVE_ALL})"), line
