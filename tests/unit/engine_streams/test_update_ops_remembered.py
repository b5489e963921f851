"""``stream::update``'s input parsing remembers counter ops (``type``, ``path``, integer ``by``) without
loosening production's rules: what ``parse_ops(strict=True)`` refuses is refused with the same message, and the
memory stays bounded."""

from __future__ import annotations

from typing import Any

import pytest

from iii.stream_ops import parse_ops
from iii_engine.modules.base import EngineError
from iii_engine.modules.stream import inputs
from iii_engine.modules.stream.inputs import Fields


def _ops(ops: Any) -> Any:
    return Fields("stream::update", {"ops": ops}).ops()


@pytest.mark.parametrize("op", [
    {"type": "increment", "path": "n", "by": True},
    {"type": "increment", "path": "n", "by": 1.0},
    {"type": "increment", "path": "n", "by": 2**63},
    {"type": "bump", "path": "n", "by": 1},
    {"type": "increment", "path": 1, "by": 1},
    {"type": "increment", "path": ["n"], "by": 1},
    {"type": "increment", "path": "n", "value": 1},
])
def test_a_refused_op_is_refused_every_time_with_the_strict_parse_message(op: dict[str, Any]) -> None:
    valid = {"type": "increment", "path": "n", "by": 1}
    _ops([valid])  # a remembered neighbour (1 == True == 1.0) must not let these through
    try:
        parse_ops([op], strict=True)
    except (TypeError, ValueError) as exc:
        expected = str(exc)
    else:
        pytest.fail(f"parse_ops took {op!r}")
    for _ in range(2):
        with pytest.raises(EngineError) as refused:
            _ops([op])
        assert refused.value.code == "deserialization_error"
        assert refused.value.message.endswith(expected)


def test_remembered_ops_equal_parsed_ones_and_memory_is_bounded() -> None:
    for by in range(-300, 300):
        for kind in ("increment", "decrement"):
            op = {"type": kind, "path": f"p{by % 7}", "by": by}
            assert _ops([op]) == parse_ops([op], strict=True)
            assert len(inputs._COUNTER_OPS) <= 256
    assert _ops([{"by": 5, "type": "set", "path": "x"}]) == parse_ops([{"type": "set", "path": "x", "by": 5}],
                                                                     strict=True)
    two = [{"type": "increment", "path": "n", "by": 1}, {"type": "set", "path": "s", "value": {"a": [1]}}]
    assert _ops(two) == parse_ops(two, strict=True)
