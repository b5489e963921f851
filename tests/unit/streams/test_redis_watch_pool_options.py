"""The options of a ``RedisStream``'s watch pool made like the caller's client's pool
(``iii_streams.redis_internals.like_pool_options``): what a redis-py pool adds to its own ``connection_kwargs`` is
left out (found by a probe of the installed redis-py, with the keys known as a fallback), the maintenance
notifications' config goes to the watch pool as its own option, and a Sentinel client's pool, whose connections
ask it for the master's address, is not copied at all (the watches use the client itself, as a cluster client's).

Before: the keys were a fixed list in ``redis.py``, and a Sentinel pool's ``connection_pool`` (a weak proxy of the
caller's pool) was copied into the watch pool's connection options.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import Sentinel

from iii_streams.redis import _WatchPool
from iii_streams.redis_internals import POOL_INJECTED, like_pool_options

pytestmark = pytest.mark.timeout(30)


def test_every_key_this_redis_py_injects_is_known() -> None:
    given: dict[str, Any] = {"host": "example.invalid", "port": 6390, "protocol": 3, "client_name": "app"}
    injected = set(ConnectionPool(**given).connection_kwargs) - set(given)
    assert injected <= POOL_INJECTED
    assert {"himport_registry", "maint_notifications_pool_handler", "orig_host_address"} <= POOL_INJECTED


def test_a_watch_pool_takes_the_callers_options_and_makes_its_own_handler() -> None:
    client = aioredis.Redis(host="example.invalid", port=6390, protocol=3, client_name="app", max_connections=9)
    theirs = client.connection_pool.connection_kwargs
    pool = _WatchPool.like(client)
    assert pool is not None
    ours = pool.connection_kwargs
    assert (ours["host"], ours["port"], ours["client_name"], ours["protocol"]) == ("example.invalid", 6390, "app", 3)
    for key in ("maint_notifications_pool_handler", "himport_registry"):  # the watch pool's own, if any
        if key in theirs:
            assert ours.get(key) is not theirs[key], key
    if "maint_notifications_config" in theirs:  # the same settings, for the watch pool's own handler
        assert ours.get("maint_notifications_config") is theirs["maint_notifications_config"]


def test_a_sentinel_clients_pool_is_not_copied() -> None:
    client = Sentinel([("example.invalid", 26390)]).master_for("main")
    assert "connection_pool" in client.connection_pool.connection_kwargs  # what would have been copied
    assert like_pool_options(client.connection_pool) is None
    assert _WatchPool.like(client) is None
