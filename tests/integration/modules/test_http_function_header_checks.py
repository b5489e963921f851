"""Through the engine: an HTTP-invoked function whose header HTTP forbids is not registered (one log line naming the
header, never its value), so a call finds no function instead of failing with an engine traceback; and the URL
secrets the masking used to miss stay out of errors and logs.

Before: the registration was accepted, and each call answered ``internal_error`` with a 20-line stack trace of the
engine ("ValueError('Forbidden control character detected in headers...')"); ``https://ghp_…@host``,
``?api%5Fkey=``, ``#access_token=`` and ``?token=ab'-cd`` showed their secret in the registration log line and in
the failure sent to the caller.
"""

from __future__ import annotations

import logging

import pytest

from iii_engine import Engine
from tests.integration.engine.raw import RawWorker
from tests.integration.modules.test_http_function_url_secrets import _engine_logs, closed_port  # noqa: F401
from tests.integration.modules.test_http_functions import (  # noqa: F401 - fixtures
    Endpoint,
    _register,
    endpoint,
    engine,
)

pytestmark = [pytest.mark.our_engine("configures HTTP function rules and secrets"), pytest.mark.timeout(30)]


async def test_a_forbidden_header_is_refused_at_registration(
        engine: Engine, endpoint: Endpoint, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    worker = await RawWorker.connect(engine.url)
    await _register(worker, "ext.crlf", {"url": f"{endpoint.base}/echo", "headers": {"X-Api-Key": "s3cret\r\nX: 1"}})
    error = (await worker.call("ext.crlf", {}))["error"]
    assert error["code"] == "function_not_found", error
    assert "stacktrace" not in error
    logs = _engine_logs(caplog)
    assert ("HTTP-invoked function ext.crlf not registered: invalid_invocation: ext.crlf: invocation.headers: "
            "the value of header X-Api-Key holds a character HTTP forbids") in logs, logs
    assert "s3cret" not in logs
    assert not endpoint.seen


async def test_header_values_http_allows_reach_the_endpoint(engine: Engine, endpoint: Endpoint) -> None:  # noqa: F811
    worker = await RawWorker.connect(engine.url)
    await _register(worker, "ext.tab", {"url": f"{endpoint.base}/echo", "headers": {"X-K": "a\tb c"}})
    assert await worker.result_of("ext.tab", None) == {"got": None}
    assert endpoint.seen[-1]["headers"]["X-K"] == "a\tb c"


@pytest.mark.parametrize("url", [
    "http://ghp_s3cret@127.0.0.1:{port}/h", "http://127.0.0.1:{port}/h?api%5Fkey=s3cret",
    "http://127.0.0.1:{port}/h#access_token=s3cret", "http://127.0.0.1:{port}/h?token=ab'-s3cret",
])
async def test_url_secrets_stay_out_of_errors_and_logs(
        engine: Engine, closed_port: int, caplog: pytest.LogCaptureFixture, url: str) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    worker = await RawWorker.connect(engine.url)
    await _register(worker, "ext.down", {"url": url.format(port=closed_port)})
    error = (await worker.call("ext.down", {}))["error"]
    assert error["code"] == "http_request_failed", error
    assert "***" in error["message"] and "s3cret" not in str(error), error
    logs = _engine_logs(caplog)
    assert "ext.down -> POST http://" in logs
    assert "s3cret" not in logs
