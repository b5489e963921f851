"""A handler that fails because a call it made lost its connection (or met the client's shutdown) is a warning, not
an ERROR: an engine restart wrote an ERROR line per handler in flight. A handler's own bug stays an ERROR."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from iii import III
from iii.errors import ConnectionLostError, ShuttingDownError
from iii.handler_runner import HANDLER_ERROR_LOG_CHARS
from iii.telemetry_types import OtelConfig

from .conftest import EngineThread, MakeWorker


@pytest.mark.parametrize(("raised", "level"), [
    (ConnectionLostError("connection_lost", "the connection to the engine was lost"), logging.WARNING),
    (ShuttingDownError("shutdown() was called"), logging.WARNING),
    (ValueError("a bug of the handler's"), logging.ERROR),
])
def test_a_handler_failing_for_the_connection_is_a_warning(
        fake: EngineThread, make_fake_worker: MakeWorker, caplog: pytest.LogCaptureFixture, raised: Exception,
        level: int) -> None:
    caplog.set_level(logging.WARNING, logger="iii")
    worker = make_fake_worker("w")

    def handler(data: Any) -> Any:
        raise raised

    answer = _answer(fake, worker, handler)
    assert answer["error"]["code"] == "invocation_failed"
    assert [r.levelno for r in caplog.records if r.getMessage().startswith("Error in handler f")] == [level]


def test_a_huge_handler_error_is_cut_in_the_log_and_whole_for_the_caller(
        fake: EngineThread, make_fake_worker: MakeWorker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iii")
    worker = make_fake_worker("w")

    def handler(data: Any) -> Any:
        raise ValueError("x" * 100_000)

    answer = _answer(fake, worker, handler)
    assert answer["error"]["message"] == "x" * 100_000
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Error in handler f")]
    # before: the whole 100,000 characters, a line that size per failed call
    assert len(line) < HANDLER_ERROR_LOG_CHARS + 100 and line.endswith("(100000 chars)"), line[-40:]


def _answer(fake: EngineThread, worker: III, handler: Callable[[Any], Any]) -> dict[str, Any]:
    """The answer of ``worker`` to a call of ``handler``, registered as ``f``."""
    worker.register_function("f", handler)
    fake.wait_registered("f")
    side = fake.worker(worker)
    fake.send_to(worker, {"type": "invokefunction", "invocation_id": "c1", "function_id": "f", "data": {}})
    fake.wait_for(lambda: any(f["type"] == "invocationresult" for f in side.frames))
    (answer,) = [f for f in side.frames if f["type"] == "invocationresult"]
    return answer


def test_a_handler_error_whose_str_raises_is_answered(fake: EngineThread, make_fake_worker: MakeWorker) -> None:
    class Opaque(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    def handler(data: Any) -> Any:
        raise Opaque()

    answer = _answer(fake, make_fake_worker("w", otel=OtelConfig(enabled=False)), handler)
    # before (telemetry off: nothing else read the error's text first): never answered, its caller timed out
    assert answer["error"] == {"code": "invocation_failed", "message": "Opaque (its str() raised RuntimeError)",
                               "stacktrace": answer["error"]["stacktrace"]}
