"""A client with ``invocation_timeout_ms=0`` still runs its own checks after a reconnect.

0 times a call that gives no ``timeout_ms`` out at once (as the reference SDK's), and the client's own calls after a
reconnect (the list of triggers still held, the round trip after the replay) gave none: they stopped at once, so a
trigger of its type unregistered while it was away stayed bound at its handler for good (the engine listed none).
They take 30 s where the client's timeout is 0.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii import InitOptions
from iii.iii import register_worker
from iii.iii_constants import ReconnectionConfig
from iii.triggers import TriggerConfig, TriggerHandler
from iii_engine import Engine
from tests.polling import until
from tests.stall_relay import Relay

pytestmark = [pytest.mark.timeout(30), pytest.mark.our_engine("a relay cuts the owner's connection")]


class Held(TriggerHandler[Any]):
    def __init__(self) -> None:
        self.held: set[str] = set()

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        self.held.add(config.id)

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        self.held.discard(config.id)


async def test_a_trigger_gone_while_away_is_unbound_with_a_zero_client_timeout(engine: Engine) -> None:
    relay = Relay(int(engine.url.rsplit(":", 1)[1]))
    await relay.start()
    handler = Held()
    reconnect = ReconnectionConfig(initial_delay_ms=500, max_delay_ms=500, jitter_factor=0.0)
    owner = await asyncio.to_thread(register_worker, relay.url, InitOptions(
        worker_name="owner", invocation_timeout_ms=0, reconnection_config=reconnect))
    user = await asyncio.to_thread(register_worker, engine.url, InitOptions(worker_name="user"))
    try:
        await asyncio.to_thread(owner.register_trigger_type, {"id": "hook", "description": "d"}, handler)
        trigger = await asyncio.to_thread(user.register_trigger, {"type": "hook", "function_id": "u::f", "config": {}})
        await until(lambda: len(handler.held) == 1)
        relay.cut()  # the owner is away for its 0.5 s reconnect delay
        await asyncio.to_thread(trigger.unregister)
        await asyncio.to_thread(owner.wait_until_connected, 10)
        await until(lambda: not handler.held, within=10)  # before: held for good
    finally:
        await asyncio.to_thread(owner.shutdown)
        await asyncio.to_thread(user.shutdown)
        await relay.close()
