"""stream::update and state::update hand their parsed ops to the store with the fields (``update_parsed``): no
``StreamUpdateInput`` per update (issue 10), same answers; a store subclass overriding ``update`` still gets them."""

from __future__ import annotations

from typing import Any

import pytest

from iii.stream import StreamUpdateInput
from iii_engine import Engine, EngineConfig, ModuleSpec

INC = [{"type": "increment", "path": "n", "by": 1}]


@pytest.mark.parametrize("store_url", ["memory://", "sqlite"])
async def test_engine_updates_build_no_input_model(store_url: str, tmp_path: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if store_url == "sqlite":
        store_url = f"sqlite+aiosqlite:///{tmp_path / 'engine.sqlite3'}"
    modules = [ModuleSpec("modules::stream::StreamModule", {"host": "127.0.0.1", "port": 0, "store_url": store_url}),
               ModuleSpec("modules::state::StateModule", {"store_url": "memory://"})]
    built: list[Any] = []
    real = StreamUpdateInput.model_construct

    def counted(*args: Any, **kwargs: Any) -> Any:
        built.append(kwargs)
        return real(*args, **kwargs)

    async with Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=modules)) as engine:
        monkeypatch.setattr(StreamUpdateInput, "model_construct", counted)
        item = {"stream_name": "s", "group_id": "g", "item_id": "i", "ops": INC}
        assert await engine.invoke("stream::update", dict(item)) == {"old_value": None, "new_value": {"n": 1}}
        assert await engine.invoke("stream::update", dict(item)) == {"old_value": {"n": 1}, "new_value": {"n": 2}}
        state = {"scope": "sc", "key": "k", "ops": INC}
        assert await engine.invoke("state::update", dict(state)) == {"old_value": None, "new_value": {"n": 1}}
        assert await engine.invoke("state::get", {"scope": "sc", "key": "k"}) == {"n": 1}
    assert built == []  # before: one model per update
