"""Engine configuration parsing (production YAML + our keys)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iii_engine.config import ConfigError, EngineConfig, expand_env, load_config, parse_config
from iii_engine.modules.catalogue import DEFAULT_MODULES, ModuleUnavailable, default_specs, resolve

PRODUCTION_YAML = """
port: 49199
modules:
  - class: modules::stream::StreamModule
    config:
      port: ${STREAMS_PORT:3112}
      host: 127.0.0.1
      adapter:
        class: modules::stream::adapters::RedisAdapter
        config:
          redis_url: ${REDIS_URL:redis://localhost:6379}
  - class: modules::queue::QueueModule
    config:
      queue_configs:
        payment: {max_retries: 5, concurrency: 2, type: fifo, message_group_field: transaction_id}
"""


def test_production_yaml_with_env_expansion() -> None:
    cfg = parse_config(PRODUCTION_YAML, env={"REDIS_URL": "redis://db:6379"})
    assert cfg.port == 49199 and cfg.host == "127.0.0.1"
    assert cfg.modules is not None
    stream, queue = cfg.modules
    assert stream.class_name == "modules::stream::StreamModule"
    assert stream.config["port"] == 3112  # a whole-placeholder number stays a number
    assert stream.config["adapter"]["config"]["redis_url"] == "redis://db:6379"
    assert queue.config["queue_configs"]["payment"]["type"] == "fifo"


def test_our_keys() -> None:
    cfg = parse_config("host: 0.0.0.0\ninvocation_timeout_ms: 250\nmax_message_size: 1024\n"
                       "channels: {production_mode: true, attach_timeout_s: 5}\n", env={})
    assert (cfg.host, cfg.invocation_timeout_ms, cfg.max_message_size) == ("0.0.0.0", 250, 1024)
    assert cfg.channels.production_mode is True and cfg.channels.attach_timeout_s == 5.0
    assert cfg.modules is None  # no modules: list = the default set


def test_empty_file_is_the_default_configuration() -> None:
    assert parse_config("", env={}) == EngineConfig()


@pytest.mark.parametrize(("text", "message"), [
    ("port: abc", "port: must be an integer, got 'abc'"),
    ("port: 70000", "port: must be <= 65535, got 70000"),
    ("port: true", "port: must be an integer, got True"),
    ("modules: {}", "modules: must be a list, got {}"),
    ("modules: [{config: {}}]", "modules[0].class: is required"),
    ("modules: [{class: x, config: 3}]", "modules[0].config: must be a mapping, got 3"),
    ("modules: [{class: x}, 5]", "modules[1]: must be a mapping, got 5"),
    ("channels: {attach_timeout_s: 0}", "channels.attach_timeout_s: must be a number > 0, got 0"),
    ("channels: {colour: red}", "channels: unknown key 'colour' (allowed: attach_timeout_ms,"),
    ("max_outbox_bytes: 0", "max_outbox_bytes: must be >= 1, got 0"),
    ("- just a list", "the configuration must be a mapping"),
    ("port: ${MISSING_VAR}", "environment variable MISSING_VAR is not set"),
    ("a: [unclosed", "invalid YAML"),
])
def test_errors_name_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text, env={})


def test_expand_env_inside_strings_and_lists() -> None:
    assert expand_env(["${A}-${B:x}", "${A:1}"], env={"A": "a"}) == ["a-x", "a"]


def test_load_config_from_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("port: 1234\n")
    assert load_config(path, env={}).port == 1234
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(tmp_path / "missing.yaml")


def test_catalogue_defaults_and_unknown_classes() -> None:
    assert [s.class_name for s in default_specs()] == list(DEFAULT_MODULES)
    with pytest.raises(ModuleUnavailable, match="unknown module class"):
        resolve("modules::nope::Nope")
    assert resolve("modules::bridge_client::BridgeClientModule").name == "bridge_client"
