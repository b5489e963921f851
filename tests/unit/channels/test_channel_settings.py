"""``channels:`` settings in the engine configuration reach the relay."""

from __future__ import annotations

import pytest

from iii_engine import Engine
from iii_engine.config import ChannelSettings, ConfigError, parse_config


def test_defaults_are_unlimited_quota_and_16_mib_queue() -> None:
    settings = parse_config("port: 0\n", env={}).channels
    assert settings.max_channel_bytes is None
    assert settings.max_queued_bytes == 16 * 1024 * 1024


def test_max_channel_bytes_and_max_queued_bytes_reach_the_relay() -> None:
    config = parse_config("port: 0\nchannels:\n  max_channel_bytes: 1048576\n  max_queued_bytes: 65536\n", env={})
    assert config.channels == ChannelSettings(max_channel_bytes=1048576, max_queued_bytes=65536)
    engine = Engine(config=config)
    assert (engine.channels.max_channel_bytes, engine.channels.max_queued_bytes) == (1048576, 65536)
    channel_id = engine.channels.create(None, owner=None)["writer"]["channel_id"]
    assert engine.channels.stats(channel_id)["max_bytes"] == 1048576
    explicit = engine.channels.create(None, owner=None, max_bytes=10)["writer"]["channel_id"]
    assert engine.channels.stats(explicit)["max_bytes"] == 10


def test_max_held_bytes_reach_the_relay() -> None:
    config = parse_config("port: 0\nchannels:\n  max_held_bytes: 1048576\n  max_held_bytes_per_worker: 65536\n",
                          env={})
    engine = Engine(config=config)
    assert (engine.channels.max_held_bytes, engine.channels.max_held_bytes_per_worker) == (1048576, 65536)


@pytest.mark.parametrize(("line", "message"), [
    ("max_channel_bytes: -1", "channels.max_channel_bytes: must be >= 0, got -1"),
    ("max_channel_bytes: lots", "channels.max_channel_bytes: must be an integer, got 'lots'"),
    ("max_queued_bytes: 0", "channels.max_queued_bytes: must be >= 1, got 0"),
])
def test_bad_values_are_refused_naming_the_key(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f"channels:\n  {line}\n", env={})
