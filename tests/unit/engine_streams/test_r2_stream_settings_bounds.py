"""The stream module's millisecond timeouts are bounded (R2): ``custom_call_timeout_ms``, ``join_timeout_ms`` and
``slow_close_timeout_ms`` above 10**12 ms (about 31 years) are refused, naming the key.

Before, any integer was accepted and turned into seconds as a float where used: 10**400 raised OverflowError when
the module started (custom calls), at every join, or at every connection (the slow client's close).
"""

from __future__ import annotations

import pytest

from iii_engine.modules.stream.settings import MAX_TIMEOUT_MS, StreamSettings
from iii_engine.settings import ConfigError

KEYS = ["custom_call_timeout_ms", "join_timeout_ms", "slow_close_timeout_ms"]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", [10**400, MAX_TIMEOUT_MS + 1], ids=["10**400", "bound+1"])
def test_a_timeout_past_the_bound_is_refused_by_name(key: str, value: int) -> None:
    with pytest.raises(ConfigError, match=key):
        StreamSettings.parse({"port": 0, "store_url": "memory://", key: value})


@pytest.mark.parametrize("key", KEYS)
def test_the_bound_itself_is_accepted_and_usable_in_seconds(key: str) -> None:
    settings = StreamSettings.parse({"port": 0, "store_url": "memory://", key: MAX_TIMEOUT_MS})
    assert getattr(settings, key) / 1000 == MAX_TIMEOUT_MS / 1000
