"""``message_group_field`` on a queue that is not ``fifo``: only a FIFO queue reads it, so the configuration load
warns naming the queue (a standard queue took it silently and ran the jobs of one group all at once, in no order).
It was refused for a while (cc42f8a5); production's engine takes such a configuration and ignores the field on a
standard queue, so ours starts with it too."""

from __future__ import annotations

import logging

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.queue.settings import QueueModuleSettings

QUEUE = "modules::queue::QueueModule"


@pytest.mark.parametrize("queue", [{"message_group_field": "customer"},
                                   {"type": "standard", "message_group_field": "customer"}])
def test_a_message_group_field_on_a_standard_queue_is_named_in_a_warning(
        queue: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    parsed = QueueModuleSettings.parse({"queue_configs": {"orders": queue}})
    assert not parsed.queue_configs["orders"].fifo
    parsed.warn_ignored()
    assert [r.getMessage() for r in caplog.records] == [
        "queue_configs.orders: message_group_field 'customer' is read only by a fifo queue (type: fifo): this "
        "standard queue ignores it and runs a group's jobs at once, in no order"]


async def test_the_engine_starts_with_a_group_field_on_a_standard_queue(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    settings = {"queue_configs": {"orders": {"message_group_field": "customer"}}}
    async with Engine(config=EngineConfig(port=0, modules=[ModuleSpec(QUEUE, settings)])) as engine:
        assert engine.module("queue") is not None
    assert len([r for r in caplog.records if "queue_configs.orders: message_group_field 'customer' is read only by a "
                "fifo queue" in r.getMessage()]) == 1


def test_a_fifo_queue_keeps_its_group_field(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    queue = QueueModuleSettings.parse({"queue_configs": {"pay": {"type": "fifo", "message_group_field": "tx"}}})
    queue.warn_ignored()
    assert queue.queue_configs["pay"].message_group_field == "tx"
    assert not caplog.records
