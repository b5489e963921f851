"""A registration updated in place (same id) under the engine's message-size limit (4c92931).

``register_trigger_type`` again with the same id replaces the type's handler and description. One refused because its
registration is over the limit (ValueError) must change nothing: before, the refused call's handler had already
replaced the one in place, so the type went on with the old description and the new, refused handler.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from iii import InitOptions
from iii.iii import III, register_worker
from iii.triggers import TriggerConfig
from iii_engine import Engine, EngineConfig
from iii_engine.config import ChannelSettings
from tests.services import skip_on_external_engine

from .conftest import FAST_RECONNECT, ServedOnThread, wait_until

LIMIT = 64 * 1024


class Owner:
    def __init__(self) -> None:
        self.bound = threading.Event()

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        self.bound.set()

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        return None


@pytest.fixture
def ours() -> Iterator[ServedOnThread[Engine]]:
    skip_on_external_engine("needs our engine with a small max_message_size")
    with ServedOnThread(lambda: Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[],
                                                           max_message_size=LIMIT,
                                                           channels=ChannelSettings()))) as engine:
        yield engine


def _worker(url: str, name: str) -> III:
    return register_worker(url, InitOptions(worker_name=name, reconnection_config=FAST_RECONNECT))


def test_a_refused_trigger_type_update_keeps_the_handler_in_place(ours: ServedOnThread[Engine]) -> None:
    owner = _worker(ours.url, "owner")
    try:
        other = _worker(ours.url, "other")
    except BaseException:
        owner.shutdown()  # not left reconnecting for the rest of the run
        raise
    try:
        first, refused = Owner(), Owner()
        owner.register_trigger_type({"id": "hook", "description": "small"}, first)
        with pytest.raises(ValueError, match="trigger type 'hook' was not registered"):
            owner.register_trigger_type({"id": "hook", "description": "x" * LIMIT}, refused)
        other.register_function("f", lambda d: d)
        wait_until(lambda: "hook" in ours.engine.registry.trigger_types and "f" in ours.engine.registry.functions)
        other.register_trigger({"type": "hook", "function_id": "f", "config": {}})
        assert first.bound.wait(10), "the handler in place was replaced by the refused one"
        assert not refused.bound.is_set()
        # Back to a small one that fits: it takes over.
        fits = Owner()
        owner.register_trigger_type({"id": "hook", "description": "small again"}, fits)
        other.register_trigger({"type": "hook", "function_id": "f", "config": {"n": 2}})
        assert fits.bound.wait(10)
    finally:
        owner.shutdown()
        other.shutdown()


def test_a_refused_new_trigger_type_leaves_no_handler(ours: ServedOnThread[Engine]) -> None:
    owner = _worker(ours.url, "owner")
    try:
        with pytest.raises(ValueError):
            owner.register_trigger_type({"id": "big", "description": "x" * LIMIT}, Owner())
        assert owner._trigger_host.get("big") is None
    finally:
        owner.shutdown()
