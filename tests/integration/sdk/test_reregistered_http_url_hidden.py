"""The registration check after a reconnect (T7) logs what it registers again, never the frame: an HTTP-invoked
function's frame carries its URL (an API key in the query, say) and its headers."""

from __future__ import annotations

import logging

import pytest

from iii import HttpInvocationConfig
from iii.iii import III

from .conftest import EngineThread
from .late_cleanup import LateCleanup
from .test_attack_s2_lifecycle import _cut


def test_a_function_registered_again_is_logged_by_name_without_its_url(
        fake: EngineThread, client: III, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="iii")
    config = HttpInvocationConfig(url="http://127.0.0.1:9/hook?api_key=s3cret", headers={"Authorization": "Bearer tk"})
    client.register_function("hook", config)
    fake.wait_for(lambda: "hook" in fake.engine.functions)
    first = client.worker_id
    late = LateCleanup(fake, only=lambda worker_id: worker_id == first)
    try:
        _cut(fake, client)
        fake.wait_for(lambda: late.workers_listed >= 1)
    finally:
        late.release()  # the old connection's cleanup deletes "hook": the check registers it again
    fake.wait_for(lambda: any("Re-registering a function" in r.getMessage() for r in caplog.records))
    fake.wait_for(lambda: "hook" in fake.engine.functions)
    lines = [r.getMessage() for r in caplog.records if "Re-registering" in r.getMessage()]
    assert lines == ["Re-registering a function lost in the old connection's cleanup: function 'hook'"], lines
    assert not [r for r in caplog.records if "s3cret" in r.getMessage() or "Bearer tk" in r.getMessage()]
