"""A module entry the configuration file got wrong is a usage error like any bad file: one line, exit status 2,
the closest known name suggested instead of ``--allow-degraded``. A module that fails at run time stays exit 1
with the ``--allow-degraded`` hint."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from iii_engine.cli import main


@pytest.fixture(autouse=True)
def _root_level() -> Iterator[None]:
    # main sets the root logger's level for the process it owns; give the other tests theirs back
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def _fails(tmp_path: Path, capsys: pytest.CaptureFixture[str], modules: str, status: int) -> str:
    config = tmp_path / "engine.yaml"
    config.write_text(f"modules:\n{modules}")
    assert main(["--port", "0", "--config", str(config), "--log-level", "ERROR"]) == status
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_a_misspelled_module_key_is_exit_2_with_the_closest_key(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # before: exit 1, "... unknown key 'prot' (allowed: ...) (to start without it: --allow-degraded)"
    line = _fails(tmp_path, capsys, "  - class: modules::api::RestApiModule\n    config: {prot: 3}\n", 2)
    assert line.startswith("iii-engine: module modules::api::RestApiModule: modules[0].config: unknown key 'prot' "
                           "(did you mean 'port'? allowed: "), line
    assert "--allow-degraded" not in line


def test_an_unknown_module_class_is_exit_2_naming_the_known_ones(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # before: exit 1, "... unknown module class 'modules::nope::Nope' (to start without it: --allow-degraded)"
    line = _fails(tmp_path, capsys, "  - class: modules::nope::Nope\n", 2)
    assert line.startswith("iii-engine: unknown module class 'modules::nope::Nope' (known: "), line
    assert "modules::queue::QueueModule" in line and "--allow-degraded" not in line


def test_a_module_class_typo_keeps_its_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(tmp_path, capsys, "  - class: modules::queue::QueueModul\n", 2)
    assert line == ("iii-engine: unknown module class 'modules::queue::QueueModul' "
                    "(did you mean 'modules::queue::QueueModule'?)")


def test_a_module_that_fails_at_run_time_is_exit_1_with_the_degraded_hint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _fails(tmp_path, capsys, f"  - class: modules::api::RestApiModule\n    config: {{port: {port}}}\n", 1)
    assert line.startswith("iii-engine: module modules::api::RestApiModule cannot start: "), line
    assert line.endswith(" (to start without it: --allow-degraded)")


@pytest.mark.parametrize("module", ["modules::queue::QueueModule", "modules::state::StateModule"])
def test_a_typo_of_a_known_key_is_refused_where_unknown_keys_are_only_logged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], module: str) -> None:
    # before: a warning "ignoring unknown keys adaptr" and a started engine, its data on the in-memory store (lost
    # at the next restart) instead of the Redis the entry named
    entry = (f"  - class: {module}\n    config:\n      adaptr:\n        class: {module.rsplit('::', 1)[0]}::adapters::"
             "RedisAdapter\n        config: {redis_url: 'redis://127.0.0.1:6379'}\n")
    line = _fails(tmp_path, capsys, entry, 2)
    assert line.startswith(f"iii-engine: module {module}: modules[0].config: unknown key 'adaptr' (did you mean "
                           "'adapter'? allowed: "), line
