"""A ``modules:`` list replaces the default module set (as production's does): the engine says which defaults it
leaves out, once, at its start (a file naming only the observability module ran without streams, state, queues, the
REST API, pub/sub and cron, and said nothing)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig
from iii_engine.modules.base import ModuleSpec
from iii_engine.modules.catalogue import DEFAULT_MODULES

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("engine-core test: the start's log")]

NOTICE = "the config's modules: list replaces the default modules; not loaded: "


def _notices(text: str) -> list[str]:
    return [line[line.index(NOTICE):] for line in text.splitlines() if NOTICE in line]


async def test_a_file_naming_only_the_observability_module_says_which_defaults_it_leaves_out(
        engine_process: Callable[..., Awaitable[Any]], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"  # what the README's observability section has one add
    config.write_text("modules:\n"
                      "  - class: modules::observability::OtelModule\n"
                      "    config: {enabled: true, exporter: memory}\n")
    proc = await engine_process("--config", str(config))
    assert _notices(proc.log()) == [f"{NOTICE}{', '.join(DEFAULT_MODULES)}; list them to keep them"]


async def test_only_the_defaults_left_out_are_named(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "iii_engine.engine")
    kept = [ModuleSpec("modules::stream::StreamModule"), ModuleSpec("modules::cron::CronModule")]
    async with Engine(config=EngineConfig(port=0, modules=kept)):
        pass
    left_out = [name for name in DEFAULT_MODULES if name not in ("modules::stream::StreamModule",
                                                                 "modules::cron::CronModule")]
    assert _notices(caplog.text) == [f"{NOTICE}{', '.join(left_out)}; list them to keep them"]


async def test_nothing_is_said_without_a_list_or_with_every_default_listed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "iii_engine.engine")
    every = [ModuleSpec(name) for name in DEFAULT_MODULES] + [ModuleSpec("modules::observability::OtelModule")]
    for config in (EngineConfig(port=0), EngineConfig(port=0, modules=every)):
        async with Engine(config=config) as engine:
            assert engine.ready.is_set()
    assert "iii engine listening on" in caplog.text  # the start's records were captured
    assert _notices(caplog.text) == []
