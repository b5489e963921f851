"""Attack Q-M on the settings of the bridge client and cron modules: mistakes refused at start, naming the key.

Before: a ``bridge_client`` config that was a list raised a bare ``TypeError``; a forward of ``bridge.invoke`` (or
of an id forwarded twice) replaced that function without a word, and so did a second function exposed under one
remote id; a cron Redis lock TTL past Redis's integer range was accepted and failed every tick at run time.
"""

from __future__ import annotations

from typing import Any

import pytest

from iii_engine.modules.bridge.settings import BridgeClientSettings
from iii_engine.modules.cron.settings import MAX_LOCK_TTL_MS, CronSettings
from iii_engine.modules.queue.settings import MAX_SERVED_FUNCTIONS_TTL_MS, QueueModuleSettings
from iii_engine.settings import ConfigError


@pytest.mark.parametrize(("raw", "message"), [
    ([1, 2], "bridge_client settings: must be a mapping, got [1, 2]"),
    ({"forward": [{"local_function": "bridge.invoke", "remote_function": "b"}]},
     "forward[0].local_function: 'bridge.invoke' is a function of the bridge client module itself"),
    ({"forward": [{"local_function": "bridge.invoke_async", "remote_function": "b"}]},
     "forward[0].local_function: 'bridge.invoke_async' is a function of the bridge client module itself"),
    ({"forward": [{"local_function": "a", "remote_function": "b"}, {"local_function": "c", "remote_function": "b"},
                  {"local_function": "a", "remote_function": "d"}]},
     "forward[2].local_function: 'a' is forwarded already by forward[0]"),
    ({"expose": [{"local_function": "a"}, {"local_function": "b", "remote_function": "a"}]},
     "expose[1].remote_function: 'a' is exposed already by expose[0]"),
])
def test_a_bridge_client_config_that_would_replace_a_function_is_refused_naming_the_key(raw: Any,
                                                                                         message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        BridgeClientSettings.from_config(raw, env={})
    assert str(refused.value) == message


def test_one_function_forwarded_and_exposed_is_still_accepted() -> None:
    settings = BridgeClientSettings.from_config({"forward": [{"local_function": "a", "remote_function": "b"}],
                                                 "expose": [{"local_function": "a"}, {"local_function": "c"}]},
                                                env={})
    assert [e.remote_function for e in settings.expose] == ["a", "c"]


@pytest.mark.parametrize("adapter", ["modules::cron::KvCronAdapter", "modules::cron::RedisCronAdapter"])
def test_a_cron_lock_ttl_redis_cannot_take_is_refused_at_start(adapter: str) -> None:
    config = {"redis_url": "redis://127.0.0.1:6379/0", "lock_ttl_ms": 10**30}
    if adapter.endswith("KvCronAdapter"):
        del config["redis_url"]
    with pytest.raises(ConfigError, match=r"^adapter\.config\.lock_ttl_ms: must be <= 1000000000000"):
        CronSettings.parse({"adapter": {"class": adapter, "config": config}})
    config["lock_ttl_ms"] = MAX_LOCK_TTL_MS  # Redis takes it (SET … PX 10^12)
    assert CronSettings.parse({"adapter": {"class": adapter, "config": config}}).lock_adapter[1].lock_ttl_ms == 10**12


def test_a_served_functions_ttl_past_five_minutes_is_refused_at_start() -> None:
    # Before: accepted; an engine that crashed with served_functions_ttl_ms of a day was taken for live a day, and
    # the jobs only it ran waited that long in the other engines' queues, their grace not started, unlogged.
    with pytest.raises(ConfigError, match=r"^served_functions_ttl_ms: must be <= 300000, got 86400000$"):
        QueueModuleSettings.parse({"served_functions_ttl_ms": 86_400_000})
    assert QueueModuleSettings.parse(
        {"served_functions_ttl_ms": MAX_SERVED_FUNCTIONS_TTL_MS}).served_functions_ttl_ms == 300_000
