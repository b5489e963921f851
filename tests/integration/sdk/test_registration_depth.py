"""A registration whose field the engine's listings could not carry is refused by the SDK, naming it: a function's
metadata or formats, a trigger's config, nested past 124 levels. Our engine drops such a function's field and
refuses such a trigger, and the protocol never answers a registration: the call seemed to work, the metadata was
gone, the trigger never fired."""

from __future__ import annotations

import pytest

from iii.iii import III
from tests.json_values import nested


def _refusal(what: str, kind: str) -> str:
    return (f"{what} nests deeper than 124 levels: the engine's {kind} listings add 4, and JSON is read 128 deep at "
            "most")


async def test_deep_metadata_formats_and_trigger_configs_are_refused_naming_the_field(worker: III) -> None:
    for name in ("metadata", "request_format", "response_format"):
        with pytest.raises(ValueError) as refused:
            worker.register_function("f", lambda data: data, **{name: {"x": nested(124)}})  # type: ignore[arg-type]
        assert str(refused.value) == _refusal(f"register_function('f'): {name}", "function")
    with pytest.raises(ValueError) as refused:
        worker.register_trigger({"type": "cron", "function_id": "f", "config": {"x": nested(124)}})
    assert str(refused.value) == _refusal("register_trigger('cron' on 'f'): config", "trigger")
    # the deepest the listings carry goes through, and is listed as it was registered
    worker.register_function("f", lambda data: data, metadata={"x": nested(123)})
    listed = {f.function_id: f.metadata for f in await worker.list_functions_async()}
    assert listed["f"] == {"x": nested(123)}
