"""Fixtures of the module unit tests: a fake engine (``services``), the cron and pubsub modules started on it and
stopped at the test's end (``cron``, ``pubsub``), a condition that holds its answer until the test lets it
(``slow_condition``, function id ``"slow"``), the cron module's wall clock under the test's control
(``wall_clock``), and for the bridge a state engine (``remote``) behind a relay that can stall or cut (``relay``).

Example::

    async def test_a_tick_waits_for_its_condition(services, cron, slow_condition) -> None:
        await services.trigger("cron", "job", "f", {"expression": "* * * * * *", "condition_function_id": "slow"})
        await asyncio.wait_for(slow_condition.asked.wait(), 3)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from fake_services import FakeServices, ShiftedClock, SlowCondition, started
from stall_relay import Relay

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.cron import CronModule
from iii_engine.modules.cron import module as cron_module
from iii_engine.modules.pubsub import PubSubModule


@pytest.fixture
def services() -> FakeServices:
    """A fresh fake engine."""
    return FakeServices()


@pytest.fixture
async def cron(services: FakeServices) -> AsyncIterator[CronModule]:
    """The cron module with its default (in-process) lock, started on ``services``."""
    async with started(CronModule(services, {})) as module:
        yield module


@pytest.fixture
async def pubsub(services: FakeServices) -> AsyncIterator[PubSubModule]:
    """The pubsub module with its default (in-process) bus, started on ``services``."""
    async with started(PubSubModule(services, {})) as module:
        yield module


@pytest.fixture
def slow_condition(services: FakeServices) -> SlowCondition:
    """A condition registered on ``services`` as ``"slow"`` that answers ``True`` once the test sets ``answer``."""
    condition = SlowCondition()
    services.add("slow", condition)
    return condition


@pytest.fixture
def wall_clock(monkeypatch: pytest.MonkeyPatch) -> type[ShiftedClock]:
    """The clock the cron module reads, on time until the test sets its ``offset`` (put back after the test)."""
    monkeypatch.setattr(cron_module, "datetime", ShiftedClock)
    monkeypatch.setattr(ShiftedClock, "offset", timedelta(0))
    return ShiftedClock


@pytest.fixture
async def remote() -> AsyncIterator[Engine]:
    """An engine with the state module only, on a free port: the other end of a bridge link."""
    config = EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::state::StateModule")])
    async with Engine(config=config) as engine:
        yield engine


@pytest.fixture
async def relay(remote: Engine) -> AsyncIterator[Relay]:
    """A relay in front of ``remote`` that the test can stall (``flowing``) or cut."""
    relay = Relay(remote.port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()
