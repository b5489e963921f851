"""An engine whose stream or state module has a SQLite store that cannot work does not start: one line naming the
database file (``ModuleStartError``; ``iii-engine`` prints it alone and exits 1), whether the store comes from
``--stream-store`` or from a configuration file's ``store_url``.

Before: ``iii engine listening…``, then every ``stream::set`` failed with ``STREAM_SET_ERROR 'SQLStream.set:
database unreachable: unable to open database file'``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.base import ModuleStartError
from tests.integration.engine.test_startup_trust import STREAM, engine_cli, free_port, one_error_line

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("start-up failures of our engine's SQL stores")]

STATE = "modules::state::StateModule"


@pytest.mark.parametrize("module", [STREAM, STATE])
async def test_a_store_url_in_a_missing_directory_stops_the_start(tmp_path: Path, module: str) -> None:
    path = tmp_path / "missing" / "s.db"
    settings = {"store_url": f"sqlite+aiosqlite:///{path}"}
    if module == STREAM:
        settings |= {"host": "127.0.0.1", "port": 0}
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(module, settings)]))
    with pytest.raises(ModuleStartError) as failure:
        await engine.start()
    assert failure.value.module == module
    assert failure.value.reason == (f"cannot open SQLite database {path}: unable to open database file "
                                    f"(directory {path.parent} does not exist)")
    assert engine.modules == {} and not engine.ready.is_set()


async def test_a_file_based_kvstore_is_migrated_at_start(tmp_path: Path) -> None:
    adapter = {"class": "modules::state::adapters::KvStore",
               "config": {"store_method": "file_based", "file_path": str(tmp_path / "data")}}
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec(STATE, {"adapter": adapter})])
    async with Engine(config=config) as engine:
        assert engine.module("state") is not None
        # migrated by the start, not by a first call
        assert (tmp_path / "data" / "iii_state.sqlite3").stat().st_size > 0


def test_the_command_line_prints_one_line_for_a_relative_path(tmp_path: Path) -> None:
    # three slashes: "tmp/<name>/s.db" relative to the engine's working directory (the repository), never there
    relative = f"tmp/{tmp_path.name}-missing/s.db"
    line = one_error_line(engine_cli("--port", "0", "--stream-store", f"sqlite+aiosqlite:///{relative}"), 1)
    assert line == (f"iii-engine: module {STREAM} cannot start: cannot open SQLite database {relative}: unable to "
                    f"open database file (directory {Path(relative).parent} does not exist; a relative path: use "
                    f"four slashes for an absolute one, sqlite+aiosqlite:///{'/' + relative}) "
                    "(to start without it: --allow-degraded)")


def test_a_config_file_store_url_prints_the_same_line(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "s.db"
    config = tmp_path / "engine.yaml"
    config.write_text(f"modules:\n  - class: {STREAM}\n"
                      f"    config: {{host: 127.0.0.1, port: {free_port()}, "
                      f"store_url: 'sqlite+aiosqlite:///{path}'}}\n")
    line = one_error_line(engine_cli("--port", "0", "--config", str(config)), 1)
    assert line == (f"iii-engine: module {STREAM} cannot start: cannot open SQLite database {path}: unable to "
                    f"open database file (directory {path.parent} does not exist) "
                    "(to start without it: --allow-degraded)")
