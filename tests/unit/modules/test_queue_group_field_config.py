"""``message_group_field`` on a queue that is not ``fifo`` stops the start with one line naming the queue: only a
FIFO queue reads it (a standard queue took it silently and ran the jobs of one group all at once, in no order)."""

from __future__ import annotations

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec, ModuleStartError
from iii_engine.modules.queue.settings import QueueModuleSettings
from iii_engine.settings import ConfigError

QUEUE = "modules::queue::QueueModule"


@pytest.mark.parametrize("queue", [{"message_group_field": "customer"},
                                   {"type": "standard", "message_group_field": "customer"}])
def test_a_message_group_field_on_a_standard_queue_is_refused(queue: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as refused:
        QueueModuleSettings.parse({"queue_configs": {"orders": queue}})
    assert str(refused.value) == "queue_configs.orders: a 'message_group_field' needs a fifo queue (type: fifo)"


async def test_the_engine_does_not_start_with_a_group_field_on_a_standard_queue() -> None:
    settings = {"queue_configs": {"orders": {"message_group_field": "customer"}}}
    with pytest.raises(ModuleStartError) as failure:
        async with Engine(config=EngineConfig(port=0, modules=[ModuleSpec(QUEUE, settings)])):
            pass
    message = str(failure.value)
    assert "\n" not in message
    assert message.endswith("modules[0].config.queue_configs.orders: a 'message_group_field' needs a fifo queue "
                            "(type: fifo)"), message


def test_a_fifo_queue_keeps_its_group_field() -> None:
    queue = QueueModuleSettings.parse({"queue_configs": {"pay": {"type": "fifo", "message_group_field": "tx"}}})
    assert queue.queue_configs["pay"].message_group_field == "tx"
