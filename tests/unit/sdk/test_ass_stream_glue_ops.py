"""``create_stream``'s update handler takes every op the engine accepts, and names a bad op plainly."""

from __future__ import annotations

import pytest

from iii.stream_glue import StreamFunctions
from tests.unit.sdk.test_stream_glue import KEY, LazyStream


@pytest.mark.parametrize("merge", [{"type": "merge", "value": {"a": 1}},
                                   {"type": "merge", "path": None, "value": {"a": 1}}])
async def test_a_root_merge_without_a_path_is_applied(merge: dict[str, object]) -> None:
    """Before, the models (which require a string ``path``) refused it with seven pydantic errors, while the engine
    and every store apply it to the root."""
    stream = LazyStream()
    stream.items["1"] = {"n": 0}
    result = await StreamFunctions(stream).update({**KEY, "ops": [merge]})
    assert result == {"old_value": {"n": 0}, "new_value": {"n": 0, "a": 1}}
    assert stream.items["1"] == {"n": 0, "a": 1}


async def test_a_bad_op_is_named_by_its_position() -> None:
    stream = LazyStream()
    ops = [{"type": "set", "path": "a", "value": 1}, {"type": "increment", "path": "n", "by": "1"}]
    with pytest.raises(TypeError, match=r"update op #1 \(increment\): 'by' must be an integer, got str '1'"):
        await StreamFunctions(stream).update({**KEY, "ops": ops})
    assert stream.items == {}  # nothing applied
