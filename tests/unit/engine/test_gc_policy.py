"""The collector settings of an engine process (iii_engine.gc_policy): frozen start-up objects and a larger young
generation in ``iii-engine``, nothing changed with ``III_GC_TUNING=0`` or in a process that embeds an engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from iii_engine import EngineConfig, cli

ROOT = Path(__file__).resolve().parents[3]
PROBE = ("import gc; from iii_engine.gc_policy import tune_gc; "
         "print(tune_gc(), gc.get_threshold()[0], gc.get_freeze_count() > 0)")


def _probe(**env: str) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env={**os.environ, **env}, check=True)
    return done.stdout.strip()


def test_tune_gc_freezes_what_exists_and_collects_the_young_generation_less_often() -> None:
    assert _probe(III_GC_TUNING="1") == "True 10000 True"


def test_iii_gc_tuning_0_leaves_the_collector_alone() -> None:
    assert _probe(III_GC_TUNING="0") == "False 700 False"


async def test_the_engine_command_tunes_the_collector_once_started(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(cli, "tune_gc", lambda: calls.append("tuned"))  # the test process keeps its own settings

    def started() -> None:
        calls.append("started")
        os.kill(os.getpid(), signal.SIGTERM)  # run() stops on SIGTERM, as the command does

    await cli.run(EngineConfig(host="127.0.0.1", port=0, modules=[]), on_started=started)
    assert calls == ["tuned", "started"]
