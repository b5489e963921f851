"""``state::set`` refusals name the field its caller used: ``value`` (or its alias ``data``). The stores name what
they are given ``data``, a stream item's field, and a caller of ``state::set`` with ``value`` was told about a
``data`` it never sent."""

from __future__ import annotations

import pytest

from iii_engine import Engine
from iii_streams.errors import MAX_VALUE_DEPTH
from tests.json_values import nested

from .helpers import Worker

pytestmark = pytest.mark.our_engine("reads our engine's refusal messages")

KEY = {"scope": "names", "key": "k"}


@pytest.mark.parametrize("field", ["value", "data"])
async def test_a_too_deep_value_is_named_by_the_field_sent(engine: Engine, field: str) -> None:
    worker = await Worker.connect(engine.url)
    try:
        error = await worker.error("state::set", {**KEY, field: nested(MAX_VALUE_DEPTH + 1)})
        assert error["code"] == "SET_ERROR"
        assert error["message"].startswith(f"{field} nests deeper than {MAX_VALUE_DEPTH} levels"), error
        assert await worker.result("state::get", KEY) is None  # not stored
    finally:
        await worker.close()
