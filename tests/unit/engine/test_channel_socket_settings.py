"""The channel relay's socket bounds are settings of the configuration file's ``channels:`` block: they could be set
only in Python (``ChannelRelay(max_sockets=)``), which an engine started from a file never reached."""

from __future__ import annotations

import pytest

from iii_engine import Engine
from iii_engine.config import parse_config
from iii_engine.settings import ConfigError


def test_the_socket_bounds_reach_the_relay() -> None:
    config = parse_config("channels:\n  max_sockets: 7\n  max_sockets_per_worker: 3\n", env={})
    relay = Engine(config=config).channels
    assert (relay.max_sockets, relay.max_sockets_per_worker) == (7, 3)
    default = Engine(config=parse_config("port: 0\n", env={})).channels
    assert default.max_sockets_per_worker == max(1, default.max_sockets // 4)


@pytest.mark.parametrize("key", ["max_sockets", "max_sockets_per_worker"])
def test_a_bound_below_one_is_refused_naming_it(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"channels\.{key}: must be >= 1, got 0"):
        parse_config(f"channels:\n  {key}: 0\n", env={})
