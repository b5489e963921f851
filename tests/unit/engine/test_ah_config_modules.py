"""A module class configured twice is refused before anything starts: the engine keeps one module per name, so
the second entry replaced the first, which kept running unseen (its port still open after the engine stopped)."""

from __future__ import annotations

import pytest

from iii_engine import EngineConfig, ModuleSpec
from iii_engine.config import parse_config
from iii_engine.settings import ConfigError


def test_a_module_class_configured_twice_is_refused_naming_both_entries() -> None:
    text = ("modules:\n  - class: modules::api::RestApiModule\n  - class: modules::queue::QueueModule\n"
            "  - class: modules::api::RestApiModule\n    config: {port: 0}\n")
    with pytest.raises(ConfigError, match=r"^modules: modules::api::RestApiModule is configured twice "
                                          r"\(modules\[0\] and modules\[2\]\)"):
        parse_config(text, env={})


def test_an_embedded_engine_config_with_a_class_twice_is_refused() -> None:
    api = ModuleSpec("modules::api::RestApiModule", {"port": 0})
    with pytest.raises(ConfigError, match="configured twice"):
        EngineConfig(port=0, modules=[api, api])


def test_different_classes_are_kept_in_order() -> None:
    config = parse_config("modules:\n  - class: modules::queue::QueueModule\n  - class: modules::cron::CronModule\n",
                          env={})
    assert [spec.class_name for spec in config.modules or []] == ["modules::queue::QueueModule",
                                                                  "modules::cron::CronModule"]
