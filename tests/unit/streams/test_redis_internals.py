"""The one module that uses redis-py internals: they are all there in the redis-py we support, and without them the
watch falls back to redis-py's own pub/sub with one warning instead of breaking."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from iii.warn_once import WarnOnce
from iii_streams import redis_internals


def test_every_internal_is_there_in_the_supported_redis_py() -> None:
    # the floors run checks this at the oldest version we declare
    assert redis_internals.MISSING == ()
    assert isinstance(redis_internals.one_shot(aioredis.Redis().pubsub()), redis_internals.OneShotPubSub)


def test_without_them_the_pubsub_is_left_as_it_is_and_a_warning_says_so(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(redis_internals, "MISSING", ("PubSub._execute(self, conn, command, *args, **kwargs)",))
    monkeypatch.setattr(redis_internals, "_warn_once", WarnOnce(redis_internals.log))
    with caplog.at_level(logging.WARNING, logger="iii_streams.redis_internals"):
        first = redis_internals.one_shot(aioredis.Redis().pubsub())
        second = redis_internals.one_shot(aioredis.Redis().pubsub())
    assert type(first) is PubSub and type(second) is PubSub
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "lacks PubSub._execute" in lines[0]
