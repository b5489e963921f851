"""The engine's millisecond settings are bounded: a huge one is refused by name at start.

Before: ``invocation_timeout_ms: 10**400`` was accepted and raised OverflowError on every routed call, after the
call had entered the pending table and been counted against its caller (leaked).
"""

from __future__ import annotations

import pytest

from iii_engine import EngineConfig
from iii_engine.settings import MAX_TIMEOUT_MS, ConfigError


@pytest.mark.parametrize("key", ["invocation_timeout_ms", "fire_wait_timeout_ms"])
def test_a_huge_engine_timeout_is_refused_by_name(key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        EngineConfig(**{key: 10**400})
    assert getattr(EngineConfig(**{key: MAX_TIMEOUT_MS}), key) == MAX_TIMEOUT_MS
