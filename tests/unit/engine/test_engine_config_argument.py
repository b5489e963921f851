"""``Engine(config=...)`` takes an ``EngineConfig`` or a mapping of configuration keys; anything else is refused
naming its type (a dict failed with ``AttributeError: 'dict' object has no attribute 'with_overrides'``)."""

from __future__ import annotations

import pytest

from iii_engine import Engine
from iii_engine.config import EngineConfig
from iii_engine.settings import ConfigError


def test_a_mapping_is_read_as_the_configuration_file_would_be() -> None:
    engine = Engine(config={"port": 0, "invocation_timeout_ms": 1500})
    assert engine.config.port == 0
    assert engine.config.invocation_timeout_ms == 1500


def test_overrides_win_over_a_mapping() -> None:
    assert Engine(config={"port": 1234}, port=0).config.port == 0


def test_a_bad_value_in_a_mapping_names_the_key() -> None:
    with pytest.raises(ConfigError, match="port"):
        Engine(config={"port": "abc"})


@pytest.mark.parametrize(("config", "named"), [("port: 0", "str"), (b"port: 0", "bytes"), (5, "int"),
                                              ([("port", 0)], "list")])
def test_anything_else_is_refused_naming_its_type(config: object, named: str) -> None:
    with pytest.raises(TypeError, match=rf"Engine\(config=\.\.\.\) takes .* got {named}\b"):
        Engine(config=config)  # type: ignore[arg-type]


def test_yaml_text_is_pointed_to_parse_config() -> None:
    with pytest.raises(TypeError, match="parse_config"):
        Engine(config="port: 0")  # type: ignore[arg-type]


def test_an_engine_config_and_none_still_work() -> None:
    assert Engine(config=EngineConfig(port=0)).config.port == 0
    assert Engine().config == EngineConfig()
