"""A Ctrl-C that reaches ``iii-engine`` after the engine's coroutine was made but before its event loop ran it (the
loop being made) ends in its one line, without "coroutine 'run' was never awaited" after it (a clean-clone CI run
printed that warning in ``test_ctrl_c_at_start``)."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Coroutine
from typing import Any, NoReturn

import pytest

from iii_engine import cli


def test_an_interrupt_before_the_loop_runs_the_engine_leaves_no_unawaited_coroutine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(coro: Coroutine[Any, Any, Any], event_loop: object) -> NoReturn:
        raise KeyboardInterrupt  # the loop was being made: the coroutine never started

    monkeypatch.setattr(cli, "run_on_loop", interrupted)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["--port", "0"]) == 130
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
