"""Typed configuration (issue #9): every module's settings are checked by a model, and a bad value stops the start
with one line naming the module and the path of the value from the top of the configuration."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

import pytest

from iii_engine import ConfigError, Engine, EngineConfig, ModuleSpec, ModuleStartError, parse_config
from iii_engine.modules.catalogue import CATALOGUE, resolve
from iii_engine.settings import Settings

ENGINE_SOURCE = Path(__file__).resolve().parents[3] / "iii_engine"
PUBSUB = "modules::pubsub::PubSubModule"

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("modules::stream::StreamModule", {"client_queue_size": 0}, "client_queue_size: must be >= 1, got 0"),
    ("modules::stream::StreamModule", {"prot": 1}, "config: unknown key 'prot' (allowed: adapter, auth_function,"),
    ("modules::state::StateModule",
     {"adapter": {"class": "modules::state::adapters::RedisAdapter", "config": {"redis_url": "http://x"}}},
     "adapter.config.redis_url: must be a redis://, rediss:// or unix:// URL, got 'http://x'"),
    ("modules::queue::QueueModule", {"queue_configs": {"default": {"max_retries": 0}}},
     "queue_configs.default.max_retries: must be >= 1, got 0"),
    ("modules::queue::QueueModule", {"queue_configs": {"pay": {"type": "fifo"}}},
     "queue_configs.pay: a fifo queue needs a 'message_group_field'"),
    ("modules::queue::QueueModule", {"queue_configs": {"q": {"type": "lifo"}}},
     "queue_configs.q.type: must be 'standard' or 'fifo', got 'lifo'"),
    ("modules::queue::QueueModule", {"adapter": {"class": "modules::queue::Kafka"}},
     "adapter.class: unknown adapter class 'modules::queue::Kafka' (expected modules::queue::BuiltinQueueAdapter"),
    ("modules::api::RestApiModule", {"cors": {"allowed_origins": [1]}},
     "cors.allowed_origins[0]: must be a string, got 1"),
    ("modules::api::RestApiModule", {"max_body_bytes": 10, "max_buffered_bytes": 5},
     "max_buffered_bytes: must be at least max_body_bytes (10)"),
    (PUBSUB, {"adapter": {"class": "modules::pubsub::RedisAdapter"}}, "adapter.config.redis_url: is required"),
    ("modules::cron::CronModule",
     {"adapter": {"class": "modules::cron::KvCronAdapter", "config": {"lock_ttl_ms": "soon"}}},
     "adapter.config.lock_ttl_ms: must be an integer, got 'soon'"),
    ("modules::http_functions::HttpFunctionsModule", {"security": {"block_private_ips": "no"}},
     "security.block_private_ips: must be true or false, got 'no'"),
    ("modules::observability::OtelModule", {"memory_max_spans": 0}, "memory_max_spans: must be >= 1, got 0"),
    ("modules::bridge_client::BridgeClientModule",
     {"forward": [{"local_function": "a", "remote_function": "b", "timeout_ms": 0}]},
     "forward[0].timeout_ms: must be >= 1, got 0"),
]


@pytest.mark.parametrize(("class_name", "settings", "problem"), BAD, ids=[f"{c}-{p[:30]}" for c, _, p in BAD])
async def test_a_bad_module_setting_stops_the_start_naming_module_and_path(class_name: str, settings: dict[str, Any],
                                                                           problem: str) -> None:
    # a good module first (another class: one configured twice is refused), so the path has to carry the right index
    first = "modules::queue::QueueModule" if class_name == PUBSUB else PUBSUB
    config = EngineConfig(port=0, modules=[ModuleSpec(first), ModuleSpec(class_name, settings)])
    with pytest.raises(ModuleStartError) as failure:
        async with Engine(config=config):
            pass
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith(f"module {class_name} cannot start: modules[1].config")
    assert problem in message, message


def test_the_same_error_from_the_settings_model_names_the_path_inside_the_module_config() -> None:
    with pytest.raises(ConfigError) as failure:
        resolve("modules::queue::QueueModule")(object(), {"queue_configs": {"d": {"concurrency": -1}}})  # type: ignore[arg-type]
    assert (failure.value.path, failure.value.problem) == ("queue_configs.d.concurrency", "must be >= 1, got -1")
    assert str(failure.value.under("modules[3].config")) == (
        "modules[3].config.queue_configs.d.concurrency: must be >= 1, got -1")


@pytest.mark.parametrize(("class_name", "settings"), [
    ("modules::queue::QueueModule", {"colour": "red"}),
    ("modules::state::StateModule", {"colour": "red"}),
    ("modules::cron::CronModule", {"colour": "red"}),
    ("modules::pubsub::PubSubModule", {"colour": "red"}),
])
async def test_modules_that_tolerate_unknown_keys_log_them(class_name: str, settings: dict[str, Any],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="iii_engine.settings"):
        async with Engine(config=EngineConfig(port=0, modules=[ModuleSpec(class_name, settings)])) as engine:
            assert engine.unavailable_modules == {}
    assert any("ignoring unknown keys colour" in r.getMessage() for r in caplog.records)


def test_engine_level_values_are_checked_with_their_path() -> None:
    with pytest.raises(ConfigError, match=r"^invocation_timeout_ms: must be >= 0, got -1$"):
        parse_config("invocation_timeout_ms: -1", env={})
    with pytest.raises(ConfigError, match=r"^channels\.production_mode: must be true or false, got 'maybe'$"):
        parse_config("channels: {production_mode: maybe}", env={})
    with pytest.raises(ConfigError, match=r"^port: must be <= 65535, got 70000$"):
        EngineConfig(port=70000)  # built in code: the same check and message
    assert parse_config("channels: {attach_timeout_s: 2.5}", env={}).channels.attach_timeout_ms == 2500
    with pytest.raises(ConfigError, match=r"^host: must be a string, got 5$"):
        EngineConfig().with_overrides(host=5)  # type: ignore[arg-type]


def test_every_module_class_has_settings_models_that_only_use_typed_fields() -> None:
    for class_name in CATALOGUE:
        module_class = resolve(class_name)
        assert module_class.__module__.startswith("iii_engine.modules."), class_name
    # each default is defined once: the file's defaults are the models' defaults
    assert parse_config("", env={}) == EngineConfig()
    assert issubclass(EngineConfig, Settings)


def test_logger_names_are_module_paths() -> None:
    literal = []
    for path in ENGINE_SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "getLogger"
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).startswith("iii_engine")):
                literal.append(f"{path.relative_to(ENGINE_SOURCE)}:{node.lineno}")
    assert literal == []


def test_modules_do_not_probe_the_engine_or_each_other() -> None:
    """``EngineServices`` declares what modules use: no getattr() on services, no calls of engine built-ins."""
    found = []
    for path in (ENGINE_SOURCE / "modules").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr",
                                                                                                  "hasattr"):
                target = ast.unparse(node.args[0]) if node.args else ""
                if "services" in target or "relay" in target or "module" in target:
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "invoke"
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).startswith("engine::")):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert found == []
