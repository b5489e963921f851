"""Two ways a configuration said one thing and the engine did another.

``${VAR}`` values: an expanded value is its text, converted by the field it lands in (base 10 for numbers,
``true`` / ``false`` for flags, the text as written for strings). Before, the text was read again as YAML 1.1:
``PORT=010`` gave port 8, ``0x1A`` 26, ``1:20`` 80, a version ``1.10`` became ``1.1``, and a numeric
``key_prefix`` was refused as "must be a string".

Near-misses in the observability module: ``exportr:``, ``operater:`` and ``actoin:`` in an alert rule were
ignored with a warning (the exporter stayed ``otlp``, the alert fired on ``>`` instead of ``<``, the webhook
never ran); now they stop the start with the path and the key meant (exit 2), as in every other module.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from iii_engine import Engine
from iii_engine.cli import main
from iii_engine.config import parse_config
from iii_engine.modules.bridge.settings import BridgeClientSettings
from iii_engine.modules.observability.settings import ObservabilitySettings
from iii_engine.modules.queue.module import QueueModule
from iii_engine.modules.queue.settings import QueueModuleSettings
from iii_engine.settings import ConfigError, Field, RedisAdapterSettings, Settings, UnknownKeys

OTEL = "modules::observability::OtelModule"


def _port(value: str, line: str = "port: ${PORT}") -> int:
    return parse_config(f"{line}\n", env={"PORT": value}).port


@pytest.mark.parametrize(("value", "port"), [("010", 10), ("8080", 8080), ("+0049", 49), ("0", 0)])
@pytest.mark.parametrize("line", ["port: ${PORT}", 'port: "${PORT}"', "port: '${PORT}'"])
def test_an_expanded_port_is_read_in_base_10_quoted_or_not(value: str, port: int, line: str) -> None:
    # before: PORT=010 gave port 8 (YAML 1.1 octal); quoted, "must be an integer, got '010'"
    assert _port(value, line) == port


@pytest.mark.parametrize("value", ["0x1A", "1:20", "0o17", "yes", "1.10", "1e3", "8080 ", "1_000", "٣"])
def test_an_expanded_value_that_is_not_decimal_digits_is_refused_by_an_integer_field(value: str) -> None:
    # before: 0x1A gave 26, 1:20 gave 80 (sexagesimal), 0o17 gave '0o17' refused, yes gave True refused
    with pytest.raises(ConfigError) as refused:
        _port(value)
    assert str(refused.value) == f"port: must be an integer, got {value!r}"


def test_an_expanded_flag_is_true_or_false() -> None:
    flag = "allow_degraded: ${FLAG}\n"
    assert parse_config(flag, env={"FLAG": "true"}).allow_degraded is True
    assert parse_config(flag, env={"FLAG": "False"}).allow_degraded is False
    with pytest.raises(ConfigError, match=r"^allow_degraded: must be true or false, got 'on'$"):
        parse_config(flag, env={"FLAG": "on"})  # before: True (YAML 1.1)


def test_defaults_and_the_raw_configuration_keep_reading_numbers() -> None:
    cfg = parse_config("port: ${PORT:5000}\nmodules:\n  - class: modules::queue::QueueModule\n"
                       "    config: {max_topics: '${TOPICS}', note: 'v${TOPICS}'}\n", env={"TOPICS": "007"})
    assert cfg.port == 5000
    assert cfg.modules is not None
    raw = cfg.modules[0].config
    assert raw["max_topics"] == 7 and raw["max_topics"].text == "007" and raw["note"] == "v007"
    assert QueueModuleSettings.parse(raw).max_topics == 7


@pytest.mark.parametrize("quote", ["", '"'])
@pytest.mark.parametrize("prefix", ["12345", "007", "1.10", "true", "1e3"])
def test_a_string_field_keeps_an_expanded_value_as_written(quote: str, prefix: str) -> None:
    # before: "adapter.config.key_prefix: must be a string, got 12345" (quoted or not), '007' became 7
    cfg = parse_config("modules:\n  - class: modules::queue::QueueModule\n    config:\n      adapter:\n"
                       "        class: modules::queue::RedisAdapter\n        config:\n"
                       "          redis_url: redis://127.0.0.1:6379\n"
                       f"          key_prefix: {quote}${{PREFIX}}{quote}\n",
                       env={"PREFIX": prefix})
    assert cfg.modules is not None
    _, adapter = QueueModuleSettings.parse(cfg.modules[0].config).store_adapter
    assert isinstance(adapter, RedisAdapterSettings)
    assert adapter.key_prefix == prefix and type(adapter.key_prefix) is str


async def test_an_engine_starts_its_redis_queue_under_a_numeric_prefix_from_the_environment() -> None:
    # before: ModuleStartError "modules[0].config.adapter.config.key_prefix: must be a string, got <digits>"
    prefix = f"{uuid.uuid4().int % 10**12:012d}"
    cfg = parse_config("port: 0\nmodules:\n  - class: modules::queue::QueueModule\n    config:\n      adapter:\n"
                       "        class: modules::queue::RedisAdapter\n        config:\n"
                       "          redis_url: redis://127.0.0.1:6379\n          key_prefix: ${PREFIX}\n",
                       env={"PREFIX": prefix})
    async with Engine(config=cfg) as engine:
        queue = engine.module("queue")
        assert isinstance(queue, QueueModule)
        assert queue.settings.store_adapter[1] == RedisAdapterSettings(redis_url="redis://127.0.0.1:6379",
                                                                       key_prefix=prefix)


def test_an_expanded_service_version_is_kept_as_written() -> None:
    # before: SERVICE_VERSION=1.10 reported service version 1.1
    cfg = parse_config(f"modules:\n  - class: {OTEL}\n    config:\n      service_version: ${{V}}\n"
                       "      sampling_ratio: '${R}'\n", env={"V": "1.10", "R": "0.25"})
    assert cfg.modules is not None
    settings = ObservabilitySettings.from_config(cfg.modules[0].config, env={})
    assert (settings.service_version, settings.sampling_ratio) == ("1.10", 0.25)


def test_expanded_values_inside_lists_and_nested_settings_take_their_fields_types() -> None:
    cfg = parse_config("modules:\n  - class: modules::bridge_client::BridgeClientModule\n    config:\n"
                       "      forward: [{local_function: '${F}', remote_function: r, timeout_ms: '${T}'}]\n"
                       "  - class: modules::queue::QueueModule\n"
                       "    config: {queue_configs: {jobs: {max_retries: '${T}'}}}\n",
                       env={"F": "42", "T": "0100"})
    assert cfg.modules is not None
    forward = BridgeClientSettings.from_config(cfg.modules[0].config, env={}).forward[0]
    assert (forward.local_function, forward.timeout_ms) == ("42", 100)
    assert QueueModuleSettings.parse(cfg.modules[1].config).queue_configs["jobs"].max_retries == 100


class _Shapes(Settings):
    names: tuple[str, ...] = Field((), strict=False)
    counts: dict[str, int] = Field(default_factory=dict)
    ratio: float | None = None
    mode: Literal["a", "7"] = "a"


def test_containers_optionals_and_literals_convert_their_items() -> None:
    expanded = parse_config("modules: [{class: x, config: {names: ['${N}', b], counts: {k: '${N}'}, ratio: '${N}', "
                            "mode: '${M}'}}]\n", env={"N": "12", "M": "7"})
    assert expanded.modules is not None
    shapes = _Shapes.parse(expanded.modules[0].config)
    assert (shapes.names, shapes.counts, shapes.ratio, shapes.mode) == (("12", "b"), {"k": 12}, 12.0, "7")


@pytest.fixture()
def _root_level() -> Iterator[None]:
    # main sets the root logger's level for the process it owns; give the other tests theirs back
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def _refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str) -> str:
    path = tmp_path / "engine.yaml"
    path.write_text(f"modules:\n  - class: {OTEL}\n    config:\n{config}")
    assert main(["--port", "0", "--config", str(path), "--log-level", "ERROR"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.usefixtures("_root_level")
@pytest.mark.parametrize(("config", "said"), [
    ("      enabled: true\n      exportr: memory\n",
     "modules[0].config: unknown key 'exportr' (did you mean 'exporter'? allowed: alerts, "),
    ("      alerts:\n        - {name: low, metric: calls, threshold: 5, operater: '<'}\n",
     "modules[0].config.alerts[0]: unknown key 'operater' (did you mean 'operator'? allowed: action, "),
    ("      alerts:\n        - {name: low, metric: calls, threshold: 5, actoin: {type: webhook, url: 'http://h/'}}\n",
     "modules[0].config.alerts[0]: unknown key 'actoin' (did you mean 'action'? allowed: action, "),
    ("      alerts:\n        - {name: ok, metric: m, threshold: 1}\n"
     "        - {name: x, metric: m, threshold: 1, op: '<'}\n",
     "modules[0].config.alerts[1]: unknown key 'op' (allowed: action, "),
    ("      logs_retention_second: 60\n",
     "modules[0].config: unknown key 'logs_retention_second' (did you mean 'logs_retention_seconds'? allowed: "),
])
def test_a_near_miss_in_the_observability_module_stops_the_start_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, said: str) -> None:
    # before: the engine started, warning "settings: ignoring unknown key 'operater' (did you mean 'operator'?)"
    line = _refused(tmp_path, capsys, config)
    assert line.startswith(f"iii-engine: module {OTEL}: {said}"), line


async def test_production_keys_this_engine_does_not_use_still_start_it(caplog: pytest.LogCaptureFixture) -> None:
    # production's own sample: logs_retention_seconds is a near-miss of our metrics_retention_seconds
    production = (f"port: 0\nmodules:\n  - class: {OTEL}\n    config:\n      enabled: true\n      exporter: memory\n"
                  "      metrics_enabled: true\n      metrics_exporter: memory\n      logs_enabled: true\n"
                  "      logs_retention_seconds: 3600\n      metrics_retention_seconds: 3600\n      level: info\n"
                  "      format: default\n      colour: blue\n      alerts:\n"
                  "        - {name: e, metric: iii.invocations.error, threshold: 10, operator: greaterthan}\n")
    with caplog.at_level(logging.INFO, logger="iii_engine.settings"):
        async with Engine(config=parse_config(production, env={})) as engine:
            assert engine.unavailable_modules == {}
    said = [r.getMessage() for r in caplog.records if r.name == "iii_engine.settings"]
    assert said == ["observability settings: ignoring format, level, logs_enabled, logs_retention_seconds, "
                    "metrics_enabled, metrics_exporter (production's; this engine does not use them)",
                    "observability settings: ignoring unknown keys colour"], said


class _Strict(Settings):
    unknown_keys: ClassVar[UnknownKeys] = "forbid"
    retries: int = 1


def test_a_forbidding_model_names_the_key_meant_only_for_a_near_miss() -> None:
    with pytest.raises(ConfigError, match=r"^unknown key 'retries_' \(did you mean 'retries'\? allowed: retries\)$"):
        _Strict.parse({"retries_": 2})
    with pytest.raises(ConfigError, match=r"^unknown key 'colour' \(allowed: retries\)$"):
        _Strict.parse({"colour": 2})


def _alert(rule: dict[str, Any]) -> Any:
    return ObservabilitySettings.from_config({"alerts": [rule]}, env={}).alerts[0]


def test_a_well_formed_alert_rule_still_reads() -> None:
    rule = _alert({"name": "low", "metric": "calls", "threshold": 5, "operator": "<",
                   "action": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}})
    assert (rule.operator, rule.action["type"]) == ("<", "webhook")
