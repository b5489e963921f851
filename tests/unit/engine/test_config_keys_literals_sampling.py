"""Three configuration gaps.

Keys: production expands ``${VAR}`` in the file's whole text before parsing it, so a mapping key may be a
placeholder; ours expanded values only, and the key ``${QUEUE}`` stayed that literal text.

Numbers written in the file: YAML 1.1 read ``service_version: 1.10`` as the float 1.1, ``010`` as 8 and ``1:20`` as
80, and a string field received "1.1", "8" and "80". A string field now keeps the text as written.

``sampling:`` of the observability module was an unchecked mapping: ``defualt: 0.1`` or ``rate: 5`` started the
engine and ``engine::sampling::rules`` served them back as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from iii_engine.cli import main
from iii_engine.config import expand_env, parse_config
from iii_engine.modules.observability.settings import ObservabilitySettings
from iii_engine.modules.queue.settings import QueueModuleSettings
from iii_engine.settings import ConfigError

OTEL = "modules::observability::OtelModule"


def _otel(config: str) -> ObservabilitySettings:
    """The observability settings of a file whose only module has ``config`` (indented under it)."""
    cfg = parse_config(f"modules:\n  - class: {OTEL}\n    config:\n{config}", env={})
    assert cfg.modules is not None
    return ObservabilitySettings.from_config(cfg.modules[0].config, env={})


def test_a_key_is_expanded_like_a_value() -> None:
    # before: QueueModuleSettings got the key '${QUEUE:orders}' (and a typo warning), not 'orders'
    cfg = parse_config("${TOP:port}: 5000\nmodules:\n  - class: modules::queue::QueueModule\n    config:\n"
                       "      queue_configs:\n        ${QUEUE:orders}: {max_retries: 7}\n", env={})
    assert cfg.port == 5000
    assert cfg.modules is not None
    queue = QueueModuleSettings.parse(cfg.modules[0].config)
    assert queue.queue_configs["orders"].max_retries == 7
    assert expand_env({"${K}": {"${V}": 1}}, env={"K": "a", "V": "b"}) == {"a": {"b": 1}}


@pytest.mark.parametrize(("text", "said"), [
    ("port: 1\n${K:port}: 2\n", "keys 'port' and '${K:port}' are both 'port' once expanded"),
    ("channels:\n  ${A}: 1\n  ${B}: 2\n", "channels: keys '${A}' and '${B}' are both 'max_open' once expanded"),
    ("modules:\n  - class: x\n    ${C}: y\n", "modules[0]: keys 'class' and '${C}' are both 'class' once expanded"),
])
def test_a_key_that_expands_to_another_key_is_refused_naming_both(text: str, said: str) -> None:
    # before: not expanded at all; a dict built from expanded keys would keep the later value silently
    with pytest.raises(ConfigError) as refused:
        parse_config(text, env={"A": "max_open", "B": "max_open", "C": "class"})
    assert str(refused.value) == said


@pytest.mark.parametrize("written", ["1.10", "010", "1:20", "7", "0x1A", "1.0", "12345678901234567890"])
def test_a_string_field_keeps_a_number_as_written(written: str) -> None:
    # before: service_version '1.1' for 1.10, '8' for 010, '80' for 1:20, '26' for 0x1A, '1.0' kept only by luck
    s = _otel(f"      service_version: {written}\n      service_name: {written}\n      service_namespace: {written}\n")
    assert (s.service_version, s.service_name, s.service_namespace) == (written, written, written)
    cfg = parse_config(f"host: {written}\n", env={})
    assert cfg.host == written


def test_other_fields_read_written_numbers_as_before() -> None:
    cfg = parse_config("port: 5000\ninvocation_timeout_ms: 010\nchannels: {attach_timeout_s: 1.5}\n", env={})
    assert (cfg.port, cfg.invocation_timeout_ms, cfg.channels.attach_timeout_ms) == (5000, 8, 1500)
    assert type(cfg.port) is int
    s = _otel("      sampling_ratio: 1\n      memory_max_spans: 5\n")
    assert (s.sampling_ratio, s.memory_max_spans) == (1.0, 5)
    for text, said in [("modules: [{class: x, config: 3}]", "modules[0].config: must be a mapping, got 3"),
                       ("allow_degraded: 1", "allow_degraded: must be true or false, got 1"),
                       ("port: 1.5", "port: must be an integer, got 1.5")]:
        with pytest.raises(ConfigError) as refused:
            parse_config(text, env={})
        assert str(refused.value) == said


def test_sampling_is_read_into_its_fields() -> None:
    s = _otel("      sampling:\n        default: 0.25\n        parent_based: false\n"
              "        rules:\n          - {operation: 'api.*', rate: 1}\n          - {service: 10, rate: 0}\n"
              "        rate_limit: {max_traces_per_second: 50}\n")
    assert s.sampling.default == 0.25 and s.sampling.parent_based is False
    assert [(r.operation, r.service, r.rate) for r in s.sampling.rules] == [("api.*", None, 1.0), (None, "10", 0.0)]
    assert s.sampling.rate_limit is not None and s.sampling.rate_limit.max_traces_per_second == 50
    assert _otel("      sampling:\n").sampling.rules == ()


@pytest.fixture
def _root_level() -> Iterator[None]:
    # the command sets the root logger's level; put it back for the tests that follow
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.mark.usefixtures("_root_level")
@pytest.mark.parametrize(("sampling", "said"), [
    ("{defualt: 0.1}", "sampling: unknown key 'defualt' (did you mean 'default'? allowed: default, parent_based, "),
    ("{default: 1.5}", "sampling.default: must be <= 1.0, got 1.5"),
    ("{rules: [{operation: x, rate: 5}]}", "sampling.rules[0].rate: must be <= 1.0, got 5"),
    ("{rules: [{operation: x}]}", "sampling.rules[0].rate: is required"),
    ("{rules: [{operaton: x, rate: 1}]}", "sampling.rules[0]: unknown key 'operaton' (did you mean 'operation'? "),
    ("{parent_based: maybe}", "sampling.parent_based: must be true or false, got 'maybe'"),
    ("{rate_limit: {max_traces_per_sec: 5}}",
     "sampling.rate_limit: unknown key 'max_traces_per_sec' (did you mean 'max_traces_per_second'? "),
    ("{rate_limit: {max_traces_per_second: -1}}", "sampling.rate_limit.max_traces_per_second: must be >= 0, got -1"),
    ("[0.5]", "sampling: must be a mapping, got [0.5]"),
])
def test_a_bad_sampling_setting_stops_the_start_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], sampling: str, said: str) -> None:
    # before: every one of these started the engine
    path = tmp_path / "engine.yaml"
    path.write_text(f"modules:\n  - class: {OTEL}\n    config:\n      sampling: {sampling}\n")
    assert main(["--port", "0", "--config", str(path), "--log-level", "ERROR"]) == 2
    lines: list[str] = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"iii-engine: module {OTEL}: modules[0].config.{said}"), lines[0]
