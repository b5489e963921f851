"""Attack A3 on 551ac5c (``stream::update`` remembers parsed counter ops): the memory was bounded in count (256)
but not in bytes, so 256 counter updates with long paths (a control frame may be 4 MiB) kept every path alive
after its update ended. Long paths are now parsed every time; what is remembered stays small."""

from __future__ import annotations

from iii.stream_ops import parse_ops
from iii_engine.modules.stream import inputs
from iii_engine.modules.stream.inputs import Fields


def test_counter_ops_with_long_paths_are_not_held_after_their_update() -> None:
    inputs._COUNTER_OPS.clear()
    for n in range(300):
        op = {"type": "increment", "path": f"{n}:" + "p" * 100_000, "by": 1}
        assert Fields("stream::update", {"ops": [op]}).ops() == parse_ops([op], strict=True)
    held = sum(len(path) for _, path, _ in inputs._COUNTER_OPS)
    assert held <= 256 * 256, f"{held} characters of paths held"


def test_short_counter_paths_are_still_remembered() -> None:
    op = {"type": "increment", "path": "p" * 256, "by": 3}
    first, second = Fields("stream::update", {"ops": [op]}).ops(), Fields("stream::update", {"ops": [dict(op)]}).ops()
    assert first[0] is second[0]
